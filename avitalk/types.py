"""Core value types shared by every part of avitalk: :class:`Audio`, :class:`Instruction`, :class:`FlameSequence`."""

from __future__ import annotations

import json
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import AudioError, InstructionError, SequenceError
from .io import atomic_save_npz

log = logging.getLogger(__name__)

# the time bases (every other module uses these names, never the numbers)
SAMPLE_RATE = 16_000  # Hz: speech everywhere in the pipeline
FEATURE_RATE = 50  # Hz: the audio encoders' frames (Whisper: one vector per 20 ms)
MOTION_FPS = 25.0  # FLAME motion and video frames per second
FEATURES_PER_FRAME = 2  # audio feature frames per motion frame
LISTEN_WINDOW_S = 30.0  # one Whisper window: the longest stretch an encoder call (and stage 1) reads
assert FEATURE_RATE == FEATURES_PER_FRAME * MOTION_FPS
N_EXPRESSION = 50
MOTION_DIM = N_EXPRESSION + 3  # what stage 2 writes per frame: expression + jaw pose (axis-angle)
MAX_INSTRUCTION_CHARS = 512


# --------------------------------------------------------------------------------------------------- Audio
@dataclass(frozen=True)
class Audio:
    """Mono float32 samples in [-1, 1] at ``sample_rate`` (16 kHz everywhere in the pipeline)."""

    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE
    source: str | None = None

    def __post_init__(self) -> None:
        s = np.asarray(self.samples)
        name = self.source or "audio"
        if s.ndim != 1:
            raise AudioError(f"{name}: expected mono samples [N], got shape {tuple(s.shape)}")
        if not np.issubdtype(s.dtype, np.floating):
            raise AudioError(f"{name}: expected float samples, got dtype {s.dtype}")
        if not np.all(np.isfinite(s)):
            raise AudioError(f"{name}: contains NaN or infinite samples")
        if int(self.sample_rate) <= 0:
            raise AudioError(f"{name}: sample rate must be positive, got {self.sample_rate}")
        object.__setattr__(self, "samples", np.ascontiguousarray(s, dtype=np.float32))
        object.__setattr__(self, "sample_rate", int(self.sample_rate))

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate

    @property
    def num_samples(self) -> int:
        return int(len(self.samples))

    def num_frames(self, fps: float = MOTION_FPS) -> int:
        """Number of motion frames covering this audio at ``fps`` (rounded to the nearest frame, at least 1)."""
        return max(1, int(round(self.duration * fps)))


# --------------------------------------------------------------------------------------------- Instruction
@dataclass(frozen=True)
class Instruction:
    """An audio-visual instruction: free text, plus the structured fields parsed from it when it follows the
    vocabulary in ``prompts/`` (emotion, intensity, facial actions with their degree words).

    Editing an instruction means constructing a new one from the edited text.
    """

    text: str
    emotion: str | None = None
    intensity: str | None = None
    actions: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InstructionError(f"instruction must be text, got {type(self.text).__name__}")
        text = " ".join(self.text.split())
        if not text:
            raise InstructionError("instruction is empty")
        if len(text) > MAX_INSTRUCTION_CHARS:
            raise InstructionError(
                f"instruction is {len(text)} characters long; the limit is {MAX_INSTRUCTION_CHARS} "
                "(use Instruction.from_text(..., truncate=True) to cut it with a warning)"
            )
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "actions", tuple((str(a), str(d)) for a, d in self.actions))

    @classmethod
    def from_text(cls, text: str, *, truncate: bool = False) -> "Instruction":
        """Build from user text; with ``truncate`` an over-long text is cut at a word boundary with a warning."""
        if isinstance(text, str) and truncate:
            text = " ".join(text.split())
            if len(text) > MAX_INSTRUCTION_CHARS:
                cut = text[:MAX_INSTRUCTION_CHARS].rsplit(" ", 1)[0] or text[:MAX_INSTRUCTION_CHARS]
                log.warning("instruction truncated from %d to %d characters", len(text), len(cut))
                text = cut
        return cls(text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "emotion": self.emotion,
            "intensity": self.intensity,
            "actions": [list(a) for a in self.actions],
        }


# ------------------------------------------------------------------------------------------- FlameSequence
def resample_frames(x: np.ndarray, fps: float, to: float = MOTION_FPS) -> np.ndarray:
    """Per-frame rows [T, ...] at ``fps`` linearly resampled to ``to`` frames per second (as many frames as the
    duration holds, at least one); unchanged when the rates agree."""
    x = np.asarray(x)
    if abs(fps - to) <= 1e-3:
        return x
    T = max(1, int(round(len(x) / fps * to)))
    src, dst = np.arange(len(x)) / fps, np.arange(T) / to
    flat = x.reshape(len(x), -1)
    return np.stack([np.interp(dst, src, flat[:, j]) for j in range(flat.shape[1])], 1).reshape((T,) + x.shape[1:])


def _as_float_array(name: str, value: Any, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise SequenceError(f"{name}: cannot be converted to an array ({e})") from e
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise SequenceError(f"{name}: expected a float array, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise SequenceError(f"{name}: expected {ndim} dimensions, got shape {tuple(arr.shape)}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise SequenceError(f"{name}: contains NaN or infinite values")
    return arr


@dataclass
class FlameSequence:
    """Per-frame FLAME parameters of one talking-face clip.

    ``expression`` float32 [T, n_exp]; ``jaw_pose`` float32 [T, 3] (axis-angle, radians; positive x opens the
    mouth); optional ``global_pose`` [T, 3]; optional ``shape`` [n_shape]; ``fps`` (25 by default); ``meta``: any
    JSON-serialisable information (source, seed, instruction...).
    """

    expression: np.ndarray
    jaw_pose: np.ndarray
    fps: float = MOTION_FPS
    global_pose: np.ndarray | None = None
    shape: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.expression = _as_float_array("expression", self.expression, 2)
        self.jaw_pose = _as_float_array("jaw_pose", self.jaw_pose, 2)
        T = self.expression.shape[0]
        if T < 1:
            raise SequenceError("expression: a sequence needs at least one frame")
        if self.expression.shape[1] < 1:
            raise SequenceError("expression: needs at least one coefficient per frame")
        if self.jaw_pose.shape != (T, 3):
            raise SequenceError(f"jaw_pose: expected shape ({T}, 3), got {tuple(self.jaw_pose.shape)}")
        if self.global_pose is not None:
            self.global_pose = _as_float_array("global_pose", self.global_pose, 2)
            if self.global_pose.shape != (T, 3):
                raise SequenceError(f"global_pose: expected shape ({T}, 3), got {tuple(self.global_pose.shape)}")
        if self.shape is not None:
            self.shape = _as_float_array("shape", self.shape, 1)
        try:
            fps = float(self.fps)
        except (TypeError, ValueError) as e:
            raise SequenceError(f"fps: expected a number, got {self.fps!r}") from e
        if not np.isfinite(fps) or fps <= 0:
            raise SequenceError(f"fps: must be a positive number, got {self.fps!r}")
        self.fps = fps
        if not isinstance(self.meta, Mapping):
            raise SequenceError("meta: must be a mapping")
        self.meta = dict(self.meta)

    # ------------------------------------------------------------------ properties
    @property
    def num_frames(self) -> int:
        return int(self.expression.shape[0])

    def __len__(self) -> int:
        return self.num_frames

    @property
    def n_exp(self) -> int:
        return int(self.expression.shape[1])

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps

    def motion(self) -> np.ndarray:
        """[T, n_exp + 3]: expression and jaw pose side by side (the decoder's output layout)."""
        return np.concatenate([self.expression, self.jaw_pose], axis=1)

    @classmethod
    def from_motion(cls, motion: np.ndarray, fps: float = MOTION_FPS, **kwargs: Any) -> "FlameSequence":
        motion = np.asarray(motion)
        if motion.ndim != 2 or motion.shape[1] < 4:
            raise SequenceError(f"motion: expected [T, n_exp + 3], got shape {tuple(motion.shape)}")
        return cls(expression=motion[:, :-3], jaw_pose=motion[:, -3:], fps=fps, **kwargs)

    @classmethod
    def neutral(cls, num_frames: int, n_exp: int = N_EXPRESSION, fps: float = MOTION_FPS) -> "FlameSequence":
        return cls(np.zeros((num_frames, n_exp), np.float32), np.zeros((num_frames, 3), np.float32), fps=fps)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``.npz`` atomically: keys expression, jaw_pose, fps, (global_pose, shape) and meta (JSON)."""
        arrays: dict[str, Any] = {
            "expression": self.expression,
            "jaw_pose": self.jaw_pose,
            "fps": np.asarray(self.fps, np.float32),
            "meta": np.asarray(json.dumps(self.meta, sort_keys=True, default=_json_default)),
        }
        if self.global_pose is not None:
            arrays["global_pose"] = self.global_pose
        if self.shape is not None:
            arrays["shape"] = self.shape
        return atomic_save_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FlameSequence":
        """Load and validate an ``.npz`` written by :meth:`save` (or any npz with at least the required keys)."""
        p = Path(path)
        if not p.is_file():
            raise SequenceError(f"{p}: no such file")
        if not zipfile.is_zipfile(p):  # a .npy, a pickle, text...: numpy's own messages would confuse
            raise SequenceError(f"{p}: not a FLAME motion file (an .npz archive with expression and jaw_pose, as "
                                "avitalk run writes)")
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            why = "it holds Python objects, which avitalk never loads" if "pickle" in str(e) else str(e)
            raise SequenceError(f"{p}: not a readable .npz file ({why})") from e
        missing = [k for k in ("expression", "jaw_pose") if k not in data]
        if missing:
            raise SequenceError(f"{p}: missing key(s) {', '.join(missing)} (found: {', '.join(sorted(data)) or 'none'})")
        meta: dict[str, Any] = {}
        if "meta" in data:
            try:
                meta = json.loads(str(data["meta"]))
            except json.JSONDecodeError as e:
                raise SequenceError(f"{p}: meta is not valid JSON ({e})") from e
        fps = float(np.asarray(data["fps"]).reshape(-1)[0]) if "fps" in data else MOTION_FPS
        try:
            return cls(
                expression=data["expression"],
                jaw_pose=data["jaw_pose"],
                fps=fps,
                global_pose=data.get("global_pose"),
                shape=data.get("shape"),
                meta=meta,
            )
        except SequenceError as e:
            raise SequenceError(f"{p}: {e}") from e


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
