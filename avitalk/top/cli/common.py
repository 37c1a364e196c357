"""What the ``avitalk`` commands share: the command groups, the usage-error helpers, config loading."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    name="avitalk",
    help="Speech in, expressive 3D talking face out, through an editable audio-visual instruction.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns, flags without placeholders
)
flame_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                        help="FLAME model files: convert official models safely, inspect model files.")
app.add_typer(flame_app, name="flame")
train_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                        help="Train the models (CPU, one GPU, or many with `accelerate launch`).")
app.add_typer(train_app, name="train")
data_app = typer.Typer(rich_markup_mode=None, no_args_is_help=True,
                       help="Datasets: generate SynthTalk, import MEAD / RAVDESS / labelled speech, statistics.")
app.add_typer(data_app, name="data")


MAX_SPEECH_S = 600.0  # the default --max-duration of the commands that read speech (10 minutes)


def _fail(msg: str, code: int = 2) -> None:
    typer.echo("error: " + " ".join(msg.split()), err=True)
    raise typer.Exit(code)


def _check_output(path: Path, overwrite: bool) -> None:
    if path.exists() and path.is_dir():
        _fail(f"{path}: is a directory")
    if path.exists() and not overwrite:
        _fail(f"{path}: already exists (use --overwrite to replace it)")



def _load_config(path: Path, overrides: list[str] | None):
    """The config checked against the schema (avitalk/config.py): a misspelt key is one error line naming it."""
    from avitalk.config import load_config

    return load_config(path, overrides)



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



def _report_import(manifest: Path) -> None:
    rep = json.loads((manifest.parent / "import_report.json").read_text())
    typer.echo(f"imported {rep['imported']} clips into {manifest.parent}; skipped {rep['skipped_count']}")
    reasons: dict[str, int] = {}
    for s in rep["skipped"]:
        reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
    for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:8]:
        typer.echo(f"  skipped {n}: {r}")
    typer.echo(f"details: {manifest.parent / 'import_report.json'}")
