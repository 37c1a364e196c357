"""The instruction encoder lives in the shared core (both stages use it); kept importable from here."""

from avitalk.encoders.text import TextEncoder, text_encoder_from_config

__all__ = ["TextEncoder", "text_encoder_from_config"]
