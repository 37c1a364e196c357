"""``avitalk train stage2 / stage1``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from avitalk.top.cli.common import _fail, _load_config, train_app


@train_app.command("stage2")
def train_stage2_cmd(
    config: Path = typer.Option(Path("tiny"), "--config", "-c", help="YAML config, or a packaged one by name: tiny, base, paper."),
    data: Path = typer.Option(..., "--data", "-d", help="Dataset folder (manifest.jsonl)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint folder."),
    phase: str = typer.Option("all", help="lipsync, stream (the live decoder), prior or all."),
    resume: bool = typer.Option(False, help="Continue from the checkpoint folder's last state."),
    evaluate: bool = typer.Option(False, help="Measure on the test split afterwards (metrics.json)."),
    motion_data: Optional[list[Path]] = typer.Option(None, "--motion-data", help="More motion for lip-sync pretraining, e.g. "
                                                     "tracked real faces (avitalk data grid); repeatable. The prior "
                                                     "learns styles from --data only."),
    event_data: Optional[list[Path]] = typer.Option(None, "--event-data", help="Speech without motion (e.g. avitalk "
                                                    "data speech of plain read speech) whose aligned /b p m/ and open "
                                                    "vowels teach the lips in lip-sync pretraining "
                                                    "(stage2.train.lipsync.event_rows); repeatable."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Config overrides, e.g. stage2.train.lipsync.steps=200."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train stage 2: lip-sync pretraining (style encoder + decoder), the live decoder (with
    stage2.train.stream.steps), then the diffusion prior."""
    from avitalk.stage2_synthesis.train import train_stage2

    if phase not in ("lipsync", "stream", "prior", "all"):
        _fail(f"--phase must be lipsync, stream, prior or all, got {phase!r}")
    for d in motion_data or ():
        if not (d / "manifest.jsonl").is_file():
            _fail(f"--motion-data {d}: no manifest.jsonl (not a dataset folder)")
    for d in event_data or ():
        if not (d / "manifest.jsonl").is_file():
            _fail(f"--event-data {d}: no manifest.jsonl (not a dataset folder)")
    cfg = _load_config(config, set_)
    if event_data and int(cfg.stage2.train.lipsync.event_rows):
        from avitalk.eval.bilabial import align_folder

        for d in event_data:
            align_folder(d, progress=not quiet)
    r = train_stage2(cfg, data, out, phase=phase, resume=resume, progress=not quiet,
                     motion_data=tuple(motion_data or ()), event_data=tuple(event_data or ()))
    t = r["timings"]
    typer.echo("trained stage 2 in " + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in t.items()) + f" -> {out}")
    if evaluate:
        from avitalk.eval.stage2 import evaluate_stage2

        from avitalk.io import atomic_write_json

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
        from avitalk.io import atomic_write_json

        m = evaluate_stage1(out, data)
        atomic_write_json(out / "metrics.json", m)
        typer.echo(json.dumps({k: m[k] for k in ("with_speech", "ablation_speech_tokens_removed", "speed")}, indent=2))
