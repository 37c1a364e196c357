"""SynthTalk generation speed: clips per second on all cores (fresh corpus in a temporary folder)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time


def bench(clips: int = 400) -> dict:
    from avitalk.data.synthtalk import generate

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        generate(os.path.join(d, "st"), clips, seed=0, workers=os.cpu_count(), progress=False)
        dt = time.perf_counter() - t
    return {"name": "synthtalk", "clips": clips, "seconds": dt, "clips_per_s": clips / dt, "workers": os.cpu_count()}


if __name__ == "__main__":
    print(json.dumps(bench(int(sys.argv[1]) if len(sys.argv) > 1 else 400)))
