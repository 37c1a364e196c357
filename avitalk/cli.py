"""The ``avitalk`` command. Every subcommand has ``--help``; errors print one line and exit non-zero."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from .errors import AvitalkError

app = typer.Typer(
    name="avitalk",
    help="Speech in, expressive 3D talking face out, through an editable audio-visual instruction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
flame_app = typer.Typer(help="FLAME model files: convert official models safely, inspect model files.", no_args_is_help=True)
app.add_typer(flame_app, name="flame")


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
    output: Path = typer.Option(..., "--output", "-o", help="Output .mp4 file."),
    audio: Optional[Path] = typer.Option(None, "--audio", "-a", help="Speech to mux into the video (any audio file)."),
    flame_model: Optional[str] = typer.Option(None, "--flame-model", help="Model .npz (default: the stand-in head)."),
    size: int = typer.Option(512, help="Width and height of the video in pixels (even)."),
    overwrite: bool = typer.Option(False, help="Replace the output if it exists."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
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
    speech = audio_io.load(audio) if audio is not None else None
    model = FlameModel.from_spec(flame_model)
    verts = model.sequence_vertices(seq)
    with renderer_for_model(model, size=size) as r:
        frames = tqdm(r.iter_frames(verts), total=len(verts), unit="frame", desc="render", disable=quiet or None)
        write_video(output, frames, fps=seq.fps, audio=speech)
    typer.echo(f"wrote {output} ({len(verts)} frames, {seq.duration:.2f} s at {seq.fps:g} fps{', with audio' if speech else ''})")


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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
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
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return 1
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":
    sys.exit(main())
