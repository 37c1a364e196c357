"""Frozen encoders: audio (Audio -> features [T, D] at 50 Hz, see base.AudioEncoder) and text (text.TextEncoder)."""

from .base import FEATURE_RATE, AudioEncoder, audio_encoder_from_config, build_encoder, encoder_prosody_dim, to_motion_rate

__all__ = ["AudioEncoder", "FEATURE_RATE", "audio_encoder_from_config", "build_encoder", "encoder_prosody_dim", "to_motion_rate"]
