"""``avitalk head / render / app / export / flame``: the stand-in head, rendering, the web app, glTF, FLAME files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from avitalk.errors import AppError
from avitalk.top.cli.common import MAX_SPEECH_S, _check_output, _fail, app, flame_app


@app.command()
def head(
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for the stand-in head's files."),
    size: int = typer.Option(384, help="Size in pixels of each contact-sheet tile."),
) -> None:
    """Write the procedural stand-in head (standin.npz, FLAME format) and a contact sheet PNG of its expressions."""
    import numpy as np
    import torch

    from avitalk.flame import FlameModel
    from avitalk.flame.standin import expression_from_activations as acts
    from avitalk.render import renderer_for_model
    from avitalk.render.sheet import grid_image, save_png

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

    from avitalk import audio as audio_io
    from avitalk.flame import FlameModel
    from avitalk.render import renderer_for_model
    from avitalk.render.video import write_video
    from avitalk.types import FlameSequence

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

    from avitalk.top.app import AppSession, build_app
    from avitalk.top.pipeline import AVITalkingPipeline

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
    from avitalk import audio as audio_io
    from avitalk.flame import FlameModel
    from avitalk.render.gltf import export_glb
    from avitalk.types import FlameSequence

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
    from avitalk.flame import FlameModel
    from avitalk.flame.convert import convert_flame_pkl

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
    from avitalk.flame import FlameModel

    d = FlameModel.from_spec(model).describe()
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    for k, v in d.items():
        typer.echo(f"{k:>14}: {v}")
