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
            run_s.append(wall([sys.executable, "-m", "avitalk.cli", "run", str(wav), "-o", str(d / f"o{k}"), "--no-render",
                               "-q"]))
    t, r = float(np.median(torch_s)), float(np.median(run_s))
    return {"speech_s": 10.0, "repeats": reps, "import_torch_s": t, "avitalk_run_no_render_s": r, "ratio": r / t,
            "import_torch_all_s": torch_s, "avitalk_run_all_s": run_s}


def main() -> None:
    if sys.argv[1:] == ["cold"]:
        print(json.dumps(cold()))
        return
    from avitalk.cli import main as cli

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
