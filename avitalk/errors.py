"""One exception hierarchy for everything avitalk refuses.

Every error a user can cause (bad file, bad text, bad checkpoint, bad dataset) is an :class:`AvitalkError`
subclass with a message that names the thing and the reason. The CLI prints the message on one line and
exits non-zero; library users can catch :class:`AvitalkError`.
"""

from __future__ import annotations


class AvitalkError(Exception):
    """Base class of every error avitalk raises on purpose."""


class AudioError(AvitalkError):
    """Audio that cannot be read or used (missing, not audio, empty, too short/long, silent, non-finite)."""


class InstructionError(AvitalkError):
    """An instruction text that cannot be used (empty, not text)."""


class CheckpointError(AvitalkError):
    """A checkpoint directory or weights file that is missing, partial or does not match the model."""


class FlameModelError(AvitalkError):
    """A FLAME model file that cannot be loaded or converted (bad format, forbidden pickle class, bad shapes)."""


class DatasetError(AvitalkError):
    """A dataset directory or manifest that cannot be used."""


class SequenceError(AvitalkError):
    """A FlameSequence (or its .npz file) with wrong keys, shapes, dtypes or non-finite values."""


class OutputError(AvitalkError):
    """An output file or folder that cannot be written (uncreatable, not a folder, not writable, in the way)."""


class RenderError(AvitalkError):
    """Rendering or video writing failed (no OpenGL/EGL driver, bad frame data, unwritable output)."""


class AppError(AvitalkError):
    """The web app cannot serve (its port is in use or not allowed)."""


class TrackerMissing(AvitalkError):
    """The face tracker's runtime or network files are not installed."""


__all__ = [
    "AvitalkError",
    "AppError",
    "AudioError",
    "InstructionError",
    "CheckpointError",
    "FlameModelError",
    "DatasetError",
    "SequenceError",
    "RenderError",
    "OutputError",
    "TrackerMissing",
]


# a model named by path or hub id is read from this machine only (a hub id from the Hugging Face cache)
NO_DOWNLOAD_HINT = ("avitalk never downloads weights: give a local folder, or put the model in the Hugging Face "
                    "cache yourself first, e.g. `huggingface-cli download NAME`")


def no_download(name: str) -> str:
    """The hint for a model ``name`` that is not on this machine."""
    return NO_DOWNLOAD_HINT.replace("NAME", str(name))
