"""avitalk: speech in, expressive 3D talking face out, through an editable audio-visual instruction."""

from .errors import AudioError, AvitalkError, CheckpointError, DatasetError, FlameModelError, InstructionError
from .types import Audio, FlameSequence, Instruction

__version__ = "0.1.0"

__all__ = [
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
