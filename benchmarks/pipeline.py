"""`avitalk run` on 10 s of speech with the embedded default checkpoint: time per stage, with and without rendering.

The speech is a SynthTalk utterance made here (espeak-ng, an unseen test speaker), cut or padded to exactly 10 s.
Each configuration runs 3 times through the real command (in process); medians per stage. Printed as one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

TEXT = ("When the rain finally stopped we walked along the river for hours, talking about the summer, the old house "
        "by the harbour, and everything we still wanted to do before the end of the year.")


def speech_10s(directory: Path) -> Path:
    from avitalk.audio import save_wav
    from avitalk.data.synthtalk import say
    from avitalk.types import Audio

    clip = say(TEXT, "happy", 2)
    x = clip["audio"]
    n = 160_000
    x = np.concatenate([x, x])[:n] if len(x) < n else x[:n]
    return save_wav(directory / "speech10.wav", Audio(x.astype(np.float32)))


def main() -> None:
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
