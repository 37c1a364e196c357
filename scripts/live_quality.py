"""Streamed vs offline motion per look-ahead (eval/live.py) on dataset folders; JSON + a markdown table per folder.

    python scripts/live_quality.py --data DIR [--split test] [--instruction "A person speaks."] [--limit N]
        [--speakers A,B] [--lookaheads 0,40,80,120,200] --out results.json
"""

from __future__ import annotations

import argparse
import json
import sys

from avitalk.eval.live import evaluate_live, table_lines
from avitalk.io import atomic_write_json
from avitalk.top.live import LiveSession
from avitalk.top.pipeline import AVITalkingPipeline


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--instruction", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--speakers", default=None)
    ap.add_argument("--lookaheads", default="0,40,80,120,200")
    ap.add_argument("--context-s", type=float, default=None, help="default: the checkpoint's stage2.train.stream.context_s")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    pipe = AVITalkingPipeline.from_pretrained(a.checkpoint, stage1=False).warm_up()
    las = [float(x) for x in a.lookaheads.split(",")]
    res = evaluate_live(pipe, lambda la, text: LiveSession(pipe, text, lookahead_ms=la, context_s=a.context_s),
                        a.data, las, a.split, a.instruction, a.limit,
                        a.speakers.split(",") if a.speakers else None)
    res["context_s"] = a.context_s or float(pipe.synthesizer.cfg.stage2.train.stream.context_s)
    res["live_decoder"] = pipe.synthesizer.stream_decoder is not None
    atomic_write_json(a.out, res)
    print("\n".join(table_lines(res)))


if __name__ == "__main__":
    sys.exit(main())
