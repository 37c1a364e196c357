"""`avitalk live`'s loop on 2 cores: a recording played at real time through the same code the microphone uses
(``WavSource`` -> ``run_live``), one thread for the model work.

``curve``: 30 s of speech per look-ahead (0, 40, 80, 120, 200 ms): chunk-to-frame latency (median, p99; the look-ahead
included), how late frames are on a 25 fps clock, the step's cost, CPU load (cores busy). ``long``: 10 minutes at
120 ms: the same, and the resident memory every 10 s (its growth after the first minute). ``reread``: 60 s at 120 ms
without and then with stage 1 re-reading the last 6 s every 4 s (its reads' cost, the latency it adds). The speech is SynthTalk
utterances made here (espeak-ng, several emotions) with pauses between, looped. Printed as one JSON line.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from avitalk.types import SAMPLE_RATE

SENTENCES = [("The boat drifted past the pier while we waited for the morning bus.", "neutral"),
             ("I cannot believe you brought the whole band to my birthday!", "happy"),
             ("Please put the papers back before anybody notices they are missing.", "angry"),
             ("Maybe we should have stayed home and watched the rain instead.", "sad")]


def speech(seconds: float) -> np.ndarray:
    from avitalk.data.synthtalk import say

    parts = []
    for k, (text, emo) in enumerate(SENTENCES):
        parts += [say(text, emo, 2)["audio"].astype(np.float32), np.zeros(int((0.4 + 0.5 * k) * SAMPLE_RATE), np.float32)]
    x = np.concatenate(parts)
    reps = int(np.ceil(seconds * SAMPLE_RATE / len(x)))
    return np.tile(x, reps)[: int(seconds * SAMPLE_RATE)]


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def play(pipe, x: np.ndarray, lookahead_ms: float, memory_every_s: float | None = None, reread: bool = False) -> dict:
    import threading

    from avitalk.top.live import LiveSession, Rereader, WavSource, limit_threads, run_live
    from avitalk.types import Audio

    session = LiveSession(pipe, None, lookahead_ms=lookahead_ms).warm_up()
    rereader = Rereader(session, pipe) if reread else None
    mem: list[tuple[float, float]] = []
    stop = threading.Event()

    def watch() -> None:
        t0 = time.perf_counter()
        while not stop.wait(memory_every_s):
            mem.append((round(time.perf_counter() - t0, 1), round(rss_mb(), 1)))

    if memory_every_s:
        threading.Thread(target=watch, daemon=True).start()
    with limit_threads(1):
        c0, w0 = time.process_time(), time.perf_counter()
        t = run_live(session, WavSource(Audio(x), 20.0, realtime=True), taps=[rereader] if rereader else ())
        cpu = (time.process_time() - c0) / (time.perf_counter() - w0)
    stop.set()
    out = {"lookahead_ms": lookahead_ms, "seconds": len(x) / SAMPLE_RATE, "cpu_cores_busy": round(cpu, 3), **t}
    if rereader is not None:
        info = rereader.close()
        secs = [r["seconds"] for r in info["reads"]]
        out["reread"] = {"reads": len(secs), "skipped": info["skipped"],
                         "read_s_median": info["read_s_median"], "read_s_max": max(secs) if secs else None,
                         "instruction_changes": sum(r["used"] for r in info["reads"]),
                         "emotions_read": [r["emotion"] for r in info["reads"]]}
    if mem:
        after = [m for s, m in mem if s >= 60] or [m for _, m in mem]
        out["rss_mb"] = {"first": mem[0][1], "after_1_min": after[0], "last": mem[-1][1], "max": max(m for _, m in mem),
                         "growth_after_1_min": round(max(after) - after[0], 1), "samples": mem}
    return out


def main() -> None:
    from avitalk.top.pipeline import AVITalkingPipeline

    what = sys.argv[1] if len(sys.argv) > 1 else "curve"
    pipe = AVITalkingPipeline.from_pretrained(stage1=what == "reread").warm_up()
    if what == "curve":
        x = speech(30.0)
        res = {"curve": [play(pipe, x, la) for la in (0, 40, 80, 120, 200)]}
    elif what == "long":
        minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
        res = {"long": play(pipe, speech(60.0 * minutes), 120.0, memory_every_s=10.0)}
    elif what == "reread":  # the same 60 s at 120 ms without and with stage 1 re-reading the voice every 4 s
        x = speech(60.0)
        res = {"reread": [play(pipe, x, 120.0), play(pipe, x, 120.0, reread=True)]}
    else:
        raise SystemExit(f"unknown benchmark {what!r} (curve, long, reread)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
