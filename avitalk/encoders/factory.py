"""Audio encoders by name (a config's ``audio_encoder``): the one place that knows every backend, so the interface
(:mod:`.base`) never imports its implementations."""

from __future__ import annotations

from .base import AudioEncoder


def build_encoder(spec: str = "whisper_ct2", **kwargs) -> AudioEncoder:
    """``whisper_ct2`` (embedded tiny.en), ``whisper_layers`` (the same weights in torch: middle + last layers and
    prosody channels), ``whisper_hf:<path or hub id>``, or ``whisper_hf`` with ``config=``."""
    name, _, arg = spec.partition(":")
    if name == "whisper_ct2":
        from .whisper_ct2 import WhisperCT2Encoder

        return WhisperCT2Encoder(model_path=arg or None, **kwargs)
    if name == "whisper_hf":
        from .whisper_hf import WhisperHFEncoder

        return WhisperHFEncoder(arg or None, **kwargs)
    if name == "whisper_layers":
        from .whisper_layers import WhisperLayersEncoder

        return WhisperLayersEncoder(model_path=arg or None, **kwargs)
    if name == "prosody":
        from .prosody import ProsodyEncoder

        return ProsodyEncoder()
    raise ValueError(f"unknown audio encoder {spec!r} (whisper_ct2, whisper_layers, whisper_hf:<path>, prosody)")


def encoder_prosody_dim(spec) -> int:
    """How many trailing channels of an encoder spec's features are prosody (``whisper_layers``: 4, else 0); read
    from the spec alone, without loading the encoder."""
    kwargs = {}
    if not isinstance(spec, str):
        kwargs, spec = dict(spec.get("kwargs") or {}), spec.spec
    from .prosody import PROSODY_CHANNELS

    return PROSODY_CHANNELS if str(spec).split(":")[0] == "whisper_layers" and bool(kwargs.get("prosody", True)) else 0


def audio_encoder_from_config(spec) -> AudioEncoder:
    """``audio_encoder`` of a config: a spec string (``whisper_ct2``), or ``{spec, kwargs}``."""
    if isinstance(spec, str):
        return build_encoder(spec)
    from omegaconf import DictConfig, OmegaConf

    kwargs = spec.get("kwargs") or {}
    return build_encoder(spec.spec, **(OmegaConf.to_container(kwargs) if isinstance(kwargs, DictConfig) else dict(kwargs)))
