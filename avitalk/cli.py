"""The ``avitalk`` command. Every subcommand has ``--help``; errors print one line and exit non-zero."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .types import SAMPLE_RATE

from .errors import AppError, AvitalkError, CheckpointError

app = typer.Typer(
    name="avitalk",
    help="Speech in, expressive 3D talking face out, through an editable audio-visual instruction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns, flags without placeholders
)
flame_app = typer.Typer(rich_markup_mode=None, help="FLAME model files: convert official models safely, inspect model files.", no_args_is_help=True)
app.add_typer(flame_app, name="flame")
train_app = typer.Typer(rich_markup_mode=None, help="Train the models (CPU, one GPU, or many with `accelerate launch`).", no_args_is_help=True)
app.add_typer(train_app, name="train")
data_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                       help="Datasets: generate SynthTalk, import MEAD / RAVDESS / labelled speech, statistics.")
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"avitalk {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="Print avitalk's version and exit.")) -> None:
    """Speech in, expressive 3D talking face out, through an editable audio-visual instruction."""


MAX_SPEECH_S = 600.0  # the default --max-duration of the commands that read speech (10 minutes)


def _fail(msg: str, code: int = 2) -> None:
    typer.echo("error: " + " ".join(msg.split()), err=True)
    raise typer.Exit(code)


def _check_output(path: Path, overwrite: bool) -> None:
    if path.exists() and path.is_dir():
        _fail(f"{path}: is a directory")
    if path.exists() and not overwrite:
        _fail(f"{path}: already exists (use --overwrite to replace it)")


@app.command()
def head(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the stand-in head's files."),
    size: int = typer.Option(384, help="Size in pixels of each contact-sheet tile."),
) -> None:
    """Write the procedural stand-in head (standin.npz, FLAME format) and a contact sheet PNG of its expressions."""
    import numpy as np
    import torch

    from .flame import FlameModel
    from .flame.standin import expression_from_activations as acts
    from .render import renderer_for_model
    from .render.sheet import grid_image, save_png

    model = FlameModel.standin()
    out.mkdir(parents=True, exist_ok=True)
    npz = model.save(out / "standin.npz")
    poses = [
        ("neutral", {}, 0.0),
        ("jaw open", {}, 0.3),
        ("smile", {"AU12_lip_corner_pull": 1.0, "AU06_cheek_raise": 0.8, "AU25_lips_part": 0.4}, 0.05),
        ("brow raise", {"AU01_inner_brow_raise": 1.0, "AU02_outer_brow_raise": 1.0, "AU05_upper_lid_raise": 0.6}, 0.0),
        ("brow lower", {"AU04_brow_lower": 1.0, "AU07_lid_tighten": 0.5}, 0.0),
        ("blink", {"AU43_eyes_closed": 1.0}, 0.0),
    ]
    exp = torch.tensor(np.stack([acts(a) for _, a, _ in poses]))
    jaw = torch.zeros(len(poses), 3)
    jaw[:, 0] = torch.tensor([j for *_, j in poses])
    with torch.no_grad():
        verts = model(expression=exp, jaw_pose=jaw).numpy()
    with renderer_for_model(model, size=size) as r:
        imgs = r.render_frames(verts)
    png = save_png(out / "standin_sheet.png", grid_image(list(imgs), [p[0] for p in poses], cols=3))
    d = model.describe()
    typer.echo(f"stand-in head: {d['vertices']} vertices, {d['faces']} faces, {d['n_exp']} expression components")
    typer.echo(f"wrote {npz}\nwrote {png}")


@app.command()
def render(
    flame: Path = typer.Argument(..., help="FlameSequence .npz (expression, jaw_pose, fps)."),
    output: Path = typer.Option(..., "--out", "-o", help="Output .mp4 file."),
    audio: Optional[Path] = typer.Option(None, "--audio", "-a", help="Speech to mux into the video (any audio file)."),
    flame_model: Optional[str] = typer.Option(None, "--flame-model", help="Model .npz (default: the stand-in head)."),
    size: int = typer.Option(512, help="Width and height of the video in pixels (even)."),
    overwrite: bool = typer.Option(False, help="Replace the output if it exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    max_duration: float = typer.Option(MAX_SPEECH_S, "--max-duration", min=0.1, help="Longest accepted --audio in seconds."),
) -> None:
    """Render a FlameSequence to an mp4 (H.264 + AAC speech) with the stand-in head or your FLAME model."""
    from tqdm import tqdm

    from . import audio as audio_io
    from .flame import FlameModel
    from .render import renderer_for_model
    from .render.video import write_video
    from .types import FlameSequence

    if size % 2 or size < 16:
        _fail(f"--size must be an even number of pixels >= 16, got {size}")
    _check_output(output, overwrite)
    seq = FlameSequence.load(flame)
    speech = audio_io.load(audio, max_duration_s=max_duration) if audio is not None else None
    model = FlameModel.from_spec(flame_model)
    verts = model.sequence_vertices(seq)
    with renderer_for_model(model, size=size) as r:
        frames = tqdm(r.iter_frames(verts), total=len(verts), unit="frame", desc="render", disable=quiet or None)
        write_video(output, frames, fps=seq.fps, audio=speech)
    typer.echo(f"wrote {output} ({len(verts)} frames, {seq.duration:.2f} s at {seq.fps:g} fps{', with audio' if speech else ''})")


@app.command("app")
def app_cmd(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Pipeline checkpoint (default: the embedded one)."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (localhost unless you say otherwise)."),
    port: int = typer.Option(7860, help="Port."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the page's outputs (default: a temporary one)."),
    max_upload_mb: float = typer.Option(50.0, help="Largest accepted upload (MB)."),
    max_duration: float = typer.Option(60.0, help="Longest accepted speech (s)."),
) -> None:
    """A web page for the edit loop: listen, edit the instruction, synthesize, compare (Gradio)."""
    import contextlib
    import os
    import signal
    import tempfile
    import threading

    from .app import AppSession, build_app
    from .pipeline import AVITalkingPipeline

    _check_port(host, port)  # before anything loads: a port in use is one line naming --port
    # a plain `kill` ends the app like Ctrl-C, and the temporary files go. While it loads, a signal interrupts the
    # loading; once it serves, a signal only sets `stopping`, which the main thread waits on: an exception raised from a
    # signal handler can land in a finalizer (asyncio's event loop __del__), where Python ignores it and the app would
    # never stop
    stopping, serving = threading.Event(), threading.Event()

    def stop(signum, frame):  # noqa: ARG001
        stopping.set()
        if not serving.is_set():
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a background job of a script)
    with contextlib.ExitStack() as stack:
        if out is None:  # removed, with the uploads Gradio keeps, when the app stops
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="avitalk-app-")))
            os.environ.setdefault("GRADIO_TEMP_DIR", str(out_dir / "uploads"))
        else:
            out_dir = out
            out_dir.mkdir(parents=True, exist_ok=True)
        try:
            pipe = AVITalkingPipeline.from_pretrained(checkpoint).warm_up()
            session = AppSession(pipe, out_dir, max_upload_mb=max_upload_mb, max_duration_s=max_duration)
            typer.echo(f"avitalk app on http://{host}:{port} (outputs in {out_dir}{', removed on exit' * (out is None)})")
            page = build_app(session)
            try:
                page.launch(server_name=host, server_port=port, allowed_paths=[str(out_dir)],
                            max_file_size=f"{int(max_upload_mb)}mb", show_error=True, prevent_thread_lock=True)
            except OSError as e:  # taken between the check and the launch: Gradio's message names its own variable
                raise AppError(f"{host}:{port}: cannot serve there ({e.strerror or 'in use'}); choose another port "
                               "with --port") from e
            serving.set()
            stack.callback(page.close)
            while not stopping.wait(0.2):
                pass
        except KeyboardInterrupt:
            pass
        typer.echo("stopped", err=True)


def _check_port(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as e:
            raise AppError(f"{host}:{port}: cannot serve there ({e.strerror or e}); choose another port with "
                           "--port") from e


@app.command("export")
def export_cmd(
    flame: Path = typer.Argument(..., help="FlameSequence .npz (from avitalk run)."),
    output: Path = typer.Option(..., "--out", "-o", help="Output .glb file."),
    audio: Optional[Path] = typer.Option(None, "--audio", "-a", help="Speech to save next to it (OUT.wav), named in the file."),
    layout: str = typer.Option("auto", help="morph (expression + jaw morph targets), baked (exact per-frame shapes) or auto."),
    flame_model: Optional[str] = typer.Option(None, "--flame-model", help="Model .npz (default: the stand-in head)."),
    overwrite: bool = typer.Option(False, help="Replace the output if it exists."),
    max_duration: float = typer.Option(MAX_SPEECH_S, "--max-duration", min=0.1, help="Longest accepted --audio in seconds."),
) -> None:
    """Export a FlameSequence as glTF 2.0 (.glb): the head with morph targets and a 25 fps animation."""
    from . import audio as audio_io
    from .flame import FlameModel
    from .render.gltf import export_glb
    from .types import FlameSequence

    if layout not in ("auto", "morph", "baked"):
        _fail(f"--layout must be auto, morph or baked, got {layout!r}")
    if output.suffix.lower() != ".glb":
        _fail(f"{output}: the output must be a .glb file")
    _check_output(output, overwrite)
    seq = FlameSequence.load(flame)
    speech = audio_io.load(audio, max_duration_s=max_duration) if audio is not None else None
    wav = output.with_suffix(".wav")
    if speech is not None:
        _check_output(wav, overwrite)
    info = export_glb(seq, output, FlameModel.from_spec(flame_model), layout=layout,
                      audio_file=wav.name if speech is not None else None)
    if speech is not None:
        audio_io.save_wav(wav, speech)
    typer.echo(f"wrote {output} ({info.bytes / 1e6:.1f} MB, {info.layout} layout, {info.targets} morph targets, "
               f"{info.frames} frames; largest vertex error vs FLAME {info.max_error_mm:.2f} mm)"
               + (f" and {wav}" if speech is not None else ""))


@flame_app.command("convert")
def flame_convert(
    pkl: Path = typer.Argument(..., help="Official FLAME model .pkl (FLAME 2020 / 2023 / 2023 Open)."),
    out: Path = typer.Argument(..., help="Output .npz in avitalk's model format."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="FLAME_masks.pkl with the vertex regions."),
    n_shape: Optional[int] = typer.Option(None, help="Identity components in shapedirs (default: 300 when >= 400)."),
    overwrite: bool = typer.Option(False, help="Replace the output if it exists."),
) -> None:
    """Convert an official FLAME .pkl safely (restricted unpickler; chumpy not needed) into our .npz format."""
    from .flame import FlameModel
    from .flame.convert import convert_flame_pkl

    _check_output(out, overwrite)
    path = convert_flame_pkl(pkl, out, masks_path=masks, n_shape=n_shape)
    d = FlameModel.load(path).describe()
    typer.echo(f"wrote {path}: {d['vertices']} vertices, {d['n_shape']} shape + {d['n_exp']} expression components, regions: {', '.join(d['regions']) or 'none'}")


@flame_app.command("info")
def flame_info(
    model: str = typer.Argument("standin", help="Model .npz, or 'standin'."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Describe a model file: vertices, faces, components, joints, regions."""
    from .flame import FlameModel

    d = FlameModel.from_spec(model).describe()
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    for k, v in d.items():
        typer.echo(f"{k:>14}: {v}")


@data_app.command("synth")
def data_synth(
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to create (or complete: finished clips are kept)."),
    clips: int = typer.Option(200, "--clips", "-n", min=1, help="Number of clips."),
    seed: int = typer.Option(0, help="Random seed: the same seed gives the same corpus."),
    workers: Optional[int] = typer.Option(None, help="Processes (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Generate a SynthTalk corpus: espeak-ng speech, ground-truth FLAME motion and MeadText-style instructions."""
    import time

    from .data.synthtalk import generate

    if out.exists() and not out.is_dir():
        _fail(f"{out}: exists and is not a folder")
    t = time.perf_counter()
    manifest = generate(out, clips, seed=seed, workers=workers, progress=not quiet)
    dt = time.perf_counter() - t
    typer.echo(f"wrote {manifest} ({clips} clips in {dt:.1f} s, {clips / dt:.1f} clips/s)")


@data_app.command("say")
def data_say(
    text: str = typer.Argument(..., help="The sentence to speak."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .wav file."),
    emotion: str = typer.Option("happy", help="angry, contempt, disgusted, fear, happy, neutral, sad or surprised."),
    intensity: int = typer.Option(3, min=1, max=3, help="1 weak, 2 medium, 3 strong."),
    speaker: Optional[str] = typer.Option(None, help="SynthTalk speaker (default: an unseen test speaker)."),
    seed: int = typer.Option(0, help="Seed for the speaker's small variations."),
    overwrite: bool = typer.Option(False, help="Replace the output if it exists."),
) -> None:
    """Speak one sentence with a SynthTalk voice and emotion (espeak-ng); also writes the ground-truth motion and
    instruction next to it (OUT.flame.npz, OUT.json)."""
    from .data.synthtalk import say
    from .io import atomic_write_json
    from .types import Audio

    _check_output(out, overwrite)
    clip = say(text, emotion, intensity, speaker, seed)
    from . import audio as audio_io

    audio_io.save_wav(out, Audio(clip["audio"], SAMPLE_RATE, str(out)))
    clip["sequence"].save(out.with_suffix(".flame.npz"))
    atomic_write_json(out.with_suffix(".json"), clip["record"])
    typer.echo(f"wrote {out} ({len(clip['audio']) / SAMPLE_RATE:.2f} s, {emotion} {intensity}, speaker {clip['record']['speaker']})")
    typer.echo(f"reference instruction: {clip['record']['instructions'][0]}")


@data_app.command("stats")
def data_stats(
    root: Path = typer.Argument(..., help="Dataset folder (with manifest.jsonl)."),
    plot: Optional[Path] = typer.Option(None, help="PNG with a few clips' jaw and expression curves (default: ROOT/stats.png)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    learnability: bool = typer.Option(False, help="Also run the learnability checks (emotion from audio, jaw vs loudness)."),
) -> None:
    """Counts per split / emotion / intensity / speaker, durations, and a plot of a few clips."""
    from .data.manifest import read_manifest, stats
    from .data.plots import plot_clips

    clips = read_manifest(root)
    st = stats(clips)
    if learnability:
        from .data.learnability import emotion_from_audio, jaw_envelope_correlation

        emo = emotion_from_audio(root, clips)
        st["learnability"] = {
            "emotion_from_audio_test_accuracy": round(emo["accuracy"], 4),
            "chance": emo["chance"],
            "per_emotion": {k: round(v, 3) for k, v in emo["per_emotion"].items()},
            "jaw_vs_loudness_r": {k: round(v, 4) if isinstance(v, float) else v for k, v in jaw_envelope_correlation(root, clips).items()},
        }
    seen: dict[str, object] = {}
    for c in clips:
        seen.setdefault(c.emotion, c)
    png = plot_clips(root, list(seen.values())[:4], plot or root / "stats.png")
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    typer.echo(f"{st['clips']} clips, {st['hours']} h, duration {st['duration_s']['min']}-{st['duration_s']['max']} s (median {st['duration_s']['median']})")
    for key in ("split", "emotion", "intensity", "speakers"):
        typer.echo(f"{key:>10}: " + ", ".join(f"{k} {v}" for k, v in st[key].items()))
    if "learnability" in st:
        lr = st["learnability"]
        typer.echo(f"emotion from audio on test speakers: {lr['emotion_from_audio_test_accuracy']:.1%} (chance {lr['chance']:.1%})")
        typer.echo(f"jaw opening vs loudness: mean r = {lr['jaw_vs_loudness_r']['mean_r']:.3f}")
    typer.echo(f"wrote {png}")


@data_app.command("ravdess")
def data_ravdess(
    root: Path = typer.Argument(..., help="Your RAVDESS folder (Actor_XX/*.wav, *.flac or *.mp4)."),
    fits: Optional[Path] = typer.Option(None, help="Folder of per-clip FLAME fits (.npz named like the clip), e.g. "
                                        "from EMOCA. Without it: labelled speech only (no motion), for stage 1."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    openface: Optional[Path] = typer.Option(None, help="Folder of per-clip OpenFace CSVs (action-unit intensities)."),
    test_actors: str = typer.Option("23,24", help="Comma-separated test actors ('none' for no test split)."),
    val_actors: str = typer.Option("21,22", help="Comma-separated validation actors ('none' for none)."),
) -> None:
    """Import RAVDESS speech into avitalk's dataset format (actor-disjoint splits); with --fits, with motion."""
    from .data.real import import_ravdess

    def ints(s: str) -> tuple[int, ...]:
        if s.strip().lower() in ("", "none"):
            return ()
        try:
            return tuple(int(x) for x in s.split(",") if x.strip())
        except ValueError:
            _fail(f"{s!r}: expected comma-separated actor numbers, e.g. 23,24, or none")
    m = import_ravdess(root, fits, out, openface, ints(test_actors), ints(val_actors))
    _report_import(m)


@data_app.command("speech")
def data_speech(
    root: Path = typer.Argument(..., help="A folder of speech clips that share one label (wav, flac, mp3, m4a, ogg)."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    emotion: str = typer.Option("neutral", help="The clips' emotion (read speech: neutral)."),
    intensity: int = typer.Option(2, help="The clips' intensity, 1-3."),
    source: str = typer.Option("speech", help="The corpus's name, kept in the manifest (e.g. librispeech)."),
    holdout: float = typer.Option(0.0, help="Share of speakers put in test (and as many in val); 0: all in train."),
) -> None:
    """Import speech with one label (e.g. plain read English as neutral), audio only, for stage 1. The speaker is
    the file name's part before the first - or _ (LibriSpeech: SPEAKER-CHAPTER-UTTERANCE.flac), else its folder."""
    from .data.real import import_speech

    _report_import(import_speech(root, out, emotion, intensity, source, holdout))


@data_app.command("mead")
def data_mead(
    root: Path = typer.Argument(..., help="Your MEAD folder (<ID>/audio/<emotion>/level_<n>/<NNN>.m4a)."),
    fits: Path = typer.Option(..., help="Folder of per-clip FLAME fits named like M012_front_neutral_level1_017.npz."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write."),
    openface: Optional[Path] = typer.Option(None, help="Folder of per-clip OpenFace CSVs (action-unit intensities)."),
    test_speakers: Optional[str] = typer.Option(None, help="Comma-separated test speaker IDs (default: 10% by hash)."),
    val_speakers: Optional[str] = typer.Option(None, help="Comma-separated validation speaker IDs."),
) -> None:
    """Import MEAD audio with your FLAME fits into avitalk's dataset format (speaker-disjoint splits)."""
    from .data.real import import_mead

    ids = lambda s: tuple(x.strip() for x in s.split(",") if x.strip()) if s else None  # noqa: E731
    m = import_mead(root, fits, out, openface, ids(test_speakers), ids(val_speakers))
    _report_import(m)


def _load_config(path: Path, overrides: list[str] | None):
    """The config checked against the schema (avitalk/config.py): a misspelt key is one error line naming it."""
    from .config import load_config

    return load_config(path, overrides)


@train_app.command("stage2")
def train_stage2_cmd(
    config: Path = typer.Option(Path("tiny"), "--config", "-c", help="YAML config, or a packaged one by name: tiny, base, paper."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (manifest.jsonl)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder."),
    phase: str = typer.Option("all", help="lipsync, prior or all."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint folder's last state."),
    evaluate: bool = typer.Option(False, help="Measure on the test split afterwards (metrics.json)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Config overrides, e.g. stage2.train.lipsync.steps=200."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train stage 2: lip-sync pretraining (style encoder + decoder), then the diffusion prior."""
    from avitalk.stage2_synthesis.train import train_stage2

    if phase not in ("lipsync", "prior", "all"):
        _fail(f"--phase must be lipsync, prior or all, got {phase!r}")
    cfg = _load_config(config, set_)
    r = train_stage2(cfg, data, out, phase=phase, resume=resume, progress=not quiet)
    t = r["timings"]
    typer.echo("trained stage 2 in " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in t.items()) + f" -> {out}")
    if evaluate:
        from avitalk.eval.stage2 import evaluate_stage2

        from .io import atomic_write_json

        m = evaluate_stage2(out, data)
        atomic_write_json(out / "metrics.json", m)
        typer.echo(json.dumps({k: m[k] for k in ("lve_mm", "emotion_accuracy", "diversity", "speed")}, indent=2))


@train_app.command("stage1")
def train_stage1_cmd(
    config: Path = typer.Option(Path("tiny"), "--config", "-c", help="YAML config, or a packaged one by name: tiny, base, paper."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (manifest.jsonl)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder."),
    resume: bool = typer.Option(False, help="Reuse the checkpoint folder's trained tokenizer and LM."),
    evaluate: bool = typer.Option(False, help="Measure on the test split afterwards (metrics.json)."),
    extra_data: Optional[list[Path]] = typer.Option(None, "--extra-data", help="More training data, e.g. labelled real "
                                                    "speech without motion (avitalk data ravdess ... without --fits); repeatable."),
    exclude_speakers: Optional[str] = typer.Option(None, help="Comma-separated speakers left out of training (folds)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Config overrides, e.g. stage1.train.steps=200."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train stage 1: tokenizer + tiny LM (embedded default), then Q-Former, projection and LoRA."""
    from avitalk.eval.stage1 import evaluate_stage1
    from avitalk.stage1_instruct.train import train_stage1

    for d in extra_data or ():
        if not (d / "manifest.jsonl").is_file():
            _fail(f"--extra-data {d}: no manifest.jsonl (not a dataset folder)")
    cfg = _load_config(config, set_)
    excl = tuple(x.strip() for x in (exclude_speakers or "").split(",") if x.strip())
    r = train_stage1(cfg, data, out, resume=resume, progress=not quiet, extra_data=tuple(extra_data or ()),
                     exclude_speakers=excl)
    typer.echo("trained stage 1 in " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in r["timings"].items()) + f" -> {out}")
    if evaluate:
        from .io import atomic_write_json

        m = evaluate_stage1(out, data)
        atomic_write_json(out / "metrics.json", m)
        typer.echo(json.dumps({k: m[k] for k in ("with_speech", "ablation_speech_tokens_removed", "speed")}, indent=2))


@app.command()
def instruct(
    speech: Path = typer.Argument(..., help="Speech file (wav, flac, ogg, mp3, m4a...)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Pipeline or stage-1 checkpoint folder (default: the embedded one)."),
    samples: int = typer.Option(1, "--samples", "-n", min=1, max=20, help="How many instructions (sampled when > 1)."),
    seed: int = typer.Option(0, help="Seed for sampling."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON with the parsed fields."),
    max_duration: float = typer.Option(30.0, "--max-duration", min=0.1, help="Longest accepted speech in seconds "
                                       "(stage 1 reads at most the first 30 s)."),
    emotion_guidance: _EmotionGuidance = None,
) -> None:
    """Listen to speech and write the audio-visual instruction(s) (stage 1 only; at most 30 s of speech)."""
    from . import audio as audio_io

    speech_audio = audio_io.load(speech, max_duration_s=max_duration)  # longer than 30 s: the first 30 s are read
    if checkpoint is not None and (checkpoint / "stage1.yaml").is_file():  # a folder from `avitalk train stage1`
        from avitalk.stage1_instruct.instructor import Instructor

        model = Instructor.load(checkpoint)
        model.emotion_guidance = emotion_guidance
        from .encoders import audio_encoder_from_config

        enc = audio_encoder_from_config(model.cfg.audio_encoder)
        feats = enc.encode(speech_audio)
    else:
        from .pipeline import AVITalkingPipeline

        pipe = AVITalkingPipeline.from_pretrained(checkpoint)
        if pipe.instructor is None:
            raise CheckpointError(f"{pipe.source}: this checkpoint has no stage 1; give the instruction yourself")
        model = pipe.instructor
        model.emotion_guidance = emotion_guidance
        enc = pipe.audio_encoder
        feats = enc.encode(speech_audio)
    ins = model.instruct(speech_audio, feats, num_samples=samples, seed=seed, encoder=enc)
    heard = model.heard(speech_audio, feats, enc)
    if as_json:
        typer.echo(json.dumps([{**i.to_dict(), "heard": _heard_json(heard)} for i in ins], indent=2))
    else:
        for i in ins:
            typer.echo(i.text)
        if heard is not None:
            from .pipeline import describe_heard

            typer.echo(f"heard: {describe_heard(heard, None if model.reader is None else model.reader.threshold)}",
                       err=True)


@app.command("eval")
def eval_cmd(
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (manifest.jsonl)."),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder (metrics.json, report.md, plots)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Pipeline checkpoint (default: the embedded one)."),
    split: str = typer.Option("test", help="Which split to evaluate."),
    samples: int = typer.Option(10, min=2, max=50, help="Prior samples per clip for diversity."),
    limit: Optional[int] = typer.Option(None, min=1, help="Evaluate only the first N clips."),
    inception: Optional[Path] = typer.Option(None, help="TorchScript Inception file for FID/KID on rendered frames."),
    syncnet: Optional[Path] = typer.Option(None, help="SyncNet syncnet_v2.model: image-based LSE-D/C on rendered crops."),
    syncnet_crop: str = typer.Option("face", help="SyncNet crop: 'face' (syncnet_python's face-track box) or 'mouth'."),
    seed: int = typer.Option(0, help="Seed."),
    real: bool = typer.Option(False, "--real", help="Real-speech metrics (no motion needed): emotion + confusion, "
                              "mouth vs loudness, silence rest, bilabial closure. Automatic when no clip has motion."),
    speakers: Optional[str] = typer.Option(None, help="With --real: only these speakers (comma-separated)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Benchmark a checkpoint on a dataset split: FID, KID, diversity, LSE-D/C, LVE, MVE, FDD, emotion accuracy; on
    labelled real speech without motion (--real): emotion, mouth vs loudness, silence rest, bilabial closure."""
    from avitalk.eval.benchmark import ROW_NAMES, run_benchmark, write_report

    from .flame import FlameModel
    from .pipeline import AVITalkingPipeline

    if not (data / "manifest.jsonl").is_file():
        _fail(f"{data}: no manifest.jsonl (not a dataset folder)")
    from .data.manifest import read_manifest

    clips = read_manifest(data)
    if real or not any(c.flame and c.extra.get("has_motion", True) for c in clips):
        from avitalk.eval.real_speech import evaluate_real_speech, write_real_report

        if out.exists() and not out.is_dir():
            _fail(f"{out}: exists and is not a folder")
        spk = [s.strip() for s in speakers.split(",") if s.strip()] if speakers else None
        if split != "all" and not any(c.split == split for c in clips):
            _fail(f"{data}: no clips in split {split!r} (use --split all, or train / val / test)")
        pipe = AVITalkingPipeline.from_pretrained(checkpoint).warm_up()
        res = evaluate_real_speech(pipe, data, split, limit, spk, seed, progress=not quiet)
        write_real_report(res, out)
        e, m = res["emotion"], res["mouth_stage1"]
        typer.echo(f"emotion named right: {e['accuracy']:.1%} of {res['clips']} clips (chance {e['chance']:.1%})")
        r = res["reading"]
        prec = "none named" if r["non_neutral_precision"] is None else f"{r['non_neutral_precision']:.1%} right"
        typer.echo(f"written neutral: {r['written_neutral']:.1%}; most written: {r['most_written'][0]} "
                   f"{r['most_written'][1]:.1%}; naming an emotion: {r['non_neutral_share']:.1%} ({prec})"
                   + (f"; calibration error {r['ece']:.3f}" if "ece" in r else ""))
        if r["one_emotion_for_all"]:
            typer.echo(f"warning: {r['most_written'][0]} is written for {r['most_written'][1]:.0%} of the clips, "
                       f"{r['most_written_labelled']:.0%} are labelled so", err=True)
        typer.echo(f"mouth vs loudness r (median): {m['jaw_loudness_r']['median']:.3f}; silence-rest ratio (median): "
                   f"{m['silence_rest_ratio']['median']:.3f}")
        if "bilabial" in m:
            b = m["bilabial"]
            typer.echo(f"bilabial closure: {b['bilabial_closure_rate']:.1%} of {b['bilabials']}; open vowels open: "
                       f"{b['open_vowel_open_rate']:.1%} of {b['open_vowels']}")
        typer.echo(f"wrote {out}/ (real_speech.md, real_speech.json, confusion.png"
                   + (", reliability.png, coverage.png)" if "ece" in r else ")"))
        return
    for name, f in (("--inception", inception), ("--syncnet", syncnet)):
        if f is not None and not f.is_file():
            _fail(f"{name} {f}: no such file (leave the option out to skip what needs it)")
    if out.exists() and not out.is_dir():
        _fail(f"{out}: exists and is not a folder")
    if syncnet_crop not in ("face", "mouth"):
        _fail(f"--syncnet-crop {syncnet_crop!r}: choose 'face' or 'mouth'")
    pipe = AVITalkingPipeline.from_pretrained(checkpoint).warm_up()
    run = run_benchmark(pipe, data, split, samples, limit, seed, inception=str(inception) if inception else None,
                        syncnet=str(syncnet) if syncnet else None, progress=not quiet, syncnet_crop=syncnet_crop)
    if run is None:  # not the main process of an `accelerate launch` run: it reports
        return
    write_report(run, out, FlameModel.from_spec(pipe.cfg.flame_model))
    res = run.result
    for row, r in res["table"].items():
        typer.echo(f"{ROW_NAMES[row]:<48} FID {r.get('fid', float('nan')):7.2f}  LVE {r['lve_euclidean_max_mm']:5.2f} mm  "
                   f"LSE-D {r['lse_d'] if r['lse_d'] is not None else float('nan'):.3f}  emotion {r['emotion_accuracy']:.3f}")
    for n in res["notes"]:
        typer.echo(f"note: {n}")
    typer.echo(f"wrote {out}/ (report.md, metrics.json, plots) in {res['seconds']['total']:.0f} s")


def _timed(iterable, acc: dict, key: str):
    """Yield from ``iterable``, adding the time spent producing items to ``acc[key]``."""
    import time

    it = iter(iterable)
    while True:
        t = time.perf_counter()
        try:
            item = next(it)
        except StopIteration:
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
            return
        acc[key] = acc.get(key, 0.0) + time.perf_counter() - t
        yield item


def _heard_json(heard: dict[str, float] | None) -> list | None:
    """Stage 1's emotion head for JSON: [[emotion, probability], ...], most likely first (JSON objects lose order)."""
    return None if heard is None else [[e, round(p, 4)] for e, p in heard.items()]


def _warn_if_unknown(text: str) -> None:
    """One warning line when an instruction names no emotion and no facial action of the vocabulary (stage 2 then
    follows the sentence alone, close to a neutral style)."""
    from .vocab import EMOTIONS, load_vocabulary, parse_instruction

    ins = parse_instruction(text)
    if ins.emotion is None and not ins.actions:
        words = load_vocabulary().emotions
        typer.echo("warning: the instruction names no emotion or facial action that stage 2 knows, so the face keeps "
                   "a near-neutral style; emotion words: " + ", ".join(words[e][2][0] for e in EMOTIONS)
                   + " (`avitalk vocab` lists them all)", err=True)


@app.command("vocab")
def vocab_cmd() -> None:
    """The words stage 2 understands in an instruction: emotions by intensity, facial actions, degree adverbs."""
    from .vocab import EMOTIONS, load_vocabulary

    v = load_vocabulary()
    typer.echo("emotions (weak | medium | strong):")
    for e in EMOTIONS:
        typer.echo(f"  {e}: " + " | ".join(", ".join(v.emotions[e][k]) for k in sorted(v.emotions[e])))
    typer.echo("facial actions (part + one of its words):")
    for a in v.actions.values():
        typer.echo(f"  {a['part']}: {', '.join(a['participles'])}")
    typer.echo("degrees (weakest first): " + " | ".join(", ".join(d["words"]) for d in v.degrees))
    typer.echo('e.g. "A furious man speaks with brow strongly lowered and lips clearly pressed."')


def _read_instruction(text: Optional[str], file: Optional[Path]) -> Optional[str]:
    if text is not None and file is not None:
        _fail("give --instruction or --instruction-file, not both")
    if file is not None:
        if not file.exists():
            _fail(f"{file}: no such instruction file")
        if file.is_dir():
            _fail(f"{file}: is a directory, not an instruction file")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            _fail(f"{file}: is not UTF-8 text")
        if not text.strip():
            _fail(f"{file}: is empty (write one sentence describing the face)")
    if text is not None and not text.strip():
        _fail("--instruction is empty (write one sentence describing the face)")
    return None if text is None else " ".join(text.split())


def _run_into(tmp: Path, speech: Path, speech_audio, text: Optional[str], samples: int, seed: int, no_render: bool,
              size: int, checkpoint: Optional[Path], flame_model: Optional[str], quiet: bool, as_json: bool, say,
              t_all: float, load_s: float, emotion_guidance: Optional[float] = None) -> tuple[dict, dict]:
    """The work of `avitalk run` / `synthesize`, writing its files into ``tmp``; returns run.json's content."""
    import platform
    import time

    import torch
    from tqdm import tqdm

    from . import __version__
    from .io import atomic_write_json, atomic_write_text

    timings: dict[str, float] = {"audio_load_s": load_s}
    say(f"speech: {speech} ({speech_audio.duration:.2f} s)")

    from .pipeline import AVITalkingPipeline

    t = time.perf_counter()
    pipe = AVITalkingPipeline.from_pretrained(checkpoint, stage1=text is None).warm_up()
    if pipe.instructor is not None:
        pipe.instructor.emotion_guidance = emotion_guidance
    model = None
    if not no_render:  # the head is only needed for the video
        from .flame import FlameModel

        model = FlameModel.from_spec(flame_model or pipe.cfg.flame_model)
    timings["load_checkpoint_s"] = time.perf_counter() - t
    say(f"checkpoint: {pipe.source} ({timings['load_checkpoint_s']:.1f} s)")
    res = pipe(speech_audio, text, num_samples=samples, seed=seed)
    timings.update(res.timings)
    say(f"audio encoder: {res.timings['audio_encoder_s']:.2f} s")
    if "stage1_s" in res.timings:
        say(f"stage 1 (instruction): {res.timings['stage1_s']:.2f} s")
    say(f"instruction ({res.instruction_source}): {res.instruction.text}")
    if res.heard is not None:
        from .pipeline import describe_heard

        say(f"heard: {describe_heard(res.heard, res.heard_threshold)}")
    say(f"stage 2 (motion, {samples} sample{'s' * (samples > 1)}): {res.timings['stage2_s']:.2f} s")

    names = ["flame.npz"] if samples == 1 else [f"flame_{k}.npz" for k in range(samples)]
    videos = [] if no_render else (["video.mp4"] if samples == 1 else [f"video_{k}.mp4" for k in range(samples)])
    if True:
        if True:
            for name, seq in zip(names, res.sequences):
                seq.save(tmp / name)
            atomic_write_text(tmp / "instruction.txt", res.instruction.text + "\n")
            if not no_render:
                from .render import renderer_for_model
                from .render.video import write_video

                with renderer_for_model(model, size=size) as r:
                    for name, seq in zip(videos, res.sequences):
                        t = time.perf_counter()
                        verts = model.sequence_vertices(seq)
                        timings["flame_s"] = timings.get("flame_s", 0.0) + time.perf_counter() - t
                        frames = tqdm(_timed(r.iter_frames(verts), timings, "render_s"), total=len(verts),
                                      unit="frame", desc=f"render {name}", disable=quiet or as_json or None)
                        t = time.perf_counter()
                        write_video(tmp / name, frames, fps=seq.fps, audio=speech_audio)
                        timings["video_s"] = timings.get("video_s", 0.0) + time.perf_counter() - t
                timings["video_s"] -= timings["render_s"]
            timings["total_s"] = time.perf_counter() - t_all
            info = {
                "avitalk": __version__, "torch": torch.__version__, "python": platform.python_version(),
                "checkpoint": pipe.source, "flame_model": str(flame_model or pipe.cfg.flame_model),
                "speech": {"path": str(speech), "duration_s": speech_audio.duration},
                "instruction": {**res.instruction.to_dict(), "source": res.instruction_source,
                                "stage1_listened_s": res.listened_s,
                                "heard": _heard_json(res.heard), "heard_threshold": res.heard_threshold},
                "seed": seed, "samples": samples, "outputs": {"flame": names, "video": videos, "instruction": "instruction.txt"},
                "size": None if no_render else size,
                "timings": {k: round(v, 4) for k, v in timings.items()},
            }
            atomic_write_json(tmp / "run.json", info)
    return info, timings


def _run(speech: Path, out: Path, instruction: Optional[str], instruction_file: Optional[Path], samples: int,
         seed: int, no_render: bool, size: int, checkpoint: Optional[Path], flame_model: Optional[str],
         overwrite: bool, quiet: bool, as_json: bool, need_instruction: bool, max_duration: float,
         emotion_guidance: Optional[float] = None) -> None:
    import time

    from . import audio as audio_io
    from .io import OutputFolder

    t_all = time.perf_counter()
    if size % 2 or size < 16:
        _fail(f"--size must be an even number of pixels >= 16, got {size}")
    text = _read_instruction(instruction, instruction_file)
    if need_instruction and text is None:
        _fail("give the instruction: --instruction TEXT or --instruction-file FILE")
    say = (lambda m: None) if quiet or as_json else (lambda m: typer.echo(m, err=True))
    if text is not None and not quiet:
        _warn_if_unknown(text)
    t = time.perf_counter()
    speech_audio = audio_io.load(speech, max_duration_s=max_duration)
    load_s = time.perf_counter() - t
    folder = OutputFolder(out, overwrite)  # before any model work: an unusable OUT fails now
    try:
        stems = ["flame"] if samples == 1 else [f"flame_{k}" for k in range(samples)]
        planned = ["instruction.txt", "run.json", *(f"{n}.npz" for n in stems)]
        if not no_render:
            planned += [n.replace("flame", "video") + ".mp4" for n in stems]
        folder.check(planned)  # a file of the user's in the way: refused now, not after the model work
        info, timings = _run_into(folder.staging, speech, speech_audio, text, samples, seed, no_render, size,
                                  checkpoint, flame_model, quiet, as_json, say, t_all, load_s, emotion_guidance)
        kept = folder.commit()
    except BaseException:
        folder.discard()
        raise
    names, videos = info["outputs"]["flame"], info["outputs"]["video"]

    if as_json:
        typer.echo(json.dumps(info, indent=2))
    elif not quiet:
        parts = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in timings.items() if k != "total_s")
        typer.echo(f"wrote {out}/ ({', '.join(['instruction.txt', *names, *videos, 'run.json'])})")
        typer.echo(f"timings: {parts}; total {timings['total_s']:.2f} s")
        typer.echo(f"edit {out / 'instruction.txt'} and run again with --instruction-file {out / 'instruction.txt'}")
    if kept and not quiet:
        typer.echo(f"kept {len(kept)} file{'s' * (len(kept) > 1)} in {out} that avitalk did not write: "
                   f"{', '.join(kept[:5])}{' ...' * (len(kept) > 5)}", err=True)


# the options `avitalk run` and `avitalk synthesize` share
_Speech = Annotated[Path, typer.Argument(help="Speech file (wav, flac, ogg, mp3, m4a...).")]
_EmotionGuidance = Annotated[Optional[float], typer.Option(
    "--emotion-guidance", min=0.0, help="Weight of stage 1's emotion reader in the instruction's emotion word "
    "(default: the checkpoint config's stage1.emotion_guidance; 0: the LLM alone).")]
_InstructionFile = Annotated[Optional[Path], typer.Option("--instruction-file", "-f", help="Read the instruction from a file.")]
_Samples = Annotated[int, typer.Option("--samples", "-n", min=1, max=16, help="Motion samples (different styles).")]
_Seed = Annotated[int, typer.Option(help="Seed: the same seed gives the same output.")]
_NoRender = Annotated[bool, typer.Option("--no-render", help="Only instruction.txt, flame.npz and run.json.")]
_Size = Annotated[int, typer.Option(help="Video width and height in pixels (even).")]
_Checkpoint = Annotated[Optional[Path], typer.Option("--checkpoint", help="Pipeline checkpoint folder (default: the embedded one).")]
_FlameModel = Annotated[Optional[str], typer.Option("--flame-model", help="FLAME model .npz (default: the stand-in head).")]
_Overwrite = Annotated[bool, typer.Option(help="Replace avitalk's outputs in OUT if it exists (other files are kept).")]
_MaxDuration = Annotated[float, typer.Option("--max-duration", min=0.1, help="Longest accepted speech in seconds.")]
_Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
_Json = Annotated[bool, typer.Option("--json", help="Print run.json to stdout.")]


@app.command()
def run(
    speech: _Speech,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (instruction.txt, flame.npz, video.mp4, run.json)."),
    instruction: Optional[str] = typer.Option(None, "--instruction", "-i", help="Your instruction (replaces stage 1)."),
    instruction_file: _InstructionFile = None, samples: _Samples = 1, seed: _Seed = 0, no_render: _NoRender = False,
    size: _Size = 512, checkpoint: _Checkpoint = None, flame_model: _FlameModel = None, overwrite: _Overwrite = False,
    quiet: _Quiet = False, as_json: _Json = False, max_duration: _MaxDuration = MAX_SPEECH_S,
    emotion_guidance: _EmotionGuidance = None,
) -> None:
    """Speech -> instruction (stage 1, editable) -> FLAME motion (stage 2) -> video with the speech."""
    _run(speech, out, instruction, instruction_file, samples, seed, no_render, size, checkpoint, flame_model,
         overwrite, quiet, as_json, need_instruction=False, max_duration=max_duration,
         emotion_guidance=emotion_guidance)


@app.command()
def synthesize(
    speech: _Speech,
    out: Path = typer.Option(..., "--out", "-o", help="Output folder."),
    instruction: Optional[str] = typer.Option(None, "--instruction", "-i", help="The instruction text."),
    instruction_file: _InstructionFile = None, samples: _Samples = 1, seed: _Seed = 0, no_render: _NoRender = False,
    size: _Size = 512, checkpoint: _Checkpoint = None, flame_model: _FlameModel = None, overwrite: _Overwrite = False,
    quiet: _Quiet = False, as_json: _Json = False, max_duration: _MaxDuration = MAX_SPEECH_S,
) -> None:
    """Stage 2 only: speech + your instruction -> FLAME motion -> video (stage 1 is not loaded)."""
    _run(speech, out, instruction, instruction_file, samples, seed, no_render, size, checkpoint, flame_model,
         overwrite, quiet, as_json, need_instruction=True, max_duration=max_duration)


def _report_import(manifest: Path) -> None:
    rep = json.loads((manifest.parent / "import_report.json").read_text())
    typer.echo(f"imported {rep['imported']} clips into {manifest.parent}; skipped {rep['skipped_count']}")
    reasons: dict[str, int] = {}
    for s in rep["skipped"]:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:8]:
        typer.echo(f"  skipped {n}: {r}")
    typer.echo(f"details: {manifest.parent / 'import_report.json'}")


def _quiet_libraries() -> None:
    """Library chatter that is not ours: transformers' weight-loading bars and a deprecation warning peft triggers."""
    import warnings

    import os

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers is imported (if ever)


# old option names, still accepted (not shown in --help): one name per idea across commands now
OLD_NAMES = {"--output": "--out", "-k": "-n"}


def _new_names(argv: list[str]) -> list[str]:
    out = []
    for a in argv:
        name, eq, value = a.partition("=")
        out.append(OLD_NAMES[name] + eq + value if name in OLD_NAMES else a)
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    argv = _new_names(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = app(args=argv, prog_name="avitalk", standalone_mode=False)
    except AvitalkError as e:
        typer.echo("error: " + " ".join(str(e).split()), err=True)
        return 2
    except typer.Exit as e:
        return int(e.exit_code or 0)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as e:  # usage errors: click's, or the copy of click that typer bundles
        import click

        mods = [click.exceptions] + [m.exceptions for m in (getattr(typer, "_click", None),) if m is not None]
        if any(isinstance(e, m.ClickException) for m in mods):
            if type(e).__name__ == "NoArgsIsHelpError":  # `avitalk` (or `avitalk data`) alone: its help, no error
                text = e.format_message()
                if text.strip():  # (the rich formatter has printed it already; the plain one hands it over)
                    typer.echo(text)
                return 0
            typer.echo("error: " + " ".join(e.format_message().split()), err=True)
            return 2 if any(isinstance(e, m.UsageError) for m in mods) else int(e.exit_code or 1)
        if any(isinstance(e, getattr(m, "Abort", ())) for m in mods):
            return 1
        if isinstance(e, OSError):  # the file system said no (disk full, permissions...): one line, not a traceback
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            typer.echo(f"error: {where}{e.strerror or e}", err=True)
            return 1
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
