"""espeak-ng through its C library (shipped by the ``espeakng-loader`` PyPI package), called with ctypes.

:func:`synthesize` returns the speech samples and the timing of every phoneme (espeakEVENT_PHONEME with its
audio position), which SynthTalk turns into ground-truth mouth motion. The library keeps global state, so one
process holds one :class:`Espeak` at a time; :func:`synthesize` makes a fresh one per utterance so that output is
reproducible, and parallel generation runs it in worker processes.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import AvitalkError

# espeak_AUDIO_OUTPUT, options, event types and parameters from speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_PHONEME_EVENTS = 0x0001
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_CHARS_UTF8 = 1
PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}
DEFAULTS = {"rate": 175, "volume": 100, "pitch": 50, "range": 50, "wordgap": 0}


class EspeakError(AvitalkError):
    """espeak-ng could not be loaded or refused a request."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Utterance:
    """Synthesised speech: int16-range float samples at ``sample_rate`` and (phoneme, start seconds) events."""

    samples: np.ndarray
    sample_rate: int
    phonemes: list[tuple[str, float]] = field(default_factory=list)
    words: list[float] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


class Espeak:
    """A handle on the process-wide espeak-ng engine (synchronous mode, phoneme events on)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - a declared dependency
            raise EspeakError("espeakng-loader is not installed (run `make setup`)") from e
        try:
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as e:
            raise EspeakError(f"cannot load the espeak-ng library ({e})") from e
        self.data_path = espeakng_loader.get_data_path()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.sample_rate = int(
            self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self.data_path).encode(), _INITIALIZE_PHONEME_EVENTS)
        )
        if self.sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data path {self.data_path})")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str, int]] = []
        self._cb = _Callback(self._on_audio)  # keep a reference: the library calls it later
        self.lib.espeak_SetSynthCallback(self._cb)
        self.voice: str | None = None
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._libc_srand = ctypes.CDLL(None).srand

    def _on_audio(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32))
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_PHONEME:
                self._events.append((_EVENT_PHONEME, e.id.string.decode("utf-8", "replace"), int(e.sample)))
            elif e.type == _EVENT_WORD:
                self._events.append((_EVENT_WORD, "", int(e.sample)))
            i += 1
        return 0

    def close(self) -> None:
        """Terminate the engine and unload the library, so the next :class:`Espeak` starts from fresh state."""
        import _ctypes

        if getattr(self, "lib", None) is not None:
            self.lib.espeak_Terminate()
            _ctypes.dlclose(self.lib._handle)
            self.lib = None

    def set_voice(self, name: str) -> None:
        if name != self.voice:
            if self.lib.espeak_SetVoiceByName(name.encode()) != 0:
                raise EspeakError(f"espeak-ng has no voice {name!r}")
            self.voice = name

    def synthesize(self, text: str, voice: str = "en-us", seed: int = 0, **params: int) -> Utterance:
        """Speak ``text``; ``params`` are rate (words/min), volume (0-200), pitch (0-100), range (0-100), wordgap
        (units of 10 ms). espeak-ng varies its output with a random generator; ``seed`` fixes it, so the same call
        gives the same samples whatever was spoken before."""
        self.lib.espeak_ng_SetRandSeed(ctypes.c_long(int(seed) & 0x7FFFFFFF))
        self._libc_srand(int(seed) & 0xFFFFFFFF)
        self.set_voice(voice)
        unknown = set(params) - set(PARAM)
        if unknown:
            raise EspeakError(f"unknown espeak parameter(s) {', '.join(sorted(unknown))}")
        for k, default in DEFAULTS.items():  # every parameter, every call: nothing leaks from an earlier call
            self.lib.espeak_SetParameter(PARAM[k], int(params.get(k, default)), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if err != 0:
            raise EspeakError(f"espeak_Synth failed with code {err}")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        sr = float(self.sample_rate)
        phonemes = [(name, s / sr) for kind, name, s in self._events if kind == _EVENT_PHONEME]
        words = [s / sr for kind, _, s in self._events if kind == _EVENT_WORD]
        return Utterance(samples / 32768.0, self.sample_rate, phonemes, words)


def synthesize(text: str, voice: str = "en-us", seed: int = 0, **params: int) -> Utterance:
    """Speak ``text`` with a fresh engine: the same arguments always give byte-identical samples.

    espeak-ng's wave generator keeps static state from one utterance to the next (and draws random numbers), so
    a long-lived engine drifts. Loading the library anew per utterance (about 5 ms) and seeding its generators
    makes every clip depend on its own arguments only, whatever a process spoke before.
    """
    eng = Espeak()
    try:
        return eng.synthesize(text, voice, seed=seed, **params)
    finally:
        eng.close()


def variant_gender(name: str) -> str | None:
    """'male' / 'female' from a voice variant file of espeak-ng's data (None when it does not say)."""
    import espeakng_loader

    p = Path(espeakng_loader.get_data_path()) / "voices" / "!v" / name
    if not p.is_file():
        return None
    for line in p.read_text(errors="replace").splitlines():
        parts = line.split()
        if parts and parts[0].lower() == "gender" and len(parts) > 1:
            return parts[1].lower()
    return None


def data_path() -> str:
    import espeakng_loader

    return os.fspath(espeakng_loader.get_data_path())
