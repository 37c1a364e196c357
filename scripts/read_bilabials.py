"""Experiment (docs/real-faces.md, "Tried: the lips shut at read speech's aligned /b p m/"): fine-tune a trained
stage 2's lip-sync decoder so that, on plain read speech, the lips shut at the /b p m/ the embedded Whisper's words
place (eval/bilabial.py's aligner) and open at the open vowels, while staying what it was everywhere else (distilled
towards the decoder as trained on SynthTalk rows, their pause copies, the motion corpus's rows, and the read clips'
frames away from those sounds). Not part of the build: it was measured and not kept.

    python scripts/read_bilabials.py --stage2 WORK/stage2 --data WORK/data --grid WORK/grid --read WORK/read \
        --out OUT [--steps 300 --lr 1e-4 --distill 100 --margin-mm 0.3 --open-weight 1]

Writes OUT/decoder.safetensors (copy it over a pipeline folder's to measure it with `avitalk eval`) and OUT/events.json
(the read clips' aligned events, reused on a second run); prints the decoder's closure on the read speakers it held out
(every fifth speaker), before and after.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch

from avitalk.io import atomic_write_json
from avitalk.types import MOTION_FPS as FPS

CROP, W = 64, 2  # frames per row; frames either side of an event (80 ms at 25 fps, the metric's window)


def aligned_events(read: Path, path: Path) -> dict:
    """{clip id: {speaker, events [(kind, s)]}} for every read clip (transcribed and aligned by eval/bilabial.py)."""
    if path.is_file():
        return json.loads(path.read_text())
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.eval import bilabial as bl

    al, out = bl.WordAligner(), {}
    for c in tqdm(read_manifest(read), desc="aligning read speech", unit="clip"):
        a = audio_io.load(read / c.audio)
        words = al.align(a.samples, c.extra.get("text") or al.transcribe(a.samples))
        out[c.id] = {"speaker": c.speaker, "events": bl.events_from_words(words, bl.align_lag(c.extra))}
    atomic_write_json(path, out)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for k in ("--stage2", "--data", "--grid", "--read", "--out"):
        ap.add_argument(k, required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--distill", type=float, default=100.0)
    ap.add_argument("--margin-mm", type=float, default=0.3)
    ap.add_argument("--open-weight", type=float, default=1.0)
    ap.add_argument("--pause-rows", type=int, default=1, help="1: half of SynthTalk's distilled rows are pause copies")
    a = ap.parse_args(argv)

    from avitalk.data.dataset import FeatureCache, pad_arrays as pad
    from avitalk.encoders import to_motion_rate
    from avitalk.encoders.cache import cache_paused_features
    from avitalk.eval import bilabial as bl
    from avitalk.flame import FlameModel
    from avitalk.stage2_synthesis.synthesizer import Synthesizer, save_module

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    syn = Synthesizer.load(a.stage2)
    enc = syn.audio_encoder
    dec = syn.decoder.train()
    teacher = copy.deepcopy(dec).eval().requires_grad_(False)
    model = FlameModel.from_spec(syn.cfg.flame_model)
    lips = model.region("lips")
    up, lo = model.lip_midline()
    subset = model.subset(lips)
    gi = (torch.as_tensor(np.flatnonzero(np.isin(lips, up))), torch.as_tensor(np.flatnonzero(np.isin(lips, lo))))

    def gap(m: torch.Tensor) -> torch.Tensor:  # [N, 53] -> [N] mm
        return FlameModel.lip_gap(subset(m[:, :-3], m[:, -3:]), *gi)

    def rows(root: Path, n: int, pause: bool) -> list[tuple[np.ndarray, str]]:
        man = [json.loads(x) for x in open(root / "manifest.jsonl")]
        man = [r for r in man if r["split"] == "train"]
        cache = FeatureCache(root / "features", enc.key)
        pc = cache_paused_features(root, enc, 1, seed=0, progress=False) if pause else None
        res = []
        for j, r in enumerate(rng.choice(man, min(n, len(man)), replace=False)):
            f = pc.get(f"{r['id']}~pause0") if pause and j % 2 else cache.get(r["id"])
            res.append((to_motion_rate(f, f.shape[0] // 2).astype(np.float32), r["instructions"][0]))
        return res

    with torch.no_grad():
        zref = syn.prior.map(torch.as_tensor(syn.text_encoder.encode(["A person speaks."])))[0]
    ev = aligned_events(Path(a.read), out / "events.json")
    rcache = FeatureCache(Path(a.read) / "features", enc.key)
    libri = {c: (to_motion_rate(f, f.shape[0] // 2).astype(np.float32), v)
             for c, v in ev.items() if (f := rcache.get(c)) is not None}
    held = set(sorted({v["speaker"] for v in ev.values()})[::5])
    tr = [c for c, (_, v) in libri.items() if v["speaker"] not in held and any(k == "bilabial" for k, _ in v["events"])]
    va = [c for c, (_, v) in libri.items() if v["speaker"] in held]
    dis = rows(Path(a.data), 300, bool(a.pause_rows)) + rows(Path(a.grid), 150, False)
    with torch.no_grad():
        dz = syn.prior.map(torch.as_tensor(syn.text_encoder.encode([t for _, t in dis])))
    print(f"read clips: {len(tr)} to train on, {len(va)} held out; {len(dis)} distilled rows", flush=True)

    def crop(f: np.ndarray, center: int | None = None) -> tuple[int, np.ndarray]:
        if len(f) <= CROP:
            return 0, f
        s = (int(rng.integers(0, len(f) - CROP + 1)) if center is None
             else int(np.clip(center - rng.integers(8, CROP - 8), 0, len(f) - CROP)))
        return s, f[s : s + CROP]

    def held_out(net) -> dict:
        n = {"closed": 0, "bilabials": 0, "opened": 0, "open_vowels": 0}
        with torch.no_grad():
            for c in va:
                f, v = libri[c]
                s = bl.closure_scores(gap(net(torch.as_tensor(f)[None], zref[None])[0]).numpy(), v["events"])
                for k in n:
                    n[k] += s[k]
        return {**n, "closed_share": n["closed"] / max(n["bilabials"], 1),
                "opened_share": n["opened"] / max(n["open_vowels"], 1)}

    before = held_out(teacher)
    opt = torch.optim.AdamW(dec.parameters(), lr=a.lr, weight_decay=0.01)
    std = dec.motion_std
    t0 = time.time()
    for step in range(a.steps):
        fs, evs = [], []
        for c in rng.choice(tr, 8):
            f, v = libri[c]
            bil = [t for k, t in v["events"] if k == "bilabial" and t * FPS < len(f)]
            s, fc = crop(f, int(bil[int(rng.integers(len(bil)))] * FPS))
            fs.append(fc)
            evs.append([(k, t * FPS - s) for k, t in v["events"] if 0 <= t * FPS - s < len(fc)])
        x, m = pad(fs)
        z = zref[None].expand(len(fs), -1)
        p = dec(x, z, m)
        with torch.no_grad():
            q = teacher(x, z, m)
        g = gap(p.reshape(-1, p.shape[-1])).reshape(p.shape[:2])
        seal, opn, near = [], [], torch.zeros_like(m)
        for i, es in enumerate(evs):
            for k, e in es:
                lo_, hi_ = max(0, int(np.floor(e)) - W), min(int(m[i].sum()), int(np.ceil(e)) + W + 1)
                if k == "bilabial":
                    seal.append(torch.relu(g[i, lo_:hi_].min() - a.margin_mm) ** 2)
                elif a.open_weight:
                    opn.append(torch.relu(3.5 - g[i, lo_:hi_].max()) ** 2)
                else:
                    continue
                near[i, max(0, lo_ - 2) : hi_ + 2] = True
        events = torch.stack(seal).mean() + (a.open_weight * torch.stack(opn).mean() if opn else 0.0)
        keep = (m & ~near).unsqueeze(-1).float()
        d_read = (((p - q) / std) ** 2 * keep).sum() / keep.sum().clamp_min(1) / p.shape[-1]
        idx = rng.choice(len(dis), 8)
        x2, m2 = pad([crop(dis[i][0])[1] for i in idx])
        z2 = dz[torch.as_tensor(idx)]
        p2 = dec(x2, z2, m2)
        with torch.no_grad():
            q2 = teacher(x2, z2, m2)
        k2 = m2.unsqueeze(-1).float()
        d_rest = (((p2 - q2) / std) ** 2 * k2).sum() / k2.sum() / p2.shape[-1]
        loss = events + a.distill * (d_read + d_rest)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            print(f"step {step}: events {events.item():.3f}, distill {d_read.item():.4f} / {d_rest.item():.4f} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    after = held_out(dec.eval())
    save_module(dec, out / "decoder.safetensors")
    atomic_write_json(out / "held_out.json", {"before": before, "after": after, "args": vars(a)})
    print(f"held-out read speakers ({len(va)} clips), decoder alone with 'A person speaks.': /b p m/ closed "
          f"{before['closed_share']:.1%} -> {after['closed_share']:.1%}, open vowels open {before['opened_share']:.1%} "
          f"-> {after['opened_share']:.1%}")


if __name__ == "__main__":
    main()
