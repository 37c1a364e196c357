"""The prior's samplers against their number of network calls, on SynthTalk's validation split: controllability (the
edited emotion read back from the motion), emotion accuracy with the reference instruction, lip error (LVE), style
diversity and time, for DDIM and DPM-Solver++(2M) at several step counts. Picks the default: the fewest steps of the
faster sampler whose controllability, emotion accuracy and LVE are within 2% of 50 DDIM steps.

    python scripts/sampler_curve.py [--ckpt build/demo-checkpoint/stage2] [--data build/demo-checkpoint/data]

Writes OUT/sampler_curve.json and docs/sampler_curve.png; about 6 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

CURVE = {"ddim": (5, 10, 15, 25, 50), "dpmpp2m": (3, 5, 8, 10, 15, 25)}


def prior_seconds(synth, sampler: str, steps: int, reps: int = 20) -> float:
    """Median time of one guided prior sample (the part of stage 2 the sampler changes)."""
    text = "A furious man speaks with brow strongly lowered."
    synth.styles([text], 1, seed=0, sampler=sampler, steps=steps)  # warm-up (and the text embedding is cached)
    times = []
    for k in range(reps):
        t = time.perf_counter()
        synth.styles([text], 1, seed=k, sampler=sampler, steps=steps)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="build/demo-checkpoint/stage2")
    ap.add_argument("--data", default="build/demo-checkpoint/data")
    ap.add_argument("--split", default="val")
    ap.add_argument("--out", default="build/sampler-curve")
    ap.add_argument("--plot", default="docs/sampler_curve.png")
    ap.add_argument("--from-json", action="store_true", help="re-choose and re-plot from OUT/sampler_curve.json")
    a = ap.parse_args()
    if a.from_json:
        rows = json.loads((Path(a.out) / "sampler_curve.json").read_text())["rows"]
        _choose_and_write(rows, a)
        return

    from avitalk.eval.stage2 import evaluate_stage2, stage2_evaluator
    from avitalk.stage2_synthesis.synthesizer import Synthesizer

    synth = Synthesizer.load(a.ckpt)
    ev = stage2_evaluator(synth, a.data)
    rows = []
    for sampler, steps_list in CURVE.items():
        for steps in steps_list:
            t = time.perf_counter()
            m = evaluate_stage2(a.ckpt, a.data, a.split, synth=synth, evaluator=ev, sampler=sampler, steps=steps)
            row = {"sampler": sampler, "steps": steps,
                   "controllability": m["emotion_accuracy"]["generated_edited_instruction"],
                   "emotion": m["emotion_accuracy"]["generated_gt_instruction"],
                   "lve_mm": m["lve_mm"]["model"], "diversity": m["diversity"]["style_space"],
                   "synthesize_10s_s": m["speed"]["synthesize_10s_s"], "prior_s": prior_seconds(synth, sampler, steps)}
            rows.append(row)
            print(json.dumps(row), f"({time.perf_counter() - t:.0f} s)", flush=True)
    _choose_and_write(rows, a)


def _choose_and_write(rows: list[dict], a) -> None:
    from avitalk.io import atomic_write_json

    ref = next(r for r in rows if r["sampler"] == "ddim" and r["steps"] == 50)

    def within(r) -> bool:  # the targets: controllability, emotion and LVE within 2%; diversity within 25%
        return (r["controllability"] >= 0.98 * ref["controllability"] and r["emotion"] >= 0.98 * ref["emotion"]
                and r["lve_mm"] <= 1.02 * ref["lve_mm"] and abs(r["diversity"] - ref["diversity"]) <= 0.25 * ref["diversity"])

    ok = [r for r in rows if within(r)]
    best = min(ok, key=lambda r: (r["prior_s"], r["steps"]))
    out = {"split": a.split, "reference": ref, "rows": rows, "chosen": best,
           "speedup_prior_vs_ddim50": ref["prior_s"] / best["prior_s"],
           "speedup_synthesize_10s_vs_ddim50": ref["synthesize_10s_s"] / best["synthesize_10s_s"]}
    Path(a.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(a.out) / "sampler_curve.json", out)
    _plot(rows, ref, best, a.plot)
    print(f"chosen: {best['sampler']} {best['steps']} steps; prior {out['speedup_prior_vs_ddim50']:.1f}x faster than "
          f"50 DDIM steps, stage 2 on 10 s {out['speedup_synthesize_10s_vs_ddim50']:.1f}x")


def _plot(rows, ref, best, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from avitalk.io import atomic_path

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for k, (key, label) in enumerate((("controllability", "edited emotion read back"), ("emotion", "emotion accuracy"),
                                      ("lve_mm", "LVE (mm)"), ("diversity", "style diversity"))):
        ax = axes[k]
        for sampler, style in (("ddim", "o-"), ("dpmpp2m", "s-")):
            rs = [r for r in rows if r["sampler"] == sampler]
            ax.plot([r["steps"] for r in rs], [r[key] for r in rs], style, label=sampler)
        ax.axhline(ref[key], color="grey", lw=0.8, ls=":")
        ax.plot([best["steps"]], [best[key]], "r*", ms=12)
        ax.set_xscale("log")
        ax.set_xticks([3, 5, 8, 15, 25, 50])
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("network calls (steps)")
        ax.set_title(label, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle("prior samplers on SynthTalk validation clips (dotted: 50 DDIM steps; star: the default)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
