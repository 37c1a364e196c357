"""`avitalk run` on 10 s of speech with the embedded default checkpoint: time per stage, with and without rendering
(``run``), and the cold start (``cold``): wall time of a fresh `avitalk run --no-render` process against a fresh
`python -c "import torch"`, alternated 5 times, medians and their ratio.

The speech is a SynthTalk utterance made here (espeak-ng, an unseen test speaker), cut or padded to exactly 10 s.
Each configuration runs 3 times through the real command (in process); medians per stage. Printed as one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from avitalk.types import SAMPLE_RATE

TEXT = ("When the rain finally stopped we walked along the river for hours, talking about the summer, the old house "
        "by the harbour, and everything we still wanted to do before the end of the year.")


def speech_10s(directory: Path) -> Path:
    from avitalk.audio import save_wav
    from avitalk.data.synthtalk import say
    from avitalk.types import Audio

    clip = say(TEXT, "happy", 2)
    x = clip["audio"]
    n = 10 * SAMPLE_RATE
    x = np.concatenate([x, x])[:n] if len(x) < n else x[:n]
    return save_wav(directory / "speech10.wav", Audio(x.astype(np.float32)))


def cold(reps: int = 5) -> dict:
    import subprocess
    import time

    def wall(cmd: list[str]) -> float:
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        wav = speech_10s(d)
        torch_s, run_s = [], []
        for k in range(reps):
            torch_s.append(wall([sys.executable, "-c", "import torch"]))
            run_s.append(wall([sys.executable, "-m", "avitalk", "run", str(wav), "-o", str(d / f"o{k}"), "--no-render",
                               "-q"]))
    t, r = float(np.median(torch_s)), float(np.median(run_s))
    return {"speech_s": 10.0, "repeats": reps, "import_torch_s": t, "avitalk_run_no_render_s": r, "ratio": r / t,
            "import_torch_all_s": torch_s, "avitalk_run_all_s": run_s}


def batched(pipe=None, clips: int = 64, reps: int = 3, speech: Path | None = None) -> dict:
    """Evaluation over many clips: ``clips`` clips of 2.5-4.5 s (RAVDESS-like lengths), encoder features computed
    once; stage 1 and stage 2 clip by clip (``instruct`` / ``synthesize``) against batched (``instruct_many`` /
    ``synthesize_many``); medians of ``reps``; also whether both ways give the same texts and motion. The clips are
    cut from ``speech`` (a wav; default: 10 s of SynthTalk speech made here with espeak-ng)."""
    import time

    from avitalk import audio as audio_io
    from avitalk.top.pipeline import AVITalkingPipeline
    from avitalk.types import Audio

    pipe = pipe or AVITalkingPipeline.from_pretrained()
    with tempfile.TemporaryDirectory() as d:
        x = audio_io.load(speech if speech is not None else speech_10s(Path(d))).samples
    rng = np.random.default_rng(0)
    auds = []
    for _ in range(clips):
        n = int(rng.uniform(2.5, 4.5) * SAMPLE_RATE)
        s = int(rng.integers(0, len(x) - n))
        auds.append(Audio(x[s : s + n].copy()))
    feats = [pipe.encode(a) for a in auds]
    seeds = list(range(clips))

    def med(fn) -> tuple[float, object]:
        ts, out = [], None
        for _ in range(reps):
            t = time.perf_counter()
            out = fn()
            ts.append(time.perf_counter() - t)
        return float(np.median(ts)), out

    t1, one = med(lambda: [pipe.instruct(a, features=f) for a, f in zip(auds, feats)])
    t1b, many = med(lambda: pipe.instruct_many(auds, feats))
    t2, m1 = med(lambda: [pipe.synthesize(a, i, seed=s, features=f)[0].motion()
                          for a, i, s, f in zip(auds, one, seeds, feats)])
    t2b, m2 = med(lambda: [r[0].motion() for r in pipe.synthesize_many(auds, one, seeds=seeds, features=feats)])
    return {"clips": clips, "speech_s": float(sum(a.duration for a in auds)), "device": str(pipe.device),
            "stage1_one_by_one_s": t1, "stage1_batched_s": t1b, "stage1_speedup": t1 / t1b,
            "stage2_one_by_one_s": t2, "stage2_batched_s": t2b, "stage2_speedup": t2 / t2b,
            "same_instructions": sum(a.text == b.text for a, b in zip(one, many)),
            "motion_max_diff": float(max(np.abs(a - b).max() for a, b in zip(m1, m2)))}


def main() -> None:
    if sys.argv[1:] == ["cold"]:
        print(json.dumps(cold()))
        return
    if sys.argv[1:] == ["batched"]:
        print(json.dumps(batched()))
        return
    from avitalk.top.cli import main as cli

    reps = 3
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        wav = speech_10s(d)
        runs: dict[str, list[dict]] = {"no_render": [], "render_512": []}
        for k in range(reps):
            for name, extra in (("no_render", ["--no-render"]), ("render_512", ["--size", "512"])):
                out = d / f"{name}{k}"
                code = cli(["run", str(wav), "-o", str(out), "--quiet", *extra])
                if code != 0:
                    raise SystemExit(f"avitalk run failed ({code})")
                runs[name].append(json.loads((out / "run.json").read_text())["timings"])
    res = {"speech_s": 10.0, "repeats": reps}
    for name, ts in runs.items():
        keys = ts[0].keys()
        med = {k: float(np.median([t[k] for t in ts])) for k in keys}
        work = med["total_s"] - med["load_checkpoint_s"] - med["audio_load_s"]
        res[name] = {"median": med, "without_loading_s": work}
    print(json.dumps(res))


if __name__ == "__main__":
    sys.exit(main())
