"""`make bench`: run every benchmark in its own process, write JSON under benchmarks/results/, print a table."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from avitalk.io import atomic_write_json

RESULTS = Path(__file__).parent / "results"


def _run(module: str, name: str) -> dict:
    r = subprocess.run([sys.executable, "-m", module, name], capture_output=True, text=True)
    if r.returncode != 0:
        return {"name": name, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def foundation() -> dict:
    names = ("moderngl", "pyrender", "pyrender_flat", "pyrender_static", "flame")
    res = {k: _run("benchmarks.foundation", k) for k in names}
    ours = res["moderngl"]
    # compare with pyrender's fastest mode (a static mesh, flat): the most conservative ratio
    peer = max((res["pyrender"], res["pyrender_flat"], res["pyrender_static"]), key=lambda r: r.get("fps", 0))
    summary = {
        "render_fps_512": round(ours.get("fps", 0), 1),
        "render_and_encode_fps_512": round(ours.get("render_and_encode_fps", 0), 1),
        "pyrender_smooth_fps_512": round(res["pyrender"].get("fps", 0), 1),
        "pyrender_flat_fps_512": round(res["pyrender_flat"].get("fps", 0), 1),
        "pyrender_static_flat_fps_512": round(res["pyrender_static"].get("fps", 0), 1),
        "speedup_vs_pyrender": round(ours["fps"] / peer["fps"], 2) if "fps" in ours and "fps" in peer else None,
        "flame_forward_1000_frames_s": res["flame"].get("seconds"),
    }
    return {"results": res, "summary": summary}


def live_bench(meta: dict) -> dict:
    """`avitalk live` at real time (benchmarks/live.py): the look-ahead curve and the 10-minute stream."""
    live = {"curve": _run("benchmarks.live", "curve"), "reread": _run("benchmarks.live", "reread"),
            "long": _run("benchmarks.live", "long")}
    atomic_write_json(RESULTS / "live.json", {"meta": meta, **live})
    return live


def _meta() -> dict:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def main() -> None:
    meta = _meta()
    if sys.argv[1:] == ["live"]:  # make bench-live: only the live stream (about 15 minutes)
        live = live_bench(meta)
        print(json.dumps({k: v.get(k, v) for k, v in live.items()})[:2000])
        print(f"wrote {RESULTS / 'live.json'}")
        return
    out = {"meta": meta, "foundation": foundation()}
    path = atomic_write_json(RESULTS / "foundation.json", out)
    models = {k: _run("benchmarks.models", k) for k in ("stage2", "stage1")}
    atomic_write_json(RESULTS / "models.json", {"meta": meta, **models})
    pipe = _run("benchmarks.pipeline", "run")
    cold = _run("benchmarks.pipeline", "cold")
    many = _run("benchmarks.pipeline", "batched")
    atomic_write_json(RESULTS / "pipeline.json", {"meta": meta, "pipeline": pipe, "cold_start": cold, "batched": many})
    st = _run("benchmarks.synthtalk", "400")
    atomic_write_json(RESULTS / "synthtalk.json", {"meta": meta, "synthtalk": st})
    live = live_bench(meta)
    s = out["foundation"]["summary"]
    rows = [
        ("render 512x512, moderngl (ours)", f"{s['render_fps_512']:.0f} frames/s"),
        ("render + H.264/AAC encode to mp4, 512x512 (ours)", f"{s['render_and_encode_fps_512']:.0f} frames/s"),
        ("render 512x512, pyrender animated, smooth", f"{s['pyrender_smooth_fps_512']:.0f} frames/s"),
        ("render 512x512, pyrender animated, flat", f"{s['pyrender_flat_fps_512']:.0f} frames/s"),
        ("render 512x512, pyrender static mesh, FLAT (upper bound)", f"{s['pyrender_static_flat_fps_512']:.0f} frames/s"),
        ("speed-up over pyrender's fastest mode", f"{s['speedup_vs_pyrender']}x"),
    ]
    for name, sec in (s["flame_forward_1000_frames_s"] or {}).items():
        rows.append((f"FLAME forward, 1000 frames, {name}", f"{sec:.3f} s"))
    s2, s1 = models["stage2"], models["stage1"]
    if "synthesize_10s_s" in s2:
        rows.append(("stage 2: synthesize 10 s of speech (encoder excluded)", f"{s2['synthesize_10s_s']:.3f} s"))
        rows.append(("stage 2: 4 samples at once", f"{s2['synthesize_10s_4_samples_s']:.3f} s"))
        rows.append((f"audio encoder {s2['encoder']}", f"{s2['audio_encoder_s_per_speech_s'] * 1000:.1f} ms per s of speech"))
    if "tokens_per_s" in s1:
        rows.append(("stage 1: 48 tokens for 5 s of speech, transformers generate", f"{s1['generate_48_tokens_5s_speech_s']:.3f} s ({s1['tokens_per_s']:.0f} tokens/s)"))
        rows.append(("stage 1: the same on LlamaLite (what avitalk run uses)", f"{s1['lean_generate_48_tokens_5s_speech_s']:.3f} s ({s1['lean_tokens_per_s']:.0f} tokens/s)"))
    for name in ("no_render", "render_512"):
        if name in pipe:
            m = pipe[name]["median"]
            parts = ", ".join(f"{k[:-2]} {v:.2f}" for k, v in m.items() if k not in ("total_s", "load_checkpoint_s", "audio_load_s"))
            rows.append((f"avitalk run, 10 s of speech, {name.replace('_', ' ')}: stages (s)", parts))
            rows.append((f"avitalk run, 10 s of speech, {name.replace('_', ' ')}: total / without loading",
                         f"{m['total_s']:.2f} s / {pipe[name]['without_loading_s']:.2f} s"))
    if "error" in pipe:
        rows.append(("avitalk run", f"failed: {pipe['error']}"))
    if "ratio" in cold:
        rows.append(("cold start: avitalk run 10 s --no-render / python -c 'import torch' (wall)",
                     f"{cold['avitalk_run_no_render_s']:.2f} s / {cold['import_torch_s']:.2f} s = {cold['ratio']:.2f}x "
                     "(target <= 3)"))
    elif "error" in cold:
        rows.append(("cold start", f"failed: {cold['error']}"))
    if "stage1_speedup" in many:
        rows.append((f"evaluation over {many['clips']} clips ({many['speech_s']:.0f} s): stage 1 one by one / batched",
                     f"{many['stage1_one_by_one_s']:.2f} s / {many['stage1_batched_s']:.2f} s = {many['stage1_speedup']:.1f}x "
                     f"({many['same_instructions']}/{many['clips']} same texts)"))
        rows.append((f"evaluation over {many['clips']} clips: stage 2 one by one / batched",
                     f"{many['stage2_one_by_one_s']:.2f} s / {many['stage2_batched_s']:.2f} s = {many['stage2_speedup']:.1f}x "
                     f"(motion max diff {many['motion_max_diff']:.1e})"))
    elif "error" in many:
        rows.append(("batched evaluation", f"failed: {many['error']}"))
    if "clips_per_s" in st:
        rows.append((f"SynthTalk generation, {st['clips']} clips, {st['workers']} processes", f"{st['clips_per_s']:.1f} clips/s"))
    for c in live["curve"].get("curve", []):
        rows.append((f"avitalk live, look-ahead {c['lookahead_ms']:.0f} ms: latency median / p99, late p99, cores busy",
                     f"{c['latency_ms']['median']:.0f} / {c['latency_ms']['p99']:.0f} ms, {c['late_ms']['p99']:.0f} ms, "
                     f"{c['cpu_cores_busy']:.2f}"))
    lg = live["long"].get("long")
    if lg:
        rows.append(("avitalk live, 10 minutes at 120 ms: latency median / p99, late p99, memory growth",
                     f"{lg['latency_ms']['median']:.0f} / {lg['latency_ms']['p99']:.0f} ms, {lg['late_ms']['p99']:.0f} ms, "
                     f"{lg['rss_mb']['growth_after_1_min']:.0f} MB"))
    for r in live.get("reread", {}).get("reread", []):
        rr = r.get("reread")
        rows.append((f"avitalk live, 60 s at 120 ms, {'with' if rr else 'without'} stage 1 re-reading: latency median / p99"
                     + (", a read's seconds" if rr else ""),
                     f"{r['latency_ms']['median']:.0f} / {r['latency_ms']['p99']:.0f} ms"
                     + (f", {rr['read_s_median']:.2f} s ({rr['reads']} reads)" if rr and rr["reads"] else "")))
    for k in ("curve", "reread", "long"):
        if "error" in live[k]:
            rows.append((f"avitalk live {k}", f"failed: {live[k]['error']}"))
    w = max(len(r[0]) for r in rows)
    print(f"benchmarks on {meta['cpus']} CPUs ({meta['machine']}), medians of 3 runs")
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
