"""``avitalk eval``: the benchmark on motion data, the real-speech metrics on speech without motion."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from avitalk.top.cli.common import _fail, app


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
    tracked: bool = typer.Option(False, "--tracked", help="Lip sync against real faces tracked from video "
                                 "(`avitalk data grid`): lip-gap r, lip vertex error, closure at the word times."),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="With --tracked: a second pipeline checkpoint "
                                            "measured on the same clips, side by side (e.g. a SynthTalk-only build)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Benchmark a checkpoint on a dataset split: FID, KID, diversity, LSE-D/C, LVE, MVE, FDD, emotion accuracy; on
    labelled real speech without motion (--real): emotion, mouth vs loudness, silence rest, bilabial closure."""
    from avitalk.eval.benchmark import ROW_NAMES, run_benchmark, write_report

    from avitalk.flame import FlameModel
    from avitalk.top.pipeline import AVITalkingPipeline

    if not (data / "manifest.jsonl").is_file():
        _fail(f"{data}: no manifest.jsonl (not a dataset folder)")
    from avitalk.data.manifest import read_manifest

    clips = read_manifest(data)
    if tracked:
        from avitalk.eval.tracked import evaluate_tracked, tracked_lines, write_tracked_report

        if out.exists() and not out.is_dir():
            _fail(f"{out}: exists and is not a folder")
        if baseline is not None and not (baseline / "config.yaml").is_file():
            _fail(f"--baseline {baseline}: not a pipeline checkpoint folder (no config.yaml)")
        pipe = AVITalkingPipeline.from_pretrained(checkpoint).warm_up()
        res = evaluate_tracked(pipe, data, split, limit, seed, progress=not quiet)
        res["checkpoint"] = str(checkpoint or "embedded default")
        if baseline is not None:
            base = evaluate_tracked(AVITalkingPipeline.from_pretrained(baseline).warm_up(), data, split, limit, seed,
                                    progress=not quiet)
            res["baseline"] = {"checkpoint": str(baseline), **{k: v for k, v in base.items() if k != "per_clip"}}
        write_tracked_report(res, out)
        for line in tracked_lines(res):
            typer.echo(line)
        if baseline is not None:
            typer.echo(f"  baseline {baseline}: lip-gap r {res['baseline']['lip_gap_r']['median']:.3f}, lip vertex error "
                       f"{res['baseline']['lip_vertex_error_mm']['median']:.2f} mm, bilabials closed "
                       f"{res['baseline']['closure']['generated']['bilabial_closure_rate']:.1%}")
        typer.echo(f"wrote {out}/ (tracked.md, tracked.json)")
        return
    if real or not any(c.flame and c.extra.get("has_motion", True) for c in clips):
        from avitalk.eval.real_speech import evaluate_real_speech, summary_lines, write_real_report

        if out.exists() and not out.is_dir():
            _fail(f"{out}: exists and is not a folder")
        spk = [s.strip() for s in speakers.split(",") if s.strip()] if speakers else None
        if split != "all" and not any(c.split == split for c in clips):
            _fail(f"{data}: no clips in split {split!r} (use --split all, or train / val / test)")
        pipe = AVITalkingPipeline.from_pretrained(checkpoint).warm_up()
        res = evaluate_real_speech(pipe, data, split, limit, spk, seed, progress=not quiet)
        write_real_report(res, out)
        lines, warnings = summary_lines(res)
        for line in lines:
            typer.echo(line)
        for w in warnings:
            typer.echo(f"warning: {w}", err=True)
        typer.echo(f"wrote {out}/ (real_speech.md, real_speech.json, confusion.png"
                   + (", reliability.png, coverage.png)" if "ece" in res["reading"] else ")"))
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
