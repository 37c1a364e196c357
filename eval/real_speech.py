"""Metrics on labelled real speech that need no ground-truth motion and no SyncNet checkpoint.

(a) **emotion**: the emotion word stage 1 writes vs the clip's label; accuracy over the labels present (RAVDESS: 7
    classes, calm counted as neutral) and the confusion matrix (rows: true, columns: said; an 8th column for
    "contempt" and one for "none" when the text names no vocabulary emotion).
(b) **mouth vs loudness**: Pearson r per clip between the mouth opening (the lip gap on the mesh, in mm) and the
    loudness envelope in dB (RMS per 40 ms motion frame, floored 60 dB under the clip's loud level).
(c) **silence rest**: the mean mouth opening in silent frames (more than 35 dB under the clip's loud level, the 95th
    percentile frame) over the mean opening in loud frames (within 10 dB of it); 0 = the mouth rests in pauses.
(d) **bilabial closure** (:mod:`eval.bilabial`): the lips close at /b p m/ onsets found by aligning the words.

The mouth opening is the lip gap on the mesh: the lowest upper-lip vertex minus the highest lower-lip vertex on the
front of the lips near the midline (mm, 0 when the lips touch; the lower lip is what is skinned to the jaw). It counts what a viewer sees, whether it comes from the jaw or the lips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from avitalk.audio import loudness_db  # noqa: F401 - re-exported: the metric lives with its loudness envelope
from avitalk.vocab import EMOTIONS
from avitalk.stage1_instruct.reader import fit_temperature, softmax  # noqa: F401 - their one home (the folds scripts)

SILENT_DB = 35.0
ONE_EMOTION_SHARE = 0.4  # reading_report flags a corpus that gets one emotion for more than this share of its clips
LOUD_DB = 10.0


# ---------------------------------------------------------------------------------------------- (a) emotion
def emotion_report(said: Sequence[str | None], true: Sequence[str]) -> dict[str, Any]:
    """Accuracy and confusion counts of said vs true emotions (``None`` = no emotion word)."""
    labels = [e for e in EMOTIONS if e in set(true)]
    cols = list(EMOTIONS) + ["none"]
    conf = np.zeros((len(labels), len(cols)), int)
    for s, t in zip(said, true):
        conf[labels.index(t), cols.index(s if s in EMOTIONS else "none")] += 1
    per = {e: float(conf[i, cols.index(e)] / max(1, conf[i].sum())) for i, e in enumerate(labels)}
    correct = sum(int(s == t) for s, t in zip(said, true))
    return {"accuracy": correct / max(1, len(true)), "clips": len(true), "per_emotion": per,
            "confusion": {"rows": labels, "columns": cols, "counts": conf.tolist()},
            "chance": 1 / max(1, len(labels))}


def calibration(logits: np.ndarray, labels: Sequence[int], t: float = 1.0, bins: int = 10) -> dict[str, Any]:
    """How far the top probability of softmax(logits / t) is from being right that often: negative log-likelihood,
    expected calibration error (``bins`` equal-width confidence bins) and accuracy per confidence band."""
    y = np.asarray(labels)
    p = softmax(logits, t)
    conf, right = p.max(1), p.argmax(1) == y
    ece = 0.0
    for lo in np.linspace(0, 1, bins, endpoint=False):
        m = (conf > lo) & (conf <= lo + 1 / bins)
        if m.any():
            ece += m.mean() * abs(right[m].mean() - conf[m].mean())
    bands = []
    for lo, hi in ((0.0, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.01)):
        m = (conf >= lo) & (conf < hi)
        bands.append({"from": lo, "to": min(hi, 1.0), "share": float(m.mean()),
                      "accuracy": float(right[m].mean()) if m.any() else None})
    return {"temperature": float(t), "nll": float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean()),
            "ece": float(ece), "accuracy": float(right.mean()), "bands": bands}


def scores(pred: np.ndarray, y: np.ndarray, corpus: np.ndarray) -> dict[str, Any]:
    """Emotions written (indices into EMOTIONS) against labels. Per corpus: accuracy, the share written neutral, the
    precision of its instructions that name an emotion, the most-written emotion and its share; pooled: the precision
    of the instructions that name an emotion (not neutral) and their share (the coverage)."""
    pred, y, corpus = np.asarray(pred), np.asarray(y), np.asarray(corpus)
    neu = EMOTIONS.index("neutral")
    out: dict[str, Any] = {}
    for c in sorted(set(corpus.tolist())):
        m = corpus == c
        vals, counts = np.unique(pred[m], return_counts=True)
        named = m & (pred != neu)
        out[c] = {"clips": int(m.sum()), "accuracy": float((pred[m] == y[m]).mean()),
                  "written_neutral": float((pred[m] == neu).mean()),
                  "non_neutral_precision": float((pred[named] == y[named]).mean()) if named.any() else None,
                  "most_written": [EMOTIONS[int(vals[counts.argmax()])], float(counts.max() / m.sum())]}
    nn = pred != neu
    out["non_neutral_precision"] = float((pred[nn] == y[nn]).mean()) if nn.any() else None
    out["non_neutral_share"] = float(nn.mean())
    return out


def reliability(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per confidence bin: the clips' share, their mean top probability and how often the top emotion was right."""
    p, y = np.asarray(p), np.asarray(y)
    conf, right = p.max(1), p.argmax(1) == y
    out = []
    for lo in np.linspace(0, 1, bins, endpoint=False):
        m = (conf > lo) & (conf <= lo + 1 / bins)
        if m.any():
            out.append({"from": float(lo), "share": float(m.mean()), "confidence": float(conf[m].mean()),
                        "accuracy": float(right[m].mean())})
    return out


def coverage_curve(p: np.ndarray, y: np.ndarray, corpus: np.ndarray) -> list[dict[str, Any]]:
    """For each threshold of :data:`stage1_instruct.reader.THRESHOLDS`: :func:`scores` of the emotions written when
    an emotion under it is written neutral."""
    from avitalk.stage1_instruct.reader import THRESHOLDS, decide_np

    return [{"threshold": float(t), **scores(decide_np(p, t), y, corpus)} for t in THRESHOLDS]


def plot_reliability(bins: list[dict[str, float]], path, title: str) -> None:
    """How often the top emotion is right against how sure the reader was (each point labelled with its share)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avitalk.io import atomic_path

    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfectly calibrated")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label="emotion reader")
    for b in bins:
        ax.annotate(f"{b['share']:.0%}", (b["confidence"], b["accuracy"]), fontsize=7, xytext=(3, -9),
                    textcoords="offset points")
    ax.set_xlabel("probability of the top emotion (calibrated)")
    ax.set_ylabel("how often it was right")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_coverage(curve: list[dict[str, Any]], threshold: float | None, path) -> None:
    """Per threshold: the share of instructions that name an emotion, how often that emotion is right, and each
    corpus's accuracy; a dotted line at the threshold in use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avitalk.io import atomic_path

    th = [x["threshold"] for x in curve]
    fig, ax = plt.subplots(figsize=(5.6, 4))
    ax.plot(th, [x["non_neutral_share"] for x in curve], label="instructions naming an emotion (coverage)")
    ax.plot(th, [x["non_neutral_precision"] if x["non_neutral_precision"] is not None else np.nan for x in curve],
            label="... naming the right one (precision)")
    for corpus in sorted(k for k in curve[0] if isinstance(curve[0][k], dict)):
        ax.plot(th, [x[corpus]["accuracy"] for x in curve], ls="--", label=f"{corpus}: accuracy")
    if threshold is not None:
        ax.axvline(threshold, color="0.4", lw=1, ls=":")
    ax.set_xlabel("threshold: an emotion heard with less is written neutral")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def plot_confusion(report: dict[str, Any], path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avitalk.io import atomic_path

    c = report["confusion"]
    counts = np.asarray(c["counts"], float)
    keep = [j for j, name in enumerate(c["columns"]) if counts[:, j].sum() > 0 or name in c["rows"]]
    counts = counts[:, keep]
    cols = [c["columns"][j] for j in keep]
    frac = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(cols), 1.0 + 0.6 * len(c["rows"])))
    ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(frac.shape[0]):
        for j in range(frac.shape[1]):
            if counts[i, j]:
                ax.text(j, i, f"{frac[i, j]:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(c["rows"])), c["rows"])
    ax.set_xlabel("emotion in the instruction")
    ax.set_ylabel("true emotion")
    ax.set_title(title or f"accuracy {report['accuracy']:.1%} ({report['clips']} clips)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------------ mouth opening
class LipGap:
    """Lip gap (mm) per frame of a FlameSequence on a FLAME-format head (exact LBS on the lip vertices only)."""

    def __init__(self, model=None, midline_fraction: float = 0.15):
        from avitalk.flame import FlameModel

        self.model = model or FlameModel.standin()
        self.upper, self.lower = self.model.lip_midline(midline_fraction)
        self.subset = self.model.subset(np.concatenate([self.upper, self.lower]))

    def __call__(self, seq) -> np.ndarray:
        import torch

        nu, n = len(self.upper), len(self.upper) + len(self.lower)
        with torch.no_grad():
            v = self.subset(torch.as_tensor(seq.expression), torch.as_tensor(seq.jaw_pose))
            return self.model.lip_gap(v, torch.arange(nu), torch.arange(nu, n)).numpy()


def mouth_loudness(opening: np.ndarray, db: np.ndarray) -> dict[str, float]:
    """(b) Pearson r of opening vs loudness (dB, floored 60 dB under the loud level) and (c) the silence-rest ratio
    (NaN when a clip has no silent or no loud frames)."""
    n = min(len(opening), len(db))
    o, d = np.asarray(opening[:n], float), np.asarray(db[:n], float)
    loud = np.percentile(d, 95)
    d_floor = np.maximum(d, loud - 60)
    r = float(np.corrcoef(o, d_floor)[0, 1]) if o.std() > 1e-9 and d_floor.std() > 1e-9 else float("nan")
    silent, loud_frames = d < loud - SILENT_DB, d >= loud - LOUD_DB
    ratio = float("nan")
    if silent.any() and loud_frames.any() and o[loud_frames].mean() > 1e-6:
        ratio = float(o[silent].mean() / o[loud_frames].mean())
    return {"r": r, "silence_rest_ratio": ratio, "silent_frames": int(silent.sum()), "loud_frames": int(loud_frames.sum())}


def summarize(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if not len(v):
        return {"median": float("nan"), "mean": float("nan"), "clips": 0}
    return {"median": float(np.median(v)), "mean": float(v.mean()), "p25": float(np.percentile(v, 25)),
            "p75": float(np.percentile(v, 75)), "clips": int(len(v))}


# ------------------------------------------------------------------------------------------------ the run
NEUTRAL_TEXT = "A person speaks."


def evaluate_real_speech(pipe, data, split: str | None = None, limit: int | None = None,
                         speakers: Sequence[str] | None = None, seed: int = 0, progress: bool = True,
                         bilabial: bool = True, batch_size: int = 32) -> dict[str, Any]:
    """(a)-(d) on a folder of labelled real speech (any dataset folder; motion is not needed). The mouth metrics are
    measured on stage 2's motion for stage 1's own instruction (what a user gets) and for "A person speaks.".
    Clips go through the stages ``batch_size`` at a time (``instruct_many`` / ``synthesize_many``)."""
    import time
    from pathlib import Path

    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.flame import FlameModel

    from . import bilabial as bl

    data = Path(data)
    clips = read_manifest(data, None if split in (None, "all") else split)
    if speakers:
        clips = [c for c in clips if c.speaker in set(speakers)]
    clips = clips[:limit]
    if not clips:
        from avitalk.errors import DatasetError

        raise DatasetError(f"{data}: no clips to evaluate (split {split}, speakers {speakers})")
    gap = LipGap(FlameModel.from_spec(pipe.cfg.flame_model))
    aligner = bl.WordAligner() if bilabial else None
    said, texts, per_clip, heard = [], [], [], []
    mouth = {"stage1": [], "neutral": []}
    closure = {"stage1": [], "neutral": []}
    t0 = time.perf_counter()
    # batches of clips: stage 1 and stage 2 batched over each (the same results as clip by clip)
    bar = tqdm(total=len(clips), desc="real speech", unit="clip", disable=not progress or None)
    for b0 in range(0, len(clips), batch_size):
        batch = clips[b0 : b0 + batch_size]
        auds = [audio_io.load(data / c.audio) for c in batch]
        feats = [pipe.encode(a) for a in auds]
        seeds = [seed + b0 + k for k in range(len(batch))]
        instrs = pipe.instruct_many(auds, feats)
        heard += [pipe.heard(a, f) for a, f in zip(auds, feats)]
        motion = {"stage1": pipe.synthesize_many(auds, instrs, seeds=seeds, features=feats),
                  "neutral": pipe.synthesize_many(auds, [NEUTRAL_TEXT] * len(batch), seeds=seeds, features=feats)}
        for k, (c, a, ins) in enumerate(zip(batch, auds, instrs)):
            said.append(ins.emotion)
            texts.append(ins.text)
            db = loudness_db(a.samples, a.num_frames())
            words = []
            if aligner is not None:
                transcript = c.extra.get("text") or aligner.transcribe(a.samples)
                words = aligner.align(a.samples, transcript)
            events = bl.events_from_words(words, bl.align_lag(c.extra))
            row = {"id": c.id, "speaker": c.speaker, "emotion": c.emotion, "said": ins.emotion, "instruction": ins.text}
            for key in ("stage1", "neutral"):
                o = gap(motion[key][k][0])
                m = mouth_loudness(o, db)
                mouth[key].append(m)
                cs = bl.closure_scores(o, events)
                closure[key].append(cs)
                row[key] = {**m, **cs}
            per_clip.append(row)
            bar.update(1)
    bar.close()
    res: dict[str, Any] = {
        "data": str(data), "split": split or "all", "clips": len(clips),
        "speakers": sorted({c.speaker for c in clips}),
        "emotion": emotion_report(said, [c.emotion for c in clips]),
        "reading": reading_report(said, heard, [c.emotion for c in clips], getattr(pipe, "heard_threshold", None)),
        "seconds": time.perf_counter() - t0,
        "per_clip": per_clip,
    }
    for key in mouth:
        res[f"mouth_{key}"] = {
            "jaw_loudness_r": summarize([m["r"] for m in mouth[key]]),
            "silence_rest_ratio": summarize([m["silence_rest_ratio"] for m in mouth[key]]),
            **({"bilabial": bl.pooled(closure[key])} if aligner is not None else {}),
        }
    return res


def reading_report(said: Sequence[str | None], heard: Sequence[dict[str, float] | None], true: Sequence[str],
                   threshold: float | None) -> dict[str, Any]:
    """How the voice was read: the share of instructions written neutral, the most-written emotion and its share, the
    precision of instructions that name an emotion; with ``heard`` probabilities, their calibration error,
    reliability bins and the coverage curve over thresholds."""
    neu = EMOTIONS.index("neutral")
    pred = np.asarray([EMOTIONS.index(e) if e in EMOTIONS else neu for e in said])
    y = np.asarray([EMOTIONS.index(e) if e in EMOTIONS else -1 for e in true])
    one = np.zeros(len(y), dtype="<U4")
    out: dict[str, Any] = {"threshold": threshold}
    sc = scores(pred, y, one)
    top, share = sc[""]["most_written"]
    labelled = float((y == EMOTIONS.index(top)).mean())
    out.update({"written_neutral": sc[""]["written_neutral"], "most_written": [top, share],
                "most_written_labelled": labelled,
                # one emotion for much of a corpus whose labels do not say so: the reader hears the recording, not the
                # voice (over 40% of the clips and over 10 points above the share labelled so)
                "one_emotion_for_all": bool(share > ONE_EMOTION_SHARE and share > labelled + 0.10),
                "non_neutral_precision": sc["non_neutral_precision"], "non_neutral_share": sc["non_neutral_share"]})
    if heard and all(h is not None for h in heard) and (y >= 0).all():
        p = np.asarray([[h[e] for e in EMOTIONS] for h in heard], np.float64)
        out["ece"] = calibration(np.log(p + 1e-12), y)["ece"]
        out["reliability"] = reliability(p, y)
        out["curve"] = [{**{k: v for k, v in r.items() if k != ""}, "accuracy": r[""]["accuracy"]}
                        for r in coverage_curve(p, y, one)]
    return out


def reading_lines(r: dict[str, Any] | None, out) -> list[str]:
    """The report's "Reading the voice" section (and its two plots in ``out``)."""
    if not r:
        return []
    prec = r["non_neutral_precision"]
    lines = ["## Reading the voice", "",
             f"- **Written neutral: {r['written_neutral']:.1%}** of the clips. On plain read speech this should be "
             "nearly all; on acted emotional speech it is the share where the reader was not sure enough.",
             f"- **Most-written emotion: {r['most_written'][0]}, {r['most_written'][1]:.1%}** of the clips "
             f"({r['most_written_labelled']:.1%} are labelled so). Far above the labelled share, it means one emotion "
             "is written for everything"
             + (": **that is the case here**." if r["one_emotion_for_all"] else "; not the case here."),
             f"- **Instructions that name an emotion: {r['non_neutral_share']:.1%}; the right one: "
             + (f"{prec:.1%}**" if prec is not None else "none named**")
             + ". A strong wrong emotion is worse than a neutral face: this is the number to watch."]
    if "ece" in r:
        th = r["threshold"]
        lines += [f"- **Calibration error of `heard` (ECE): {r['ece']:.3f}**: how far the top probability is from how "
                  "often it is right, averaged over the clips (0 = a 70% top emotion is right 70% of the time).",
                  "- The coverage curve: for each threshold (an emotion heard with less is written neutral), how many "
                  "instructions name an emotion and how often it is the right one"
                  + (f"; this checkpoint's threshold is {th:.2f} (dotted)." if th is not None else "."), "",
                  "![reliability](reliability.png) ![coverage](coverage.png)"]
        plot_reliability(r["reliability"], Path(out) / "reliability.png", f"ECE {r['ece']:.3f}")
        curve = [{**c, "this corpus": {"accuracy": c["accuracy"]}} for c in r["curve"]]
        plot_coverage(curve, th, Path(out) / "coverage.png")
    return lines + [""]


def write_real_report(res: dict[str, Any], out) -> None:
    """``out/real_speech.json``, ``out/real_speech.md`` and ``out/confusion.png``."""
    from pathlib import Path

    from avitalk.io import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "real_speech.json", res)
    plot_confusion(res["emotion"], out / "confusion.png",
                   f"emotion in the instruction: {res['emotion']['accuracy']:.1%} ({res['clips']} clips)")
    e = res["emotion"]
    lines = [f"# Real speech: {res['data']} ({res['clips']} clips, {len(res['speakers'])} speakers)", "",
             "No ground-truth motion is needed: emotion is read from stage 1's instruction; the mouth metrics use the "
             "lip gap on the mesh against the recording's loudness and the aligned words.", "",
             f"**Emotion named right: {e['accuracy']:.1%}** (chance {e['chance']:.1%}).", "",
             "| emotion | " + " | ".join(e["per_emotion"]) + " |", "|---|" + "---|" * len(e["per_emotion"]),
             "| accuracy | " + " | ".join(f"{v:.0%}" for v in e["per_emotion"].values()) + " |", "",
             "![confusion](confusion.png)", "", *reading_lines(res.get("reading"), out),
             "| instruction given to stage 2 | mouth-loudness r (median) | silence-rest ratio (median) | bilabial closure | open vowels open |",
             "|---|---|---|---|---|"]
    for key, name in (("stage1", "stage 1's instruction"), ("neutral", '"A person speaks."')):
        m = res[f"mouth_{key}"]
        b = m.get("bilabial", {})
        lines.append(f"| {name} | {m['jaw_loudness_r']['median']:.3f} | {m['silence_rest_ratio']['median']:.3f} | "
                     f"{b.get('bilabial_closure_rate', float('nan')):.1%} of {b.get('bilabials', 0)} | "
                     f"{b.get('open_vowel_open_rate', float('nan')):.1%} of {b.get('open_vowels', 0)} |")
    lines += ["", "- mouth-loudness r: Pearson r per clip of the lip gap (mm) with the loudness in dB (40 ms frames).",
              f"- silence-rest ratio: mean lip gap in frames {SILENT_DB:.0f} dB under the clip's loud level over the mean gap "
              f"in frames within {LOUD_DB:.0f} dB of it (0 = the mouth rests in pauses).",
              "- bilabial closure: share of /b p m/ (from the transcript aligned by the embedded Whisper and phonemized by "
              "espeak-ng) where the lips close (gap <= 1 mm within +-80 ms); open vowels: share of /a/-like vowels "
              "where the gap reaches 3 mm.", f"- time: {res['seconds']:.0f} s"]
    atomic_write_text(out / "real_speech.md", "\n".join(lines) + "\n")


def summary_lines(res: dict) -> tuple[list[str], list[str]]:
    """The headline of :func:`evaluate_real_speech`'s result for a terminal: lines, and warnings."""
    e, m, r = res["emotion"], res["mouth_stage1"], res["reading"]
    prec = "none named" if r["non_neutral_precision"] is None else f"{r['non_neutral_precision']:.1%} right"
    lines = [f"emotion named right: {e['accuracy']:.1%} of {res['clips']} clips (chance {e['chance']:.1%})",
             f"written neutral: {r['written_neutral']:.1%}; most written: {r['most_written'][0]} "
             f"{r['most_written'][1]:.1%}; naming an emotion: {r['non_neutral_share']:.1%} ({prec})"
             + (f"; calibration error {r['ece']:.3f}" if "ece" in r else ""),
             f"mouth vs loudness r (median): {m['jaw_loudness_r']['median']:.3f}; silence-rest ratio (median): "
             f"{m['silence_rest_ratio']['median']:.3f}"]
    if "bilabial" in m:
        b = m["bilabial"]
        lines.append(f"bilabial closure: {b['bilabial_closure_rate']:.1%} of {b['bilabials']}; open vowels open: "
                     f"{b['open_vowel_open_rate']:.1%} of {b['open_vowels']}")
    warnings = []
    if r["one_emotion_for_all"]:
        warnings.append(f"{r['most_written'][0]} is written for {r['most_written'][1]:.0%} of the clips, "
                        f"{r['most_written_labelled']:.0%} are labelled so")
    return lines, warnings
