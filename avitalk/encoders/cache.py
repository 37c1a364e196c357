"""Run a frozen encoder once per clip of a dataset and keep the features (FeatureCache)."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.dataset import FeatureCache
from ..data.manifest import read_manifest
from .base import AudioEncoder


def cache_dataset_features(
    root: str | os.PathLike,
    encoder: AudioEncoder,
    cache_dir: str | os.PathLike | None = None,
    splits: tuple[str, ...] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    workers: int | None = None,
) -> FeatureCache:
    """Features of every clip (of ``splits``) in ``cache_dir`` (default ``ROOT/features``); finished clips are kept.
    An encoder made of parts (``encoder.parts()``) caches each part under its own key: :class:`JoinedCache`.
    ``workers``: processes that share the encoding (:func:`encode_workers`)."""
    from tqdm import tqdm

    from .. import audio as audio_io

    if parts := encoder.parts():
        return JoinedCache(encoder, [cache_dataset_features(root, p, cache_dir, splits, batch_size, progress, workers)
                                     for p in parts])
    root = Path(root)
    cache = FeatureCache(cache_dir or root / "features", encoder.key)
    clips = [c for c in read_manifest(root) if splits is None or c.split in splits]
    todo = [c for c in clips if cache.get(c.id) is None]

    def work(chunk) -> None:
        for c, f in zip(chunk, encoder.encode_batch([audio_io.load(root / c.audio) for c in chunk])):
            cache.put(c.id, f)

    bar = tqdm(total=len(todo), unit="clip", desc=f"features {encoder.key}", disable=not progress or None)
    run_chunks([todo[s : s + batch_size] for s in range(0, len(todo), batch_size)], work,
               lambda c: cache.get(c.id) is None, bar, encode_workers(encoder, workers))
    bar.close()
    return cache


class JoinedCache:
    """The features of an encoder made of parts (:meth:`.whisper_layers.WhisperLayersEncoder.parts`), each part read
    from its own cache and joined by ``encoder.join``: an encoder that extends stages 1 and 2's (the emotion reader's)
    reads the features cached for them and computes only what it adds."""

    def __init__(self, encoder: AudioEncoder, caches: list):
        self.encoder, self.caches = encoder, caches

    def get(self, clip_id: str):
        fs = [c.get(clip_id) for c in self.caches]
        return None if any(f is None for f in fs) else self.encoder.join(*fs)


def augmented_id(clip_id: str, k: int) -> str:
    return f"{clip_id}~aug{k}"


def _rng(text: str):
    """A generator seeded by a string (deterministic across runs and machines)."""
    import hashlib

    import numpy as np

    return np.random.default_rng(int(hashlib.sha256(text.encode()).hexdigest()[:12], 16))


def _cache_copies(root: Path, encoder: AudioEncoder, copies: int, seed: int, splits: tuple[str, ...], progress: bool,
                  suffix: str, copy_id, make, desc: str, motion_only: bool = False, encode=None,
                  workers: int | None = None) -> FeatureCache:
    """Encode ``copies`` altered versions of every clip of ``splits`` (``motion_only``: of those with motion) into
    ``ROOT/features/<key>-<suffix>/`` under ``copy_id(clip id, k)``: ``make(samples, clip, k, babble)`` alters a
    clip's samples (``babble``: 16 other clips of the split, for background talk); ``encode(items, sources)`` turns
    the batch's ``make`` results into features (default: the encoder on each altered clip); finished copies are kept."""
    import numpy as np
    from tqdm import tqdm

    from .. import audio as audio_io
    from ..types import Audio

    cache = FeatureCache(root / "features", f"{encoder.key}-{suffix}")
    clips = [c for c in read_manifest(root)
             if c.split in splits and (not motion_only or (c.flame and c.extra.get("has_motion", True)))]
    todo = [(c, k) for c in clips for k in range(copies) if cache.get(copy_id(c.id, k)) is None]
    if not todo:
        return cache
    babble = {}  # per split, from that split's clips: a copy is the same whichever splits a call asks for
    for split in {c.split for c, _ in todo}:
        own = [c for c in clips if c.split == split]
        babble[split] = [audio_io.load(root / own[int(j)].audio).samples for j in
                         np.random.default_rng(seed).choice(len(own), size=min(16, len(own)), replace=False)]
    if encode is None:
        def encode(items, sources):
            return encoder.encode_batch([Audio(np.asarray(x, np.float32), source=src) for x, src in zip(items, sources)])

    def work(chunk) -> None:
        auds = [audio_io.load(root / c.audio) for c, _ in chunk]
        items = [make(a.samples, c, k, babble[c.split]) for a, (c, k) in zip(auds, chunk)]
        for (c, k), f in zip(chunk, encode(items, [a.source for a in auds])):
            cache.put(copy_id(c.id, k), f)

    bar = tqdm(total=len(todo), unit="copy", desc=desc, disable=not progress or None)
    run_chunks([todo[s : s + 8] for s in range(0, len(todo), 8)], work,
               lambda ck: cache.get(copy_id(ck[0].id, ck[1])) is None, bar, encode_workers(encoder, workers))
    bar.close()
    return cache


def cache_augmented_features(
    root: str | os.PathLike,
    encoder: AudioEncoder,
    copies: int,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
    progress: bool = True,
    workers: int | None = None,
) -> FeatureCache:
    """Features of ``copies`` augmented versions of every clip of ``splits`` (:func:`avitalk.augment.augment`:
    noise, reverberation, band limits, gain, codec), cached under ``ROOT/features/<key>-aug<seed>/<id>~aug<k>.npy``.
    Each copy is deterministic for (seed, clip, k); finished copies are kept. Babble noise comes from other clips of
    the same split. An encoder made of parts caches each part's copies (:class:`JoinedCache`)."""
    from ..augment import augment

    if parts := encoder.parts():
        return JoinedCache(encoder, [cache_augmented_features(root, p, copies, seed, splits, progress, workers)
                                     for p in parts])

    def make(x, clip, k, babble):
        return augment(x, _rng(f"{seed}/{clip.id}/{k}"), babble)

    return _cache_copies(Path(root), encoder, copies, seed, splits, progress, f"aug{seed}", augmented_id, make,
                         f"augmented features x{copies}", workers=workers)


# ------------------------------------------------------------------------------------------------ pause copies
PAUSE_S = (0.5, 3.0)  # silence added before and after the speech of a pause copy, seconds (each drawn in this range)


def pause_id(clip_id: str, k: int) -> str:
    return f"{clip_id}~pause{k}"


def pause_plan(seed: int, clip_id: str, k: int) -> tuple[int, int, bool]:
    """(lead, trail, augmented) of pause copy ``k`` of a clip: the motion frames of silence added before and after it
    (each :data:`PAUSE_S` long at most), and whether the padded audio goes through the augmentation chain (half the
    copies, so the pauses are digital silence in some and a room's noise in others). Deterministic."""
    from ..types import MOTION_FPS

    rng = _rng(f"{seed}/{clip_id}/pause{k}")
    lo, hi = (int(round(s * MOTION_FPS)) for s in PAUSE_S)
    return int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)), bool(rng.random() < 0.5)


def paused_samples(samples, lead: int, trail: int):
    """The clip's samples between ``lead`` and ``trail`` motion frames of digital silence."""
    import numpy as np

    from ..types import MOTION_FPS, SAMPLE_RATE

    n = int(round(SAMPLE_RATE / MOTION_FPS))
    x = np.asarray(samples, np.float32)
    return np.concatenate([np.zeros(lead * n, np.float32), x, np.zeros(trail * n, np.float32)])


def _pause_copy(x, seed: int, clip_id: str, k: int, lead: int, trail: int, aug: bool, babble):
    """Pause copy ``k``'s audio: the samples between ``lead`` and ``trail`` frames of silence, through the augmentation
    chain when ``aug``."""
    from ..augment import augment

    x = paused_samples(x, lead, trail)
    return augment(x, _rng(f"{seed}/{clip_id}/pause{k}/augment"), babble) if aug else x


def cache_paused_features(
    root: str | os.PathLike,
    encoder: AudioEncoder,
    copies: int,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
    progress: bool = True,
    workers: int | None = None,
) -> FeatureCache:
    """Features of ``copies`` pause copies of every clip of ``splits``: its audio with 0.5-3 s of silence before and
    after (:func:`pause_plan`), half of them through the augmentation chain, cached under
    ``ROOT/features/<key>-pause<seed>/<id>~pause<k>.npy``. A corpus of single sentences has no stretch of audio without
    speech in it; a microphone left open is mostly that. The motion to go with them: ``stage2_synthesis.clips``."""
    def make(x, clip, k, babble):
        return _pause_copy(x, seed, clip.id, k, *pause_plan(seed, clip.id, k), babble)

    return _cache_copies(Path(root), encoder, copies, seed, splits, progress, f"pause{seed}", pause_id, make,
                         f"pause copies x{copies}", workers=workers)


# ------------------------------------------------------------------------------------------------ stream windows
def stream_window_id(clip_id: str, k: int) -> str:
    return f"{clip_id}~stream{k}"


def stream_window_plan(seed: int, clip_id: str, k: int, frames: int) -> tuple[int, int, bool, int]:
    """(lead, trail, augmented, end) of stream window ``k`` of a clip of ``frames`` motion frames: the window is cut
    from the audio of the clip itself (half the windows: a stream whose first sound is the speech) or of its pause
    copy ``k`` (:func:`pause_plan`: the clip between stretches of silence), through the augmentation chain as that
    copy is (half of them), and ends at motion frame ``end`` of it (exclusive; anywhere from its first frame to its
    last, so a stream's first seconds and its pauses are among them). Deterministic."""
    lead, trail, aug = pause_plan(seed, clip_id, k)
    rng = _rng(f"{seed}/{clip_id}/stream{k}")
    if rng.random() < 0.5:
        lead = trail = 0
    return lead, trail, aug, int(rng.integers(1, lead + frames + trail + 1))


def cache_stream_windows(
    root: str | os.PathLike,
    encoder: AudioEncoder,
    copies: int,
    context_s: float,
    seed: int = 0,
    splits: tuple[str, ...] = ("train",),
    progress: bool = True,
    workers: int | None = None,
) -> FeatureCache:
    """The windows a live stream encodes (:func:`avitalk.encoders.streaming.stream_windows`: the last ``context_s``
    seconds heard, encoded as one clip, with the stream's loud level), ``copies`` per clip with motion of ``splits``
    (:func:`stream_window_plan`), at the motion frame rate, cached under
    ``ROOT/features/<key>-stream<seed>-<context frames>/<id>~stream<k>.npy``. The clip's audio is fitted to its
    motion frames (cut or padded with silence) so window and motion line up to the frame."""
    import numpy as np

    from ..types import FlameSequence, MOTION_FPS, SAMPLE_RATE
    from .streaming import stream_windows

    per_frame = int(round(SAMPLE_RATE / MOTION_FPS))

    def make(x, clip, k, babble):
        frames = FlameSequence.load(Path(root) / clip.flame).num_frames
        x = np.asarray(x, np.float32)[: frames * per_frame]
        x = np.concatenate([x, np.zeros(frames * per_frame - len(x), np.float32)])
        lead, trail, aug, end = stream_window_plan(seed, clip.id, k, frames)
        return np.asarray(_pause_copy(x, seed, clip.id, k, lead, trail, aug, babble), np.float32), end

    def encode(items, sources):
        return [f for _, f in stream_windows(encoder, [x for x, _ in items], [e for _, e in items], context_s)]

    return _cache_copies(Path(root), encoder, copies, seed, splits, progress,
                         f"stream{seed}-{int(round(context_s * MOTION_FPS))}", stream_window_id, make,
                         f"stream windows x{copies}", motion_only=True, encode=encode, workers=workers)


# ------------------------------------------------------------------------------------------------ worker processes
def encode_workers(encoder: AudioEncoder, workers: int | None = None) -> int:
    """How many processes encode a cache's missing clips: ``workers`` if given, else one per thread torch would use
    (``torch.get_num_threads()``, i.e. the cores, or what ``torch.set_num_threads`` / ``OMP_NUM_THREADS`` chose);
    one for an encoder on a GPU, and one where processes cannot be forked (not Linux). On 2 cores two one-thread
    processes encode about 1.4x faster than one process on two threads: an encoder's small matrices and its Python
    and numpy work (resampling, augmentation, pitch) keep a second thread mostly idle (docs/training.md)."""
    import multiprocessing
    import sys

    import torch

    if workers is not None:
        return max(1, int(workers))
    if str(getattr(encoder, "device", "cpu")) != "cpu" or not sys.platform.startswith("linux") \
            or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, torch.get_num_threads())


def run_chunks(chunks: list, work, missing, bar, workers: int = 1) -> None:
    """``work(chunk)`` for every chunk (it writes the chunk's features to a cache), shared among ``workers`` forked
    processes of one torch thread each (chunk i to process i mod workers), ``bar`` counting items. Whatever is still
    ``missing(item)`` afterwards (all of it with one worker; a crashed worker's share) is done here, so an error
    reaches the caller as itself and a run that stopped resumes from the cache."""
    if workers > 1 and len(chunks) >= 2 * workers:
        _fork_chunks(chunks, work, bar, workers)
    for chunk in chunks:
        if any(missing(x) for x in chunk):
            work(chunk)
            bar.update(len(chunk))


def _fork_chunks(chunks: list, work, bar, workers: int) -> None:
    import multiprocessing
    import queue as queue_mod

    ctx = multiprocessing.get_context("fork")  # the children inherit the loaded encoder and ``work`` as they are
    done = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(work, chunks[w::workers], done), daemon=True) for w in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs) or not done.empty():
            try:
                bar.update(done.get(timeout=0.2))
            except queue_mod.Empty:
                pass
    finally:  # interrupted: the workers go too (what they wrote is kept)
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()


def _worker(work, chunks: list, done) -> None:
    import torch

    torch.set_num_threads(1)  # the workers are the parallelism (and OpenMP's pool is not safe to use after a fork)
    try:
        for chunk in chunks:
            work(chunk)
            done.put(len(chunk))
    except BaseException:  # noqa: BLE001 -- the parent redoes this chunk and reports its error (or is interrupted)
        return
