"""Frozen audio encoders: Audio -> features [T, D] at 50 Hz (see base.AudioEncoder)."""

from .base import FEATURE_RATE, AudioEncoder, build_encoder, to_motion_rate

__all__ = ["AudioEncoder", "FEATURE_RATE", "build_encoder", "to_motion_rate"]
