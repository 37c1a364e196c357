"""`avitalk app`: a Gradio page for the edit loop — listen, read and edit the instruction, synthesize, compare.

The page's work is done by :class:`AppSession` (plain Python, tested without a browser); :func:`build_app` only lays
out components and wires them to it. Files the app writes live in one output folder, the only folder it serves.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avitalk.errors import AudioError, AvitalkError
from avitalk.types import Audio

log = logging.getLogger(__name__)

MAX_UPLOAD_MB = 50.0
MAX_DURATION_S = 60.0
MAX_VIDEOS = 3
LIVE_TIME_LIMIT_S = 600  # one browser's live session at most this long (a stream would otherwise hold the queue)


@dataclass
class AppSession:
    """What the page does, without the page. One synthesis at a time (the page queues requests)."""

    pipe: Any
    out_dir: Path
    max_upload_mb: float = MAX_UPLOAD_MB
    max_duration_s: float = MAX_DURATION_S
    size: int = 384
    history: list[dict[str, Any]] = field(default_factory=list)

    def load_speech(self, path: str | os.PathLike | None) -> Audio:
        from avitalk import audio as audio_io

        if not path:
            raise AudioError("upload or record some speech first")
        p = Path(path)
        if p.is_file() and p.stat().st_size > self.max_upload_mb * 1e6:
            raise AudioError(f"{p.name}: {p.stat().st_size / 1e6:.0f} MB is over the {self.max_upload_mb:g} MB limit")
        return audio_io.load(p, max_duration_s=self.max_duration_s)

    def listen(self, path: str | None, alternatives: int = 3, seed: int = 0) -> dict[str, Any]:
        """Stage 1: the instruction (greedy) plus sampled alternatives, each with its parsed fields."""
        a = self.load_speech(path)
        feats = self.pipe.encode(a)
        main = self.pipe.instruct(a, seed=seed, features=feats)
        heard = self.pipe.heard(a, features=feats)
        alts = self.pipe.instructions(a, alternatives, seed=seed + 1, features=feats) if alternatives > 0 else []
        seen, uniq = {main.text}, []
        for ins in alts:
            if ins.text not in seen:
                seen.add(ins.text)
                uniq.append(ins.text)
        return {"text": main.text, "parsed": main.to_dict(), "alternatives": uniq, "heard": heard,
                "threshold": self.pipe.heard_threshold}

    @staticmethod
    def rewrite(text: str, emotion: str | None, intensity: int | None) -> str:
        """Swap the sentence's emotion word (and intensity) for the chosen one, keeping the rest of the sentence."""
        from avitalk.vocab import load_vocabulary

        if not emotion:
            return text
        return load_vocabulary().replace_emotion(text, emotion, int(intensity) if intensity else None)

    @staticmethod
    def add_action(text: str, action: str | None, strength: float = 0.7) -> str:
        """Append a facial action phrase (from the vocabulary, worded for ``strength`` in 0..1) to the sentence."""
        from avitalk.vocab import load_vocabulary

        vocab = load_vocabulary()
        if not action:
            return text
        if action not in vocab.actions:
            raise AvitalkError(f"unknown facial action {action!r}")
        phrase = vocab.action_phrase(action, float(strength), np.random.default_rng(0))
        body = (text or "A person speaks").strip().rstrip(".")
        return f"{body}, and {phrase}." if " with " in body else f"{body} with {phrase}."

    @staticmethod
    def parsed_table(text: str | None) -> str:
        """The instruction's parsed fields as a compact Markdown table (what stage 2's vocabulary reads in the text);
        recomputed on every edit, no synthesis needed."""
        from avitalk.errors import InstructionError
        from avitalk.vocab import as_instruction

        try:
            ins = as_instruction(text or "")
        except InstructionError as e:
            return f"*{e}*"
        acts = ", ".join(f"{a.split('_', 1)[-1].replace('_', ' ')} ({d})" for a, d in ins.actions) or "none found"
        return ("| parsed | |\n|---|---|\n"
                f"| emotion | {ins.emotion or 'none found'} |\n| intensity | {ins.intensity or '-'} |\n"
                f"| facial actions | {acts} |")

    def history_choices(self) -> list[str]:
        return [f"#{h['index']}: {h['text'][:80]}" for h in self.history]

    def history_video(self, choice: str | None) -> str | None:
        """The first video of a history entry picked by its label ("#k: ...")."""
        if not choice or not choice.startswith("#"):
            return None
        k = int(choice[1:].split(":", 1)[0])
        return self.history[k]["videos"][0] if 0 <= k < len(self.history) else None

    def synthesize(self, path: str | None, text: str, samples: int = 1, seed: int = 0,
                   guidance_scale: float | None = None) -> dict[str, Any]:
        """Stage 2 for the (edited) text: videos with the speech, npz and glb per sample, a coefficient plot."""
        from avitalk.flame import FlameModel
        from avitalk.render import renderer_for_model
        from avitalk.render.gltf import export_glb
        from avitalk.render.video import write_video

        t0 = time.perf_counter()
        a = self.load_speech(path)
        samples = max(1, min(int(samples), MAX_VIDEOS))
        seqs = self.pipe.synthesize(a, text, num_samples=samples, seed=int(seed), guidance_scale=guidance_scale)
        run = Path(tempfile.mkdtemp(prefix=f"run{len(self.history):03d}-", dir=self.out_dir))
        model = FlameModel.from_spec(self.pipe.cfg.flame_model)
        videos, npzs, glbs = [], [], []
        first_video_s = None
        with renderer_for_model(model, size=self.size) as r:
            for k, seq in enumerate(seqs):
                npzs.append(seq.save(run / f"flame_{k}.npz"))
                write_video(run / f"video_{k}.mp4", r.iter_frames(model.sequence_vertices(seq)), fps=seq.fps, audio=a)
                videos.append(run / f"video_{k}.mp4")
                if first_video_s is None:
                    first_video_s = time.perf_counter() - t0
        for k, seq in enumerate(seqs):
            glbs.append(export_glb(seq, run / f"face_{k}.glb", model).path)
        plot = _plot(seqs, run / "coefficients.png")
        entry = {"index": len(self.history), "text": text, "samples": samples, "seed": int(seed),
                 "videos": [str(v) for v in videos], "first_video_s": first_video_s,
                 "total_s": time.perf_counter() - t0}
        self.history.append(entry)
        return {"videos": videos, "npz": npzs, "glb": glbs, "plot": plot, **entry}

    # ------------------------------------------------------------------ live (the browser's microphone)
    def live_chunk(self, state: "LiveState | None", chunk, text: str | None = None):
        """One block of the browser's microphone, ``(rate, samples)`` as Gradio streams it (int16 or float, mono or
        channels last). The first block starts a live session: with ``text`` when one is typed, else "A person
        speaks." and stage 1 re-reading the voice every few seconds. Returns ``(state, image, line)``: the newest frame
        drawn (None until the first one) and a line on the instruction in force."""
        if chunk is None:
            return state, None, self.live_line(state)
        rate, x = chunk
        x = np.asarray(x)
        if x.dtype.kind in "iu":
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
        x = np.asarray(x, np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        with _ONE_THREAD:  # a stream's small steps: one thread is fastest (docs/live.md); 34 ms a block against 63
            if state is None:
                state = self.live_start(text, int(rate))
            x = state.resample(x, int(rate))
            frames = state.session.feed(x)
            if state.rereader is not None:
                state.rereader(x)
            image = self._draw(frames[-1].motion) if frames else None
        return state, image, self.live_line(state)

    def live_start(self, text: str | None, rate: int) -> "LiveState":
        from avitalk.top.live import LiveSession, Rereader

        text = (text or "").strip() or None
        session = LiveSession(self.pipe, text).warm_up()
        rereader = Rereader(session, self.pipe) if text is None and self.pipe.instructor is not None else None
        return LiveState(session, rereader)

    def live_set(self, state: "LiveState | None", text: str) -> str:
        """A typed instruction: in force from the next frame (blended in); stage 1 stops re-reading."""
        if state is None:
            raise AvitalkError("start the microphone first (the instruction box sets where it starts)")
        state.session.set_instruction(text)
        return self.live_line(state)

    def live_stop(self, state: "LiveState | None") -> tuple[None, str]:
        """The microphone stopped: the session ends (what it made is dropped; `avitalk live --record` keeps it)."""
        if state is None:
            return None, ""
        if state.rereader is not None:
            state.rereader.close()
        state.session.finish()
        from avitalk.types import MOTION_FPS

        t = state.session.timing()
        lat = t.get("latency_ms", {})
        return None, (f"stopped after {t['frames']} frames ({t['frames'] / MOTION_FPS:.1f} s); latency median "
                      f"{lat.get('median', float('nan')):.0f} ms" if t.get("frames") else "stopped")

    @staticmethod
    def live_line(state: "LiveState | None") -> str:
        if state is None:
            return "*press the microphone's record button and speak*"
        s = state.session
        listening = state.rereader is not None and not s.user_set.is_set()
        by = {"start": "start", "user": "typed", "stage 1": "stage 1 heard"}[s.authors[-1]]
        r = state.rereader
        tail = (f" (stage 1 re-reads the last {r.window / r.rate:g} s of voice every {r.every / r.rate:g} s)"
                if listening else "")
        return f"**In force** ({by}): {s.instruction}{tail}"

    def _draw(self, motion: np.ndarray) -> np.ndarray:
        """One frame of the head, drawn by one renderer shared by every live session (a lock: one at a time)."""
        import torch

        from avitalk.flame import FlameModel
        from avitalk.render import renderer_for_model
        from avitalk.types import FlameSequence

        with _DRAW_LOCK:
            if getattr(self, "_live_renderer", None) is None:
                self._live_model = FlameModel.from_spec(self.pipe.cfg.flame_model)
                self._live_renderer = renderer_for_model(self._live_model, size=self.size)
            with torch.no_grad():
                seq = FlameSequence.from_motion(np.asarray(motion, np.float32)[None])
                return self._live_renderer.render(self._live_model.sequence_vertices(seq)[0])


class _OneThread:
    """Torch on one thread while any live block is worked on, the setting restored when none is: counted, so that
    overlapping sessions (two browsers) restore it once. Other work meanwhile (a synthesis) gets one thread too."""

    def __init__(self):
        self._lock, self._n, self._saved = threading.Lock(), 0, 1

    def __enter__(self):
        import torch

        with self._lock:
            if self._n == 0:
                self._saved = torch.get_num_threads()
                torch.set_num_threads(1)
            self._n += 1

    def __exit__(self, *exc):
        import torch

        with self._lock:
            self._n -= 1
            if self._n == 0:
                torch.set_num_threads(self._saved)


_ONE_THREAD = _OneThread()
_DRAW_LOCK = threading.Lock()


@dataclass
class LiveState:
    """One browser's live session: the stream, stage 1 re-reading it (or None), the resampler to 16 kHz."""

    session: Any
    rereader: Any = None
    _resampler: Any = None
    _rate: int = 0

    def resample(self, x: np.ndarray, rate: int) -> np.ndarray:
        from avitalk.types import SAMPLE_RATE

        if rate == SAMPLE_RATE:
            return x
        if self._resampler is None or rate != self._rate:
            import soxr

            self._resampler, self._rate = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32"), rate
        return self._resampler.resample_chunk(x)


def _plot(seqs, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avitalk.io import atomic_path

    s0 = seqs[0]
    main = np.argsort(-s0.expression.std(0))[:3]
    fig, axes = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
    t = np.arange(s0.num_frames) / s0.fps
    for k, s in enumerate(seqs):
        axes[0].plot(t, s.jaw_pose[:, 0], lw=1, label=f"sample {k}")
        for j, c in enumerate(main):
            axes[1].plot(t, s.expression[:, c], lw=1, color=f"C{j}", alpha=1.0 if k == 0 else 0.4,
                         label=f"expression {c}" if k == 0 else None)
    axes[0].set_ylabel("jaw opening (rad)")
    axes[1].set_ylabel("coefficient")
    axes[1].set_xlabel("time (s)")
    axes[0].legend(fontsize=7)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return path


def build_app(session: AppSession):
    """The Gradio Blocks page wired to ``session``."""
    import gradio as gr

    from avitalk.top.pipeline import describe_heard
    from avitalk.vocab import EMOTIONS, load_vocabulary

    def on_listen(path):
        try:
            r = session.listen(path)
        except AvitalkError as e:
            raise gr.Error(str(e))
        return r["text"], gr.update(choices=r["alternatives"], value=None), f"**Heard:** {describe_heard(r['heard'], r.get('threshold'))}"

    def on_pick(alt, text):
        return alt or text

    def on_rewrite(text, emotion, intensity):
        return session.rewrite(text, emotion, intensity)

    def on_add_action(text, action, strength):
        try:
            return session.add_action(text, action, strength)
        except AvitalkError as e:
            raise gr.Error(str(e))

    def on_synthesize(path, text, samples, seed, guidance, progress=gr.Progress()):
        if not text or not text.strip():
            raise gr.Error("the instruction is empty: click Listen or write one")
        progress(0.1, desc="synthesizing")
        try:
            r = session.synthesize(path, text, samples, seed, guidance)
        except AvitalkError as e:
            raise gr.Error(str(e))
        said = text if len(text) <= 70 else text[:67] + "..."
        vids = [gr.update(value=str(v), label=f"#{r['index']} sample {k}: {said}") for k, v in enumerate(r["videos"])]
        vids += [gr.update(value=None, label=f"sample {k}") for k in range(len(r["videos"]), MAX_VIDEOS)]
        files = [str(p) for p in r["npz"] + r["glb"] + r["videos"]]
        rows = [[h["index"], h["text"], h["samples"], h["seed"], round(h["first_video_s"], 2)] for h in session.history]
        choices = session.history_choices()
        return (*vids, str(r["plot"]), files, rows, gr.update(choices=choices), gr.update(choices=choices))

    def on_live_chunk(chunk, state, text):
        try:
            state, image, line = session.live_chunk(state, chunk, text)
        except AvitalkError as e:
            raise gr.Error(str(e))
        return state, (gr.update() if image is None else image), line

    def on_live_set(state, text):
        try:
            return session.live_set(state, text)
        except AvitalkError as e:
            raise gr.Error(str(e))

    with gr.Blocks(title="avitalk") as page:
        gr.Markdown("# avitalk\nSpeech -> an instruction you can read and edit -> a 3D talking face. "
                    "The default model is trained on synthetic speech and on RAVDESS actors (its weights: CC BY-NC-SA 4.0).")
        with gr.Tab("Edit", id="edit"):
            with gr.Row():
                with gr.Column():
                    speech = gr.Audio(label="speech (upload or record)", type="filepath", sources=["upload", "microphone"],
                                      elem_id="speech")
                    listen = gr.Button("Listen", variant="primary", elem_id="listen")
                with gr.Column():
                    text = gr.Textbox(label="instruction (edit me)", lines=3, elem_id="instruction")
                    parsed = gr.Markdown(session.parsed_table(""), elem_id="parsed")
                    heard = gr.Markdown("", elem_id="heard")
                    alts = gr.Dropdown(label="alternatives (sampled)", choices=[], interactive=True)
                    with gr.Row():
                        emotion = gr.Dropdown(label="emotion", choices=list(EMOTIONS), value=None)
                        intensity = gr.Dropdown(label="intensity", choices=[1, 2, 3], value=None)
                        rewrite = gr.Button("Rewrite")
                    with gr.Row():
                        action = gr.Dropdown(label="facial action", choices=list(load_vocabulary().actions), value=None)
                        strength = gr.Slider(0.1, 1.0, value=0.7, step=0.1, label="strength")
                        add = gr.Button("Add action")
            with gr.Row():
                samples = gr.Slider(1, MAX_VIDEOS, value=1, step=1, label="samples")
                seed = gr.Number(value=0, precision=0, label="seed")
                guidance = gr.Slider(0.0, 4.0, value=1.5, step=0.1, label="guidance scale")
                synth = gr.Button("Synthesize", variant="primary", elem_id="synthesize")
            with gr.Row():  # the first sample large, the others beside it
                videos = [gr.Video(label="sample 0", elem_id="video0", height=520, scale=3)]
                with gr.Column(scale=1):
                    videos += [gr.Video(label=f"sample {k}", elem_id=f"video{k}", height=250) for k in range(1, MAX_VIDEOS)]
            plot = gr.Image(label="jaw and main expression coefficients", type="filepath")
            files = gr.File(label="downloads (npz, glb, mp4)", file_count="multiple")
            history = gr.Dataframe(headers=["#", "instruction", "samples", "seed", "first video (s)"], label="history")
            gr.Markdown("Compare two entries of the history side by side:")
            with gr.Row():
                with gr.Column():
                    pick_a = gr.Dropdown(label="entry", choices=[], interactive=True)
                    video_a = gr.Video(label="entry A")
                with gr.Column():
                    pick_b = gr.Dropdown(label="entry", choices=[], interactive=True)
                    video_b = gr.Video(label="entry B")
        with gr.Tab("Live", id="live"):
            gr.Markdown("Speak and the face follows, a frame for each block of sound the browser sends (about ten a "
                        "second; `avitalk live --serve` draws all 25). With no instruction, stage 1 reads your voice "
                        "every 4 s and changes the face when it hears another emotion; type one to take over.")
            with gr.Row():
                with gr.Column():
                    mic = gr.Audio(label="microphone", sources=["microphone"], streaming=True, type="numpy",
                                   elem_id="live_mic")
                    live_text = gr.Textbox(label="instruction (empty: stage 1 reads the voice)", lines=2,
                                           elem_id="live_instruction")
                    live_use = gr.Button("Use this instruction", elem_id="live_use")
                    live_info = gr.Markdown(session.live_line(None), elem_id="live_in_force")
                with gr.Column():
                    face = gr.Image(label="the face, live", type="numpy", elem_id="live_face", height=420)
            live_state = gr.State(None)
        listen.click(on_listen, [speech], [text, alts, heard])
        text.change(session.parsed_table, [text], [parsed], show_progress="hidden", queue=False)
        alts.change(on_pick, [alts, text], [text])
        rewrite.click(on_rewrite, [text, emotion, intensity], [text])
        add.click(on_add_action, [text, action, strength], [text])
        synth.click(on_synthesize, [speech, text, samples, seed, guidance], [*videos, plot, files, history, pick_a, pick_b])
        pick_a.change(session.history_video, [pick_a], [video_a])
        pick_b.change(session.history_video, [pick_b], [video_b])
        mic.stream(on_live_chunk, [mic, live_state, live_text], [live_state, face, live_info], stream_every=0.1,
                   time_limit=LIVE_TIME_LIMIT_S, concurrency_limit=None, show_progress="hidden")
        mic.stop_recording(session.live_stop, [live_state], [live_state, live_info])
        live_use.click(on_live_set, [live_state, live_text], [live_info])
    page.queue(default_concurrency_limit=1)
    return page
