"""Frozen encoders: audio (Audio -> features [T, D] at 50 Hz, see base.AudioEncoder; backends by name in factory)
and text (text.TextEncoder)."""

from .base import FEATURE_RATE, AudioEncoder, to_motion_rate
from .factory import audio_encoder_from_config, build_encoder, encoder_prosody_dim

__all__ = ["AudioEncoder", "FEATURE_RATE", "audio_encoder_from_config", "build_encoder", "encoder_prosody_dim", "to_motion_rate"]
