"""avitalk: speech in, expressive 3D talking face out, through an editable audio-visual instruction."""

from .errors import AudioError, AvitalkError, CheckpointError, DatasetError, FlameModelError, InstructionError
from .types import Audio, FlameSequence, Instruction

__version__ = "0.1.0"

_TOP = {"AVITalkingPipeline": "avitalk.top.pipeline", "PipelineOutput": "avitalk.top.pipeline"}


def __getattr__(name: str):
    """``avitalk.AVITalkingPipeline``: the public face of the top layer, imported when first asked for (so that the
    ground, ``avitalk.types`` and the rest, never imports the stages above it)."""
    if name in _TOP:
        import importlib

        return getattr(importlib.import_module(_TOP[name]), name)
    raise AttributeError(f"module 'avitalk' has no attribute {name!r}")

__all__ = [
    "AVITalkingPipeline",
    "PipelineOutput",
    "Audio",
    "FlameSequence",
    "Instruction",
    "AvitalkError",
    "AudioError",
    "InstructionError",
    "CheckpointError",
    "FlameModelError",
    "DatasetError",
    "__version__",
]
