"""Live: speech arriving in chunks (a microphone, or a recording played at real time) -> FLAME frames at 25 fps.

:class:`LiveSession` is the streaming core: :mod:`avitalk.encoders.streaming` re-encodes the last few seconds of audio
at every step (a flat cost per second, however long it runs) and :class:`~avitalk.stage2_synthesis.stream.MotionStream`
decodes each frame once ``lookahead_ms`` of audio after it has arrived. The instruction in force can change at any
time (:meth:`LiveSession.set_instruction`, from any thread): the new style blends in over ``blend_s``.

:func:`run_live` is the loop a command runs: a source thread puts chunks on a queue as they arrive; this thread takes
everything queued, steps once, and hands the new frames to the sinks (a recorder, a page, a window). Timing: a frame's
*latency* runs from the arrival of the chunk that completed its own 40 ms of audio to the moment it is ready (so it
includes the look-ahead it waited for); it is *late* by how much it missed its slot on a 25 fps clock that shows frame
f ``lookahead + chunk`` after its audio was spoken.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from avitalk.encoders.streaming import FRAME_SAMPLES
from avitalk.errors import AudioError
from avitalk.types import MOTION_FPS, SAMPLE_RATE, Audio, FlameSequence

log = logging.getLogger(__name__)
FRAME_S = 1.0 / MOTION_FPS
DEFAULT_TEXT = "A person speaks."


@dataclass
class LiveFrame:
    index: int  # motion frame number from the stream's start
    motion: np.ndarray  # [n_exp + 3]: expression, jaw pose
    ready: float  # time.perf_counter() when it was ready
    instruction: str


@dataclass
class Chunk:
    samples: np.ndarray
    arrived: float  # time.perf_counter() when its last sample arrived


class LiveSession:
    """Audio chunks in (any size, 16 kHz mono float32), frames out. Build from a loaded pipeline:
    ``LiveSession(pipe, "A calm person speaks.", lookahead_ms=120)``. ``context_s``: the seconds of audio re-encoded
    at every step (default: the checkpoint's ``stage2.train.stream.context_s``, the windows its live decoder learned
    from); ``int8``: the encoder's linear layers in int8 (when it has an int8 form)."""

    def __init__(self, pipe, instruction: str | None = None, lookahead_ms: float = 120.0, context_s: float | None = None,
                 seed: int = 0, blend_s: float = 0.3, int8: bool = True):
        from avitalk.encoders.streaming import StreamingEncoder
        from avitalk.stage2_synthesis.stream import MotionStream

        self.pipe = pipe
        self.lookahead = int(round(lookahead_ms / 1000.0 * MOTION_FPS))
        enc = pipe.audio_encoder
        if int8 and hasattr(enc, "int8"):  # the Whisper linears in int8: twice as fast, the same motion (docs/live.md)
            enc = enc.int8()
        if context_s is None:
            context_s = float(pipe.synthesizer.cfg.stage2.train.stream.context_s)
        self.encoder = StreamingEncoder(enc, context_s=context_s)
        if self.encoder.context // FRAME_SAMPLES < self.lookahead + 2:
            raise ValueError(f"context_s ({context_s:g} s) must hold the look-ahead ({lookahead_ms:g} ms) and two frames")
        self.stream = MotionStream(pipe.synthesizer, instruction or DEFAULT_TEXT, self.lookahead, seed=seed,
                                   blend_s=blend_s)
        self._pending: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self.frames: list[LiveFrame] = []
        self.chunks: list[tuple[int, float]] = []  # (end sample, arrival) of every chunk
        self.steps: list[float] = []  # seconds per step
        self.changes: list[tuple[int, str]] = [(0, self.stream.instruction)]  # (first frame, instruction)
        self.authors: list[str] = ["start"]  # who set each of them: "start", "user" or "stage 1"
        self.user_set = threading.Event()  # a person has set an instruction (stage 1's re-reading then stops)

    @property
    def instruction(self) -> str:
        return self.stream.instruction

    def warm_up(self) -> "LiveSession":
        """One encoder call and one decoder call on a second of near silence (nothing kept), so the first real step
        does not pay for first calls (kernel selection, lazy imports)."""
        import torch

        from avitalk.encoders.streaming import StreamingEncoder

        scratch = StreamingEncoder(self.encoder.encoder, context_s=1.0)
        scratch.push(np.full(SAMPLE_RATE, 1e-4, np.float32))
        feats = torch.as_tensor(scratch.encode()[1])[None].expand(2, -1, -1)
        with torch.no_grad():
            self.stream.decoder(feats, self.stream.style_at(0)[None].expand(2, -1))
        return self

    def set_instruction(self, text: str, by: str = "user") -> None:
        """Queue a new instruction (any thread); it takes effect at the next step and blends in. ``by``: "user" (a
        person: stage 1's re-reading stops) or "stage 1"."""
        from avitalk.types import Instruction

        text = Instruction.from_text(text, truncate=True).text  # a bad one fails here, in the caller's thread
        with self._lock:
            if by == "user":
                self.user_set.set()
            self._pending.append((text, by))

    def push(self, samples: np.ndarray, arrived: float | None = None) -> list[LiveFrame]:
        """Hear a chunk. Normally returns no frames (:meth:`step` makes them); when the stream is so far behind that
        audio would leave the encoder's window before its frames are made (a long chunk, a stalled reader), it
        steps on the way and returns those frames."""
        x = np.asarray(samples, np.float32).reshape(-1)
        arrived = time.perf_counter() if arrived is None else arrived
        limit = max(1, self.encoder.context // FRAME_SAMPLES - 1)  # frames of backlog the window still holds
        out: list[LiveFrame] = []
        i = 0
        while i < len(x):
            room = (self.stream.next_frame + limit) * FRAME_SAMPLES - self.encoder.samples_in
            if room <= 0:
                out += self.step()
                continue
            part = x[i : i + room]
            self.encoder.push(part)
            i += len(part)
        self.chunks.append((self.encoder.samples_in, arrived))
        return out

    def step(self, final: bool = False) -> list[LiveFrame]:
        """Emit the frames whose look-ahead has arrived (all of them when ``final``)."""
        with self._lock:
            pending, self._pending = self._pending, []
        for text, by in pending:
            self.stream.set_instruction(text)
            self.changes.append((self.stream.next_frame, text))
            self.authors.append(by)
        ready = self.encoder.frames_ready
        if ready < 1 or (not final and ready <= self.stream.next_frame + self.lookahead):
            return []
        t = time.perf_counter()
        first_new = self.stream.next_frame
        first, feats = self.encoder.encode()
        motion = self.stream.step(first, feats, final=final)
        now = time.perf_counter()
        self.steps.append(now - t)
        out = [LiveFrame(first_new + k, m, now, self.stream.instruction) for k, m in enumerate(motion)]
        self.frames += out
        return out

    def feed(self, samples: np.ndarray, arrived: float | None = None) -> list[LiveFrame]:
        """:meth:`push` then :meth:`step`: every frame this chunk made ready."""
        return self.push(samples, arrived) + self.step()

    def finish(self) -> list[LiveFrame]:
        """The stream has ended: the frames still waiting for their look-ahead, with what there is."""
        return self.step(final=True) if self.encoder.frames_ready > self.stream.next_frame else []

    def sequence(self) -> FlameSequence:
        m = np.stack([f.motion for f in self.frames]) if self.frames else np.zeros((0, self.stream.decoder.n_motion))
        return FlameSequence.from_motion(m.astype(np.float32), fps=MOTION_FPS,
                                         meta={"instruction": self.changes[-1][1], "live": True,
                                               "changes": [[f, t] for f, t in self.changes],
                                               "lookahead_frames": self.lookahead,
                                               "decoder": "live" if self.stream.synth.stream_decoder is not None
                                               else "offline", "context_s": self.encoder.context / SAMPLE_RATE})

    def timing(self, chunk_s: float | None = None, start: float | None = None) -> dict[str, Any]:
        """Latency of every frame (ms; from the arrival of the chunk that completed its own audio to ready), how
        late it was on a 25 fps clock (when ``start``, the first sample's time, and ``chunk_s`` are known), and the
        cost of a step."""
        if not self.frames:
            return {"frames": 0}
        ends = np.array([e for e, _ in self.chunks])
        arrivals = np.array([a for _, a in self.chunks])
        idx = np.array([f.index for f in self.frames])
        ready = np.array([f.ready for f in self.frames])
        own = np.minimum(np.searchsorted(ends, (idx + 1) * FRAME_SAMPLES), len(ends) - 1)
        lat = (ready - arrivals[own]) * 1000.0
        out = {"frames": int(len(idx)), "lookahead_ms": self.lookahead * FRAME_S * 1000.0,
               "latency_ms": _stats(lat), "step_ms": _stats(np.array(self.steps) * 1000.0), "steps": len(self.steps)}
        if start is not None and chunk_s is not None:
            due = start + (idx + 1 + self.lookahead) * FRAME_S + chunk_s
            late = (ready - due) * 1000.0
            out["late_ms"] = _stats(late)
            out["late_frames_over_one_period"] = float(np.mean(late > FRAME_S * 1000.0))
        return out


# ------------------------------------------------------------------------------------------------ stage 1 along
def speech_seconds(samples: np.ndarray, floor_dbfs: float = -50.0, within_db: float = 25.0) -> float:
    """Seconds of ``samples`` (16 kHz) that sound like speech: 10 ms frames within ``within_db`` of the loud level
    (their 95th percentile) and above ``floor_dbfs`` (so a quiet room is not speech however it varies)."""
    hop = SAMPLE_RATE // 100
    n = len(samples) // hop
    if n < 1:
        return 0.0
    e = np.square(np.asarray(samples[: n * hop], np.float64)).reshape(n, hop).mean(1)
    db = 10 * np.log10(e + 1e-12)
    loud = np.percentile(db, 95)
    return float(np.sum(db > max(loud - within_db, floor_dbfs))) * hop / SAMPLE_RATE


class Rereader:
    """Stage 1 listening along the stream: every ``every_s`` seconds of audio it reads the last ``window_s`` seconds
    (when at least ``min_speech_s`` of them are speech) on a thread of its own, and its instruction replaces the one in
    force when it names another emotion or intensity (the same emotion in new words would only move the face about).
    An instruction set by a person ends it: the person's word wins. Call it with every chunk (a tap of
    :func:`run_live`); :meth:`close` at the end; ``reads`` says what it read, when, and what it cost."""

    def __init__(self, session: LiveSession, pipe, every_s: float = 4.0, window_s: float = 6.0,
                 min_speech_s: float = 1.0):
        if pipe.instructor is None:
            from avitalk.errors import CheckpointError

            raise CheckpointError(f"{pipe.source}: this checkpoint has no stage 1 to re-read the voice with")
        if every_s <= 0 or window_s <= 0:
            raise ValueError("every_s and window_s must be positive")
        self.session, self.pipe = session, pipe
        self.rate = SAMPLE_RATE
        self.every, self.window = int(every_s * SAMPLE_RATE), int(window_s * SAMPLE_RATE)  # samples
        self.min_speech_s = float(min_speech_s)
        self._buf = np.zeros(0, np.float32)
        self.heard = 0  # samples
        self._next = self.every
        self._jobs: "queue.Queue[tuple[float, np.ndarray] | None]" = queue.Queue(maxsize=1)
        self.reads: list[dict[str, Any]] = []
        self._set: str | None = None  # the last instruction it set
        self.skipped = 0  # reads due while the previous one was still running, or with too little speech
        self._thread = threading.Thread(target=self._work, daemon=True, name="avitalk-live-stage1")
        self._thread.start()

    @property
    def active(self) -> bool:
        return not self.session.user_set.is_set()

    def __call__(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, x])[-self.window :]
        self.heard += len(x)
        if self.heard < self._next:
            return
        self._next = (self.heard // self.every + 1) * self.every
        if not self.active:
            return
        if speech_seconds(self._buf) < self.min_speech_s:
            self.skipped += 1
            return
        try:
            self._jobs.put_nowait((self.heard / SAMPLE_RATE, self._buf.copy()))
        except queue.Full:  # still reading the last one: this one is skipped, never queued up
            self.skipped += 1

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                self._jobs.task_done()
                return
            try:
                self._read(*job)
            finally:
                self._jobs.task_done()

    def _read(self, at: float, clip: np.ndarray) -> None:
        from avitalk.vocab import parse_instruction

        t = time.perf_counter()
        try:
            a = Audio(clip, source="live")
            feats = self.pipe.encode(a)
            ins = self.pipe.instruct(a, features=feats)
            heard = self.pipe.heard(a, features=feats)
        except Exception as e:  # noqa: BLE001 - a failed read is logged; the stream goes on
            log.warning("stage 1 could not read the last %.0f s: %s", len(clip) / SAMPLE_RATE, e)
            return
        now = parse_instruction(self._set or self.session.instruction)  # the last one it set may still be queued
        new = parse_instruction(ins.text)
        used = self.active and (new.emotion, new.intensity) != (now.emotion, now.intensity)
        if used:
            self.session.set_instruction(ins.text, by="stage 1")
            self._set = ins.text
        self.reads.append({"audio_s": round(at, 3), "seconds": round(time.perf_counter() - t, 3),
                           "text": ins.text, "emotion": new.emotion, "used": used,
                           "heard": {k: round(float(v), 3) for k, v in (heard or {}).items()}})

    def drain(self) -> None:
        """Wait until every read asked for so far is done."""
        self._jobs.join()

    def close(self) -> dict[str, Any]:
        """Wait for the read under way; a summary for run.json."""
        self._jobs.put(None)
        self._thread.join(timeout=30)
        secs = [r["seconds"] for r in self.reads]
        return {"every_s": self.every / SAMPLE_RATE, "window_s": self.window / SAMPLE_RATE, "reads": self.reads,
                "skipped": self.skipped, "read_s_median": float(np.median(secs)) if secs else None,
                "stopped_by_user": not self.active}


def limit_threads(n: int = 1):
    """Torch and the BLAS/OpenMP pools under numpy to ``n`` threads each (a context manager). A live stream steps 25
    times a second on small arrays: extra threads only wait for each other (measured: 2 threads slower than 1, and
    1.9 cores busy instead of 0.7), and the other core stays free for audio, drawing and the page."""
    import contextlib

    import torch
    from threadpoolctl import threadpool_limits

    @contextlib.contextmanager
    def ctx():
        before = torch.get_num_threads()
        torch.set_num_threads(int(n))
        try:
            with threadpool_limits(int(n)):
                yield
        finally:
            torch.set_num_threads(before)

    return ctx()


def _stats(x: np.ndarray) -> dict[str, float]:
    x = np.asarray(x, float)
    if not len(x):
        return {}
    return {"median": round(float(np.median(x)), 2), "p90": round(float(np.percentile(x, 90)), 2),
            "p99": round(float(np.percentile(x, 99)), 2), "max": round(float(x.max()), 2)}


# ------------------------------------------------------------------------------------------------ sources
class WavSource:
    """A recording played at real time (or as fast as it goes): chunks of ``chunk_ms`` put on a queue at the moment
    their last sample would have been spoken."""

    def __init__(self, audio: Audio, chunk_ms: float = 20.0, realtime: bool = True):
        if not 1.0 <= chunk_ms <= 1000.0:
            raise AudioError(f"chunk size must be 1..1000 ms, got {chunk_ms:g}")
        self.audio, self.chunk = audio, max(1, int(round(chunk_ms / 1000.0 * SAMPLE_RATE)))
        self.realtime = realtime
        self.start: float | None = None

    @property
    def chunk_s(self) -> float:
        return self.chunk / SAMPLE_RATE

    def run(self, q: "queue.Queue[Chunk | None]", stop: threading.Event) -> None:
        x = self.audio.samples
        self.start = time.perf_counter()
        for i in range(0, len(x), self.chunk):
            if stop.is_set():
                break
            part = x[i : i + self.chunk]
            if self.realtime:
                wait = self.start + (i + len(part)) / SAMPLE_RATE - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            q.put(Chunk(part, time.perf_counter()))
        q.put(None)


class MicrophoneSource:
    """The default input device through PortAudio (``sounddevice``), ``chunk_ms`` blocks at 16 kHz mono."""

    def __init__(self, chunk_ms: float = 20.0, device: str | int | None = None):
        self.chunk = max(1, int(round(chunk_ms / 1000.0 * SAMPLE_RATE)))
        self.device = device
        self.start: float | None = None
        self._sd = microphone_module(device)

    @property
    def chunk_s(self) -> float:
        return self.chunk / SAMPLE_RATE

    def run(self, q: "queue.Queue[Chunk | None]", stop: threading.Event) -> None:
        def callback(data, frames, t, status):  # PortAudio's thread
            q.put(Chunk(np.array(data[:, 0], np.float32), time.perf_counter()))

        self.start = time.perf_counter()
        with self._sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=self.chunk,
                                  device=self.device, callback=callback):
            stop.wait()
        q.put(None)


def microphone_module(device=None):
    """sounddevice, once PortAudio and an input device are known to be there; else an AudioError naming --input."""
    hint = "play a recording instead with --input speech.wav"
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:  # OSError: the PortAudio library is missing
        raise AudioError(f"no microphone: PortAudio is not available ({str(e).splitlines()[0]}; on Debian or Ubuntu "
                         f"`apt install libportaudio2`); {hint}") from None
    try:
        sd.query_devices(device, kind="input")
    except Exception as e:  # noqa: BLE001 - PortAudioError, ValueError: no such device
        raise AudioError(f"no microphone: {str(e).splitlines()[0] or 'no input device'}; {hint}") from None
    return sd


# ------------------------------------------------------------------------------------------------ the loop
def run_live(session: LiveSession, source, sinks: Sequence[Callable[[list[LiveFrame]], None]] = (),
             stop: threading.Event | None = None, changes: Sequence[tuple[float, str]] = (),
             progress: Callable[[LiveSession], None] | None = None,
             taps: Sequence[Callable[[np.ndarray], None]] = ()) -> dict[str, Any]:
    """Run until the source ends or ``stop`` is set (Ctrl-C sets it too): chunks from ``source.run`` (in its own
    thread), one step per batch of queued chunks, the frames to every sink. ``changes``: scripted instruction
    changes, (seconds of audio, text); ``taps``: called with every chunk's samples (a recorder). Returns the timing
    (:meth:`LiveSession.timing`)."""
    stop = stop or threading.Event()
    q: "queue.Queue[Chunk | None]" = queue.Queue()
    th = threading.Thread(target=source.run, args=(q, stop), daemon=True, name="avitalk-live-source")
    script = sorted(changes)
    th.start()
    ended = False
    try:
        while not ended:
            try:
                item = q.get(timeout=0.5)
            except queue.Empty:
                if stop.is_set():
                    break
                continue
            items = [item]
            while True:  # everything queued: one step for all of it (catching up, never piling up)
                try:
                    items.append(q.get_nowait())
                except queue.Empty:
                    break
            frames = []
            for c in items:
                if c is None:
                    ended = True
                    break
                frames += session.push(c.samples, c.arrived)
                for tap in taps:
                    tap(c.samples)
                if script and script[0][0] <= session.encoder.samples_in / SAMPLE_RATE:
                    frames += session.step()  # the frames before the change keep the old style
                    while script and script[0][0] <= session.encoder.samples_in / SAMPLE_RATE:
                        session.set_instruction(script.pop(0)[1])
            frames += session.step()
            if frames:
                for sink in sinks:
                    sink(frames)
                if progress is not None:
                    progress(session)
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        stop.set()
    frames = session.finish()
    if frames:
        for sink in sinks:
            sink(frames)
    return session.timing(getattr(source, "chunk_s", None), getattr(source, "start", None))


class WavTap:
    """Writes every chunk the session hears to a 16-bit wav as it arrives (memory stays flat however long it runs)."""

    def __init__(self, path: Path):
        import soundfile as sf

        self.path = Path(path)
        self._f = sf.SoundFile(str(self.path), "w", samplerate=SAMPLE_RATE, channels=1, subtype="PCM_16")

    def __call__(self, samples: np.ndarray) -> None:
        self._f.write(np.asarray(samples, np.float32))

    def close(self) -> Audio:
        from avitalk import audio as audio_io

        self._f.close()
        return audio_io.load(self.path, min_duration_s=0.0, max_duration_s=float("inf"))


def record_to(out: Path, session: LiveSession, audio: Audio | None, timing: dict[str, Any], render: bool = True,
              size: int = 512, flame_model: str | None = None, extra: dict[str, Any] | None = None) -> list[str]:
    """Write ``flame.npz``, ``instruction.txt``, ``video.mp4`` (unless ``render`` is off) and ``run.json`` into the
    folder ``out`` (the caller's staging folder); returns the names written."""
    import platform

    import torch

    from avitalk import __version__
    from avitalk.io import atomic_write_json, atomic_write_text

    seq = session.sequence()
    seq.save(out / "flame.npz")
    atomic_write_text(out / "instruction.txt", session.instruction + "\n")
    names = ["instruction.txt", "flame.npz"]
    timings: dict[str, Any] = {"live": timing}
    if render and len(seq.expression):
        from avitalk.flame import FlameModel
        from avitalk.render import renderer_for_model
        from avitalk.render.video import write_video

        t = time.perf_counter()
        model = FlameModel.from_spec(flame_model or session.pipe.cfg.flame_model)
        with renderer_for_model(model, size=size) as r:
            write_video(out / "video.mp4", r.iter_frames(model.sequence_vertices(seq)), fps=seq.fps, audio=audio)
        timings["video_s"] = round(time.perf_counter() - t, 3)
        names.append("video.mp4")
    info = {"avitalk": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "checkpoint": session.pipe.source, "flame_model": str(flame_model or session.pipe.cfg.flame_model),
            "instruction": {"text": session.instruction, "source": "live",
                            "changes": [{"frame": f, "text": t, "by": b}
                                        for (f, t), b in zip(session.changes, session.authors)]},
            "stream": {"decoder": seq.meta["decoder"], "context_s": seq.meta["context_s"],
                       "lookahead_ms": session.lookahead * FRAME_S * 1000.0},
            "frames": len(seq.expression), "outputs": {"flame": ["flame.npz"], "video": names[2:],
                                                      "instruction": "instruction.txt"},
            **(extra or {}), "timings": timings}
    atomic_write_json(out / "run.json", info)
    return names + ["run.json"]
