"""What stage 1 hears of a clip: the rows the Q-Former reads and the statistics the emotion reader reads.

    hearing = Hearing(cfg)
    rows = hearing.rows(audio, features, encoder)   # [T, D (+ prosody)]: the first MAX_LISTEN_S seconds
    stats = hearing.utterance(audio, features)      # [1, 2 D']: the emotion reader's input

Each is computed once per clip: writing the instruction and then ``heard`` read the same clip without encoding it twice.
"""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig

from avitalk.encoders.base import FEATURE_RATE
from avitalk.types import Audio

log = logging.getLogger(__name__)

MAX_LISTEN_S = 30.0  # stage 1 reads at most the first 30 s (one Whisper window)


def prosody_dim(cfg: DictConfig) -> int:
    """Prosody channels appended to the encoder features for stage 1 (``stage1.prosody: true`` with an encoder that
    has none of its own)."""
    from avitalk.encoders import encoder_prosody_dim

    from avitalk.encoders.prosody import PROSODY_CHANNELS

    return PROSODY_CHANNELS if bool(cfg.stage1.prosody) and not encoder_prosody_dim(cfg.audio_encoder) else 0


def speech_features(cfg: DictConfig, audio: Audio, encoder=None, encoded: np.ndarray | None = None) -> np.ndarray:
    """Stage 1's input for one Audio: encoder features [T, D] (+ prosody channels when the config asks)."""
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.prosody import ProsodyEncoder

    if encoded is None:
        encoded = (encoder or audio_encoder_from_config(cfg.audio_encoder)).encode(audio)
    if not prosody_dim(cfg):
        return encoded
    p = ProsodyEncoder().encode(audio)
    n = min(len(encoded), len(p))
    return np.concatenate([encoded[:n], p[:n]], 1)


def first_listen(audio: Audio, features: np.ndarray | None, warn: bool) -> tuple[Audio, np.ndarray | None]:
    """The first :data:`MAX_LISTEN_S` seconds of a clip and of its features (what stage 1 reads)."""
    if audio.duration <= MAX_LISTEN_S:
        return audio, features
    if warn:
        log.warning("stage 1 reads the first %.0f s of %.1f s of speech", MAX_LISTEN_S, audio.duration)
    audio = Audio(audio.samples[: int(MAX_LISTEN_S * audio.sample_rate)], audio.sample_rate, audio.source)
    return audio, None if features is None else features[: int(MAX_LISTEN_S * FEATURE_RATE)]


class Hearing:
    """Stage 1's inputs for a clip under config ``cfg`` (its ``audio_encoder``, ``stage1.prosody``,
    ``stage1.listen_pad_s`` and ``stage1.reader_encoder``). ``features`` arguments are the audio encoder's output for
    the clip as given, when already computed; ``encoder`` the pipeline's audio encoder (made here when not given)."""

    def __init__(self, cfg: DictConfig | None):
        self.cfg = cfg
        self._encoder = None  # the config's audio encoder, made when stage 1 must encode audio itself
        self._reader_encoder = None  # stage1.reader_encoder, made when first needed
        self._last_rows: tuple | None = None  # (samples, pad, encoder, rows)
        self._last_stats: tuple | None = None  # (samples, features, stats)

    def encoder(self, given=None):
        """``given``, or the config's audio encoder (made once)."""
        if given is not None:
            return given
        if self._encoder is None:
            from avitalk.encoders import audio_encoder_from_config

            self._encoder = audio_encoder_from_config(self.cfg.audio_encoder)
        return self._encoder

    def rows(self, audio: Audio, features: np.ndarray | None = None, encoder=None, warn: bool = False) -> np.ndarray:
        """What the Q-Former reads: the first :data:`MAX_LISTEN_S` seconds (encoder features + prosody). With
        ``stage1.listen_pad_s`` the speech is first put between that much faint noise on each side
        (:func:`avitalk.audio.even_margins`), so how tightly a recording was cut does not change what stage 1 hears;
        then ``features`` cannot be used and the audio is encoded again (once per clip)."""
        audio, features = first_listen(audio, features, warn)
        pad = float(self.cfg.stage1.get("listen_pad_s", 0.0) or 0.0) if self.cfg is not None else 0.0
        if pad <= 0:
            return np.asarray(speech_features(self.cfg, audio, encoder, encoded=features), np.float32)
        from avitalk.audio import even_margins

        encoder = self.encoder(encoder)
        last = self._last_rows
        if last is not None and last[0] is audio.samples and last[1] == pad and last[2] is encoder:
            return last[3]
        padded = Audio(even_margins(audio.samples, pad), audio.sample_rate, audio.source)
        rows = np.asarray(speech_features(self.cfg, padded, encoder), np.float32)
        self._last_rows = (audio.samples, pad, encoder, rows)
        return rows

    def utterance(self, audio: Audio, features: np.ndarray | None = None, encoder=None) -> np.ndarray:
        """[1, 2 D] the emotion reader's statistics of a clip (:func:`.reader.utterance_stats` over its speech span),
        from ``stage1.reader_encoder`` when the config names one (when it extends the audio encoder ``encoder``
        whose ``features`` are given, only what it adds is computed), else from stage 1's own rows."""
        from .reader import utterance_stats

        last = self._last_stats
        if last is not None and last[0] is audio.samples and last[1] is features:
            return last[2]
        samples, given = audio.samples, features
        audio, features = first_listen(audio, features, warn=False)
        if self.cfg is not None and self.cfg.stage1.reader_encoder:
            if self._reader_encoder is None:
                from avitalk.encoders import audio_encoder_from_config

                enc = audio_encoder_from_config(self.cfg.stage1.reader_encoder)
                self._reader_encoder = (enc, enc.parts())
            enc, parts = self._reader_encoder
            if parts and features is not None and encoder is not None and encoder.key == parts[0].key:
                rows = enc.join(features, parts[1].encode(audio))  # the audio encoder's channels are the reader's
            else:
                rows = enc.encode(audio)
        else:
            rows = speech_features(self.cfg, audio, encoder if features is not None else self.encoder(encoder),
                                   encoded=features)
        stats = utterance_stats(rows, audio.samples)[None]
        self._last_stats = (samples, given, stats)
        return stats
