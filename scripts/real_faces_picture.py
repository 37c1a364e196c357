"""One held-out real clip three ways, at its bilabials and open vowels: the video frame, the tracked fit on our head,
and the face avitalk generates from the audio alone.

    python scripts/real_faces_picture.py --data DATA --video-root GRID/ --clip s1_bbaf2n -o docs/real_faces_grid.jpg

DATA is an `avitalk data grid` dataset; the clip's video is found under --video-root by its talker and name.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    from PIL import Image, ImageDraw

    from avitalk import AVITalkingPipeline
    from avitalk.audio import load
    from avitalk.data.manifest import read_manifest
    from avitalk.eval import bilabial as bl
    from avitalk.eval.real_speech import LipGap
    from avitalk.flame import FlameModel
    from avitalk.render.renderer import renderer_for_model
    from avitalk.track.run import read_frames
    from avitalk.types import MOTION_FPS, FlameSequence

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--video-root", type=Path, required=True)
    ap.add_argument("--clip", required=True)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("-o", "--out", type=Path, required=True)
    a = ap.parse_args()
    clip = next(c for c in read_manifest(a.data) if c.id == a.clip)
    talker, name = clip.id.split("_", 1)
    video = next(a.video_root.rglob(f"{talker}/{name}.*"))
    frames, _ = read_frames(video)
    tracked = FlameSequence.load(a.data / clip.flame)
    pipe = AVITalkingPipeline.from_pretrained(a.checkpoint)
    ours = pipe.synthesize(load(a.data / clip.audio), clip.instructions[0], seed=0)[0]
    model = FlameModel.standin()
    gap = LipGap(model)
    events = bl.events_from_words([tuple(w) for w in clip.extra["words"]], 0.0)
    picks, seen = [], set()
    for kind, t in events:  # the first two bilabials and the first two open vowels
        i = min(int(round(t * MOTION_FPS)), tracked.num_frames - 1, ours.num_frames - 1)
        if sum(k == kind for k, _ in picks) < 2 and i not in seen:
            picks.append((kind, i))
            seen.add(i)
    picks.sort(key=lambda p: p[1])
    g_t, g_o = gap(tracked), gap(ours)
    S = 200
    sheet = Image.new("RGB", (len(picks) * S, 3 * S + 18), (255, 255, 255))
    d = ImageDraw.Draw(sheet)
    with renderer_for_model(model, size=(256, 256)) as r:
        vt = model.sequence_vertices(tracked)
        vo = model.sequence_vertices(ours)
        for col, (kind, i) in enumerate(picks):
            h, w = frames[i].shape[:2]
            face = Image.fromarray(frames[min(i, len(frames) - 1)]).crop((w // 2 - 80, h // 2 - 60, w // 2 + 80,
                                                                           h // 2 + 100))
            tiles = [face, Image.fromarray(r.render(vt[i])).crop((40, 40, 216, 216)),
                     Image.fromarray(r.render(vo[i])).crop((40, 40, 216, 216))]
            for row, t in enumerate(tiles):
                sheet.paste(t.resize((S, S)), (col * S, row * S))
            word = next((wd for wd, s, e in clip.extra["words"] if s <= i / MOTION_FPS + 0.04 and i / MOTION_FPS - 0.04 <= e), "")
            d.text((col * S + 4, 3 * S + 3), f"{kind} '{word}': {g_t[i]:.1f} / {g_o[i]:.1f} mm", fill=(0, 0, 0))
    for row, label in enumerate(("video (held out)", "tracked fit", "generated")):
        d.text((4, row * S + 4), label, fill=(255, 255, 255) if row == 0 else (0, 0, 0))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(a.out, quality=88)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
