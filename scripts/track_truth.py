"""Does the tracker + fit recover motion? Render SynthTalk clips (known coefficients) on the stand-in head to mp4, run
`avitalk data track` on the videos exactly as on anyone's, and compare the fits with the truth.

    python scripts/track_truth.py --clips 24 --work build/track-truth      (make track-truth)

Per clip: lip-gap correlation, jaw-opening correlation (the jaw pose's opening angle), median lip-gap error (mm),
and vertex errors per region (mm; the fitted identity included, head pose excluded). Clips come from the test
speakers of a SynthTalk plan with its own seed, rendered at GRID's frame size (360x288). Writes summary.json and
side_by_side.png (truth render | the video with the tracked landmarks | the fit, on the stand-in).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from avitalk.data.synthtalk import make_clip, plan
from avitalk.flame import FlameModel
from avitalk.flame.standin import AU_NAMES, standin_arrays
from avitalk.io import atomic_write_json
from avitalk.render.renderer import renderer_for_model
from avitalk.render.video import write_video
from avitalk.track.run import read_frames, track_folder
from avitalk.types import FlameSequence

REGIONS = ("lips", "face", "eye_region", "forehead", "nose")


def render_clips(work: Path, n: int, seed: int) -> list[str]:
    model = FlameModel.standin()
    M = standin_arrays()[0]["au_to_expression"]
    (work / "videos").mkdir(parents=True, exist_ok=True)
    (work / "truth").mkdir(parents=True, exist_ok=True)
    ids = []
    with renderer_for_model(model, size=(360, 288)) as r:
        for spec in [s for s in plan(20 * n, seed=seed) if s.split == "test"][:n]:
            ids.append(spec.id)
            if (work / "videos" / f"{spec.id}.mp4").is_file():
                continue
            seq = make_clip(spec, M, list(AU_NAMES))["sequence"]
            seq.save(work / "truth" / f"{spec.id}.npz")
            write_video(work / "videos" / f"{spec.id}.mp4", r.render_frames(model.sequence_vertices(seq)))
    return ids


def compare(model, truth: FlameSequence, fit: dict) -> dict:
    up, lo = (torch.as_tensor(a) for a in model.lip_midline())
    v = model.sequence_vertices(truth)
    T = min(len(v), len(fit["expression"]))
    vf = model.sequence_vertices(FlameSequence(fit["expression"][:T], fit["jaw_pose"][:T]), shape=fit["shape"])
    v = v[:T]
    g, gf = (model.lip_gap(torch.as_tensor(x), up, lo).numpy() for x in (v, vf))
    row = {
        "frames": T,
        "lip_gap_r": float(np.corrcoef(g, gf)[0, 1]),
        "jaw_r": float(np.corrcoef(truth.jaw_pose[:T, 0], fit["jaw_pose"][:T, 0])[0, 1]),
        "lip_gap_error_mm": float(np.median(np.abs(g - gf))),
        "lip_gap_bias_mm": float(np.mean(gf - g)),
    }
    for reg in REGIONS:
        row[f"vertex_error_mm_{reg}"] = float(np.linalg.norm(v[:, model.region(reg)] - vf[:, model.region(reg)],
                                                             axis=-1).mean() * 1000)
    return row


def picture(model, work: Path, fits: Path, clip: str, out: Path) -> None:
    from PIL import Image, ImageDraw

    truth = FlameSequence.load(work / "truth" / f"{clip}.npz")
    fit = np.load(fits / f"{clip}.npz")
    frames, _ = read_frames(work / "videos" / f"{clip}.mp4")
    up, lo = (torch.as_tensor(a) for a in model.lip_midline())
    v = model.sequence_vertices(truth)
    g = model.lip_gap(torch.as_tensor(v), up, lo).numpy()
    picks = [int(np.argmin(g)), int(np.argsort(g)[len(g) // 2]), int(np.argmax(g))]
    vf = model.sequence_vertices(FlameSequence(fit["expression"], fit["jaw_pose"]), shape=fit["shape"])
    S = 220
    sheet = Image.new("RGB", (3 * S, len(picks) * S), (255, 255, 255))
    with renderer_for_model(model, size=(288, 288)) as r:
        for row, i in enumerate(picks):
            vid = Image.fromarray(frames[i]).copy()
            d = ImageDraw.Draw(vid)
            for x, y, _ in fit["landmarks"][i].astype(float):
                d.point((x, y), fill=(255, 40, 40))
            tiles = [Image.fromarray(r.render(v[i])), vid.crop((36, 0, 324, 288)), Image.fromarray(r.render(vf[i]))]
            for col, t in enumerate(tiles):
                sheet.paste(t.resize((S, S)), (col * S, row * S))
            ImageDraw.Draw(sheet).text((4, row * S + 4), f"truth gap {g[i]:.1f} mm", fill=(0, 0, 0))
    for col, name in enumerate(("truth", "video + landmarks", "fit")):
        ImageDraw.Draw(sheet).text((col * S + 4, len(picks) * S - 14), name, fill=(0, 0, 0))
    sheet.save(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--work", type=Path, default=Path("build/track-truth"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--landmarks", default="mesh", choices=("mesh", "refined"),
                    help="the tracker (refined: after `avitalk data track --install-refined`); fits go to WORK/fits "
                         "(mesh) or WORK/fits-refined")
    a = ap.parse_args()
    ids = render_clips(a.work, a.clips, a.seed)
    fits = a.work / ("fits" if a.landmarks == "mesh" else f"fits-{a.landmarks}")
    rep = track_folder(a.work / "videos", fits, workers=a.workers, landmarks=a.landmarks)
    model = FlameModel.standin()
    rows = {}
    for c in ids:
        if (fits / f"{c}.npz").is_file():
            truth = FlameSequence.load(a.work / "truth" / f"{c}.npz")
            rows[c] = compare(model, truth, dict(np.load(fits / f"{c}.npz")))
    keys = [k for k in next(iter(rows.values())) if k != "frames"]
    summary = {
        "landmarks": a.landmarks, "clips": len(rows), "frames": sum(r["frames"] for r in rows.values()),
        "median": {k: round(float(np.median([r[k] for r in rows.values()])), 3) for k in keys},
        "worst_lip_gap_r": round(min(r["lip_gap_r"] for r in rows.values()), 3),
        "tracking_frames_per_second": rep["new_frames_per_second"], "per_clip": rows,
    }
    tag = "" if a.landmarks == "mesh" else f"_{a.landmarks}"
    atomic_write_json(a.work / f"summary{tag}.json", summary)
    picture(model, a.work, fits, ids[0], a.work / f"side_by_side{tag}.png")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_clip"}, indent=1))


if __name__ == "__main__":
    main()
