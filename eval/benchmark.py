"""`avitalk eval`: one command from a pipeline checkpoint and a dataset split to a report in the AVI-Talking style.

Rows: the pipeline with stage 1's instruction, with the ground-truth instruction, without the diffusion prior (the
deterministic text -> style mapper), and two baselines (neutral face, the training split's mean motion).
Columns: FID and KID on motion features, diversity, LSE-D / LSE-C, LVE (both conventions), MVE, FDD, emotion
accuracy. Plus instruction metrics and controllability. Evaluator networks (motion encoder + emotion head, sync
expert) are trained on the dataset's training split and cached in ``DATA/eval_cache/``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avitalk.errors import DatasetError, SequenceError

ROWS = ("pipeline", "pipeline_gt_instruction", "no_prior", "neutral_face", "mean_motion")
ROW_NAMES = {
    "pipeline": "ours (stage-1 instruction)",
    "pipeline_gt_instruction": "ours (ground-truth instruction)",
    "no_prior": "ours without the prior (text -> style mapper)",
    "neutral_face": "neutral face",
    "mean_motion": "mean motion",
}


def _evaluators(pipe, data: Path, progress: bool, steps: tuple[int, int] = (800, 1500)):
    """The evaluator motion network and the sync expert, trained on the training split once and cached."""
    from avitalk import audio as audio_io
    from avitalk.data.manifest import read_manifest
    from avitalk.types import FlameSequence

    from .evaluator import MotionEvaluator, train_evaluator
    from .lse import SyncExpert, train_sync_expert

    cache = data / "eval_cache"
    cache.mkdir(exist_ok=True)
    te = pipe.synthesizer.text_encoder
    ev_path = cache / f"evaluator-{te.key}.safetensors"
    sx_path = cache / "sync_expert.safetensors"
    train = None
    if not ev_path.is_file() or not sx_path.is_file():
        train = read_manifest(data, "train")
        if len(train) < 2:
            raise DatasetError(f"{data}: the evaluators need training clips (split 'train' has {len(train)})")
    if not ev_path.is_file():
        motions = [FlameSequence.load(data / c.flame).motion().astype(np.float32) for c in train]
        emb = te.encode([c.instructions[0] for c in train])
        train_evaluator(motions, [c.emotion for c in train], emb, steps=steps[0], progress=progress).save(ev_path)
    if not sx_path.is_file():
        pairs = [(audio_io.load(data / c.audio).samples, FlameSequence.load(data / c.flame).motion())
                 for c in train[:600]]
        train_sync_expert(pairs, steps=steps[1], progress=progress).save(sx_path)
    return MotionEvaluator.load(ev_path), SyncExpert.load(sx_path)


def run_benchmark(pipe, data: str | os.PathLike, split: str = "test", samples: int = 10, limit: int | None = None,
                  seed: int = 0, diversity_clips: int = 30, inception: str | None = None, syncnet: str | None = None,
                  progress: bool = True, evaluator_steps: tuple[int, int] = (800, 1500)) -> dict[str, Any]:
    from tqdm import tqdm

    from avitalk import audio as audio_io
    from avitalk.data.dataset import FeatureCache
    from avitalk.data.manifest import read_manifest
    from avitalk.flame import FlameModel
    from avitalk.text_metrics import instruction_scores
    from avitalk.types import FlameSequence
    from avitalk.vocab import EMOTIONS, load_vocabulary

    from . import vertex
    from .diversity import diversity, vertex_diversity
    from .fid_kid import fid_kid

    data = Path(data)
    t0 = time.perf_counter()
    all_clips = read_manifest(data)
    clips = [c for c in all_clips if c.split == split][:limit]
    if not clips:
        have = sorted({c.split for c in all_clips})
        raise DatasetError(f"{data}: no clips in split {split!r} (it has {', '.join(have) or 'none'})")
    notes: list[str] = []
    info_path = data / "dataset.json"
    ds_model = json.loads(info_path.read_text()).get("flame_model", "standin") if info_path.is_file() else None
    ck_model = str(pipe.cfg.get("flame_model", "standin"))
    model = FlameModel.from_spec(ck_model)
    if ds_model is not None and Path(str(ds_model)).name != Path(ck_model).name:
        raise DatasetError(f"{data}: motion was fitted to the FLAME model {ds_model!r}, the checkpoint uses "
                           f"{ck_model!r}; vertex metrics would compare different heads")
    evaluator, sync = _evaluators(pipe, data, progress, evaluator_steps)
    if syncnet:
        notes.append(f"--syncnet {syncnet}: image-based LSE with SyncNet weights is not implemented yet; LSE columns "
                     "use the offline sync expert")
    cache = FeatureCache(data / "features", pipe.audio_encoder.key)
    vocab = load_vocabulary()
    lips = model.region("lips")
    upper = vertex.upper_face(model)
    template = model.v_template.detach().cpu().numpy()
    train_motion = [FlameSequence.load(data / c.flame).motion() for c in all_clips if c.split == "train"][:500]
    mean_motion = np.concatenate(train_motion).mean(0) if train_motion else None
    if mean_motion is None:
        notes.append("no training clips: the mean-motion baseline is skipped")

    gen: dict[str, list[np.ndarray]] = {r: [] for r in ROWS}
    gt, audios, texts, edited_targets, edited = [], [], [], [], []
    t_gen = time.perf_counter()
    for i, c in enumerate(tqdm(clips, desc="eval: synthesize", unit="clip", disable=not progress or None)):
        a = audio_io.load(data / c.audio)
        f = cache.get(c.id)
        if f is None:
            f = cache.put(c.id, pipe.encode(a))
        m = FlameSequence.load(data / c.flame).motion()
        gt.append(m)
        audios.append(a.samples)
        T = len(m)
        ins = pipe.instruct(a, seed=seed + i, features=f) if pipe.instructor is not None else None
        texts.append(ins.text if ins is not None else "")
        syn = pipe.synthesizer
        if ins is not None:
            gen["pipeline"].append(syn.synthesize(f, ins, seed=seed + i, num_frames=T)[0].motion())
        gen["pipeline_gt_instruction"].append(syn.synthesize(f, c.instructions[0], seed=seed + i, num_frames=T)[0].motion())
        gen["no_prior"].append(syn.synthesize(f, c.instructions[0], use_prior=False, num_frames=T)[0].motion())
        gen["neutral_face"].append(np.zeros_like(m))
        if mean_motion is not None:
            gen["mean_motion"].append(np.repeat(mean_motion[None], T, 0))
        others = [e for e in EMOTIONS if e != c.emotion]
        tgt = others[i % len(others)]
        edited_targets.append(tgt)
        edited.append(syn.synthesize(f, vocab.replace_emotion(c.instructions[0], tgt), seed=seed + i, num_frames=T)[0].motion())
    t_gen = time.perf_counter() - t_gen
    if pipe.instructor is None:
        notes.append("the checkpoint has no stage 1: the stage-1 row is skipped")

    # ------------------------------------------------ per-row metrics
    t_met = time.perf_counter()
    # features scaled by one number (the real set's overall std) so FID / KID live at unit scale, where KID's cubic
    # kernel is numerically sound; the same scale for every row
    real_feats = evaluator.features(gt)
    scale = float(real_feats.std()) or 1.0
    real_feats = real_feats / scale
    y = np.array([EMOTIONS.index(c.emotion) if c.emotion in EMOTIONS else -1 for c in clips])
    sub = model.subset(np.concatenate([lips, upper]))
    nl = len(lips)

    def verts(m: np.ndarray, full: bool) -> np.ndarray:
        e, j = torch.as_tensor(m[:, :-3]), torch.as_tensor(m[:, -3:])
        with torch.no_grad():
            return (model(expression=e, jaw_pose=j) if full else sub(e, j)).numpy()

    rows = [row for row in ROWS if gen[row]]
    vmet: dict[str, dict[str, list[float]]] = {r: {k: [] for k in ("sq", "eu", "mve", "eve", "fdd")} for r in rows}
    tpl = template[np.concatenate([lips, upper])]
    li, ui = np.arange(nl), np.arange(nl, len(lips) + len(upper))
    for i, g in enumerate(gt):  # the ground truth's vertices once per clip, every row against them
        vg, vg_full = verts(g, False), verts(g, True)
        for row in rows:
            m = gen[row][i]
            vp = verts(m, False)
            d = vmet[row]
            d["sq"].append(vertex.lve_squared_max(vp, vg, li))
            d["eu"].append(vertex.lve_euclidean_max(vp, vg, li))
            d["eve"].append(vertex.eve(vp, vg, ui))
            d["fdd"].append(vertex.fdd(vp, vg, tpl, ui))
            d["mve"].append(vertex.mve(verts(m, True), vg_full))

    table: dict[str, dict[str, Any]] = {}
    per_emotion: dict[str, dict[str, float]] = {}
    for row in rows:
        motions = gen[row]
        r: dict[str, Any] = {}
        try:
            fk = fid_kid(real_feats, evaluator.features(motions) / scale, subset_size=min(100, len(motions)))
            r.update(fid=fk.fid, kid=fk.kid_mean, kid_std=fk.kid_std)
        except SequenceError as e:
            notes.append(f"{row}: FID/KID skipped ({e})")
        lse_d, lse_c = [], []
        for a, m in zip(audios, motions):
            try:
                s = sync.score(a, m)
                lse_d.append(s.lse_d)
                lse_c.append(s.lse_c)
            except SequenceError:
                pass
        r.update(lse_d=float(np.mean(lse_d)) if lse_d else None, lse_c=float(np.mean(lse_c)) if lse_c else None)
        d = vmet[row]
        r.update(lve_squared_max_mm2=float(np.mean(d["sq"])), lve_euclidean_max_mm=float(np.mean(d["eu"])),
                 mve_mm=float(np.mean(d["mve"])), eve_mm=float(np.mean(d["eve"])), fdd_mm2=float(np.mean(d["fdd"])))
        pred = evaluator.classify(motions)
        r["emotion_accuracy"] = float((pred == y).mean())
        per_emotion[row] = {e: float((pred[y == k] == k).mean()) for k, e in enumerate(EMOTIONS) if (y == k).any()}
        table[row] = r

    # diversity: K prior samples of the ground-truth instruction, style space and vertex space
    n_div = min(diversity_clips, len(clips))
    z_div, v_div = [], []
    for i in range(n_div):
        f = cache.get(clips[i].id)
        z = pipe.synthesizer.styles([clips[i].instructions[0]], samples, seed=seed + i)[0]
        z_div.append(diversity(z.numpy()))
        seqs = pipe.synthesizer.synthesize(f, clips[i].instructions[0], num_samples=samples, seed=seed + i,
                                           num_frames=len(gt[i]))
        v_div.append(vertex_diversity(np.stack([verts(s.motion(), False) for s in seqs])))
    for row in ("pipeline", "pipeline_gt_instruction"):
        if row in table:
            table[row]["diversity_style"] = float(np.mean(z_div)) if z_div else None
            table[row]["diversity_vertex_mm"] = float(np.mean(v_div)) if v_div else None
    t_met = time.perf_counter() - t_met

    y_edit = np.array([EMOTIONS.index(t) for t in edited_targets])
    result: dict[str, Any] = {
        "split": split, "clips": len(clips), "samples": samples, "seed": seed,
        "checkpoint": pipe.source, "flame_model": ck_model,
        "table": table,
        "emotion_accuracy_per_emotion": per_emotion,
        "ground_truth_emotion_accuracy": float((evaluator.classify(gt) == y).mean()),
        "controllability_edited_emotion": float((evaluator.classify(edited) == y_edit).mean()),
        "instruction": (instruction_scores(texts, [list(c.instructions) for c in clips], [c.emotion for c in clips],
                                           [c.intensity for c in clips]) if pipe.instructor is not None else None),
        "examples": [{"id": c.id, "reference": c.instructions[0], "generated": t} for c, t in list(zip(clips, texts))[:6]],
        "notes": notes,
        "comparability": "FID/KID use our evaluator motion encoder and LSE our offline sync expert, both trained on "
                         "this dataset's training split: not comparable with papers' numbers (Inception / SyncNet).",
        "seconds": {"synthesis": t_gen, "metrics": t_met, "total": time.perf_counter() - t0},
    }
    if inception:
        result["rendered"] = _rendered_fid(pipe, model, gt, gen, inception, notes)
    result["_gen"] = gen
    result["_gt"] = gt
    return result


def _rendered_fid(pipe, model, gt, gen, inception: str, notes: list[str], every: int = 5) -> dict[str, Any]:
    """FID / KID on rendered frames (every 5th frame) with the user's TorchScript Inception file."""
    from avitalk.render import renderer_for_model

    from .fid_kid import fid_kid, inception_features

    def frames(motions):
        out = []
        with renderer_for_model(model, size=299) as r:
            for m in motions:
                seq_v = model.sequence_vertices(_seq(m))[::every]
                out += list(r.render_frames(seq_v))
        return np.stack(out)

    t = time.perf_counter()
    real = frames(gt)
    n_frames = len(real)
    res = {}
    rf = inception_features(real, inception)
    for row in ("pipeline", "pipeline_gt_instruction"):
        if gen[row]:
            fk = fid_kid(rf, inception_features(frames(gen[row]), inception))
            res[row] = {"fid": fk.fid, "kid": fk.kid_mean, "kid_std": fk.kid_std}
            n_frames += len(real)
    dt = time.perf_counter() - t
    res["frames_per_s"] = n_frames / dt
    return res


def _seq(motion: np.ndarray):
    from avitalk.types import FlameSequence

    return FlameSequence.from_motion(motion)


# ------------------------------------------------------------------------------------------------ report
def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_report(result: dict[str, Any], out: str | os.PathLike, model=None) -> Path:
    """``model``: the FlameModel for the contact sheet of rendered frames (skipped with a note when None or when
    offscreen rendering is unavailable)."""
    """REPORT/metrics.json, report.md and the plots (atomic files; the folder is filled in place)."""
    from avitalk.io import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gen, gt = result.pop("_gen", None), result.pop("_gt", None)
    atomic_write_json(out / "metrics.json", result)
    cols = [("FID", "fid", 2), ("KID", "kid", 3), ("Div", "diversity_style", 2), ("LSE-D", "lse_d", 3),
            ("LSE-C", "lse_c", 3), ("LVE sq-max mm²", "lve_squared_max_mm2", 2), ("LVE max mm", "lve_euclidean_max_mm", 2),
            ("MVE mm", "mve_mm", 2), ("FDD mm²", "fdd_mm2", 2), ("emotion acc", "emotion_accuracy", 3)]
    lines = [f"# avitalk evaluation: {result['checkpoint']}", "",
             f"{result['clips']} clips of split `{result['split']}`, {result['samples']} samples for diversity, "
             f"seed {result['seed']}, FLAME model `{result['flame_model']}`.", "",
             "| method | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for row, r in result["table"].items():
        lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(_fmt(r.get(k), d) for _, k, d in cols) + " |")
    lines += ["", f"- evaluator emotion accuracy on ground-truth motion: {result['ground_truth_emotion_accuracy']:.3f}",
              f"- controllability (emotion word replaced, read back from the motion): "
              f"{result['controllability_edited_emotion']:.3f}"]
    if result.get("instruction"):
        s = result["instruction"]
        lines.append(f"- stage-1 instructions: emotion {s['emotion_accuracy']:.3f}, intensity {s['intensity_accuracy']:.3f}, "
                     f"AU F1 {s['action_unit_f1']:.3f}, BLEU {s['bleu']:.1f}, ROUGE-L {s['rouge_l']:.3f}")
    if result.get("rendered"):
        lines.append(f"- rendered frames (user's Inception): {json.dumps(result['rendered'])}")
    lines += ["", f"Not comparable with papers: {result['comparability']}"]
    for n in result["notes"]:
        lines.append(f"- note: {n}")
    lines += ["", f"Time: synthesis {result['seconds']['synthesis']:.0f} s, metrics {result['seconds']['metrics']:.0f} s, "
              f"total {result['seconds']['total']:.0f} s.", "",
              "![per-emotion accuracy](per_emotion.png)", "", "![coefficients](curves.png)", "",
              "![rendered frames](frames.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))
    _plots(result, gen, gt, out)
    if model is not None and gen and gt:
        _sheet(model, gen, gt, out, result["notes"])
        atomic_write_json(out / "metrics.json", result)
    return out


def _sheet(model, gen, gt, out: Path, notes: list[str], n: int = 4) -> None:
    """Rendered frames: ground truth above, ours (stage-1 instruction) below, at each clip's middle frame."""
    from avitalk.errors import RenderError
    from avitalk.render import renderer_for_model
    from avitalk.render.sheet import grid_image, save_png

    row = "pipeline" if gen.get("pipeline") else "pipeline_gt_instruction"
    k = min(n, len(gt))
    picks = [m[len(m) // 2][None] for m in gt[:k]] + [m[len(m) // 2][None] for m in gen[row][:k]]
    try:
        verts = np.concatenate([model.sequence_vertices(_seq(p)) for p in picks])
        with renderer_for_model(model, size=256) as r:
            imgs = list(r.render_frames(verts))
    except RenderError as e:
        notes.append(f"contact sheet skipped: {e}")
        return
    labels = [f"clip {i} ground truth" for i in range(k)] + [f"clip {i} {ROW_NAMES[row]}" for i in range(k)]
    save_png(out / "frames.png", grid_image(imgs, labels, cols=k))


def _plots(result, gen, gt, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from avitalk.io import atomic_path

    pe = result["emotion_accuracy_per_emotion"]
    rows = [r for r in ("pipeline", "pipeline_gt_instruction", "no_prior") if r in pe]
    if rows:
        emos = list(pe[rows[0]])
        fig, ax = plt.subplots(figsize=(9, 3.2))
        w = 0.8 / len(rows)
        for k, r in enumerate(rows):
            ax.bar(np.arange(len(emos)) + k * w, [pe[r][e] for e in emos], w, label=ROW_NAMES[r])
        ax.set_xticks(np.arange(len(emos)) + 0.4 - w / 2, emos)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("emotion accuracy")
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(out / "per_emotion.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
    if gen and gt:
        n = min(3, len(gt))
        fig, axes = plt.subplots(n, 2, figsize=(10, 2.4 * n), squeeze=False)
        row = "pipeline" if gen.get("pipeline") else "pipeline_gt_instruction"
        for i in range(n):
            for j, (k, name) in enumerate(((-3, "jaw opening (rad)"), (int(np.argmax(gt[i][:, :-3].std(0))), None))):
                ax = axes[i][j]
                ax.plot(gt[i][:, k], label="ground truth", lw=1)
                ax.plot(gen[row][i][:, k], label=ROW_NAMES[row], lw=1)
                ax.set_title(f"clip {i}: {name or f'expression {k}'}", fontsize=8)
                ax.legend(fontsize=6)
        fig.tight_layout()
        with atomic_path(out / "curves.png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
