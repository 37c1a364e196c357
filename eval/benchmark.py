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
from dataclasses import dataclass
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


@dataclass
class BenchmarkRun:
    """What :func:`run_benchmark` returns: ``result`` (the JSON-able report: table, per-emotion accuracy, ...) and the
    motions behind it (``generated[row]`` and ``ground_truth``, per clip) for the report's plots and rendered frames."""

    result: dict[str, Any]
    generated: dict[str, list[np.ndarray]]
    ground_truth: list[np.ndarray]


@dataclass
class _Setup:
    """Everything the per-clip work needs, built once per process."""

    pipe: Any
    data: Path
    clips: list
    cache: Any
    vocab: Any
    model: Any
    sub: Any  # the FLAME model restricted to lips + upper face
    lips_i: np.ndarray  # lip / upper-face positions inside ``sub``
    upper_i: np.ndarray
    sub_template: np.ndarray
    sync: Any  # the offline sync expert
    mean_motion: np.ndarray | None
    seed: int

    def verts(self, m: np.ndarray, full: bool = False) -> np.ndarray:
        e, j = torch.as_tensor(m[:, :-3]), torch.as_tensor(m[:, -3:])
        with torch.no_grad():
            return (self.model(expression=e, jaw_pose=j) if full else self.sub(e, j)).numpy()


def generate_clip(s: _Setup, i: int) -> dict[str, Any]:
    """Clip i's ground truth and every row's motion: the pipeline with stage 1's instruction and with the reference
    one, the prior-free mapper, the baselines; plus the motion for the reference with its emotion word replaced."""
    from avitalk import audio as audio_io
    from avitalk.types import FlameSequence
    from avitalk.vocab import EMOTIONS

    c = s.clips[i]
    a = audio_io.load(s.data / c.audio)
    f = s.cache.get(c.id)
    if f is None:
        f = s.cache.put(c.id, s.pipe.encode(a))
    m = FlameSequence.load(s.data / c.flame).motion()
    T = len(m)
    seed = s.seed + i
    ins = s.pipe.instruct(a, seed=seed, features=f) if s.pipe.instructor is not None else None
    syn = s.pipe.synthesizer
    rows = {
        "pipeline_gt_instruction": syn.synthesize(f, c.instructions[0], seed=seed, num_frames=T)[0].motion(),
        "no_prior": syn.synthesize(f, c.instructions[0], use_prior=False, num_frames=T)[0].motion(),
        "neutral_face": np.zeros_like(m),
    }
    if ins is not None:
        rows["pipeline"] = syn.synthesize(f, ins, seed=seed, num_frames=T)[0].motion()
    if s.mean_motion is not None:
        rows["mean_motion"] = np.repeat(s.mean_motion[None], T, 0)
    others = [e for e in EMOTIONS if e != c.emotion]
    tgt = others[i % len(others)]
    edited = syn.synthesize(f, s.vocab.replace_emotion(c.instructions[0], tgt), seed=seed, num_frames=T)[0]
    return {"gt": m, "audio": a.samples, "text": ins.text if ins is not None else "", "rows": rows, "target": tgt,
            "edited": edited.motion()}


def clip_metrics(s: _Setup, g: np.ndarray, rows: dict[str, np.ndarray], samples: np.ndarray) -> dict[str, dict[str, float]]:
    """Per-clip vertex metrics (LVE both conventions, EVE, FDD, MVE) and offline LSE of every row against ground truth g."""
    from . import vertex
    from .lse import mfcc_windows

    vg, vg_full = s.verts(g), s.verts(g, full=True)
    try:
        aw = mfcc_windows(samples)
    except SequenceError:
        aw = None
    out = {}
    for row, m in rows.items():
        vp = s.verts(m)
        d = {"sq": vertex.lve_squared_max(vp, vg, s.lips_i), "eu": vertex.lve_euclidean_max(vp, vg, s.lips_i),
             "eve": vertex.eve(vp, vg, s.upper_i), "fdd": vertex.fdd(vp, vg, s.sub_template, s.upper_i),
             "mve": vertex.mve(s.verts(m, full=True), vg_full)}
        if aw is not None:
            r = s.sync.score_windows(aw, m)
            d.update(lse_d=r.lse_d, lse_c=r.lse_c)
        out[row] = d
    return out


def set_metrics(evaluator, clips: list, gen: dict[str, list[np.ndarray]], gt: list[np.ndarray],
                per_clip: list[dict[str, dict[str, float]]], rows: list[str], notes: list[str]):
    """The table (FID / KID on the evaluator's features, per-clip metrics averaged, emotion accuracy) and per-emotion
    accuracy of every row."""
    from avitalk.vocab import EMOTIONS

    from .fid_kid import fid_kid

    # features centred on the real set's mean and scaled by one number (its overall std), the same for every row: FID
    # does not change under a common shift, and KID's cubic kernel (x.y/d + 1)^3 needs centred, unit-scale features
    # (uncentred, the offsets dominate x.y and KID's subsets scatter by far more than the differences it measures)
    real_feats = evaluator.features(gt)
    centre = real_feats.mean(0, keepdims=True)
    scale = float((real_feats - centre).std()) or 1.0
    real_feats = (real_feats - centre) / scale
    y = np.array([EMOTIONS.index(c.emotion) if c.emotion in EMOTIONS else -1 for c in clips])
    table: dict[str, dict[str, Any]] = {}
    per_emotion: dict[str, dict[str, float]] = {}
    for row in rows:
        motions = gen[row]
        r: dict[str, Any] = {}
        try:
            fk = fid_kid(real_feats, (evaluator.features(motions) - centre) / scale, subset_size=min(100, len(motions)))
            r.update(fid=fk.fid, kid=fk.kid_mean, kid_std=fk.kid_std)
        except SequenceError as e:
            notes.append(f"{row}: FID/KID skipped ({e})")
        mine = [m[row] for m in per_clip]

        def mean(k: str):
            v = [m[k] for m in mine if k in m]
            return float(np.mean(v)) if v else None

        r.update(lse_d=mean("lse_d"), lse_c=mean("lse_c"), lve_squared_max_mm2=mean("sq"),
                 lve_euclidean_max_mm=mean("eu"), mve_mm=mean("mve"), eve_mm=mean("eve"), fdd_mm2=mean("fdd"))
        pred = evaluator.classify(motions)
        r["emotion_accuracy"] = float((pred == y).mean())
        per_emotion[row] = {e: float((pred[y == k] == k).mean()) for k, e in enumerate(EMOTIONS) if (y == k).any()}
        table[row] = r
    return table, per_emotion


def _setup(pipe, data: Path, split: str, limit: int | None, seed: int, state, progress: bool,
           evaluator_steps: tuple[int, int]) -> tuple[_Setup, Any, list[str]]:
    from avitalk.data.dataset import FeatureCache
    from avitalk.data.manifest import read_manifest
    from avitalk.flame import FlameModel
    from avitalk.types import FlameSequence
    from avitalk.vocab import load_vocabulary

    from . import vertex

    all_clips = read_manifest(data)
    clips = [c for c in all_clips if c.split == split][:limit]
    if not clips:
        have = sorted({c.split for c in all_clips})
        raise DatasetError(f"{data}: no clips in split {split!r} (it has {', '.join(have) or 'none'})")
    notes: list[str] = []
    info_path = data / "dataset.json"
    ds_model = json.loads(info_path.read_text()).get("flame_model", "standin") if info_path.is_file() else None
    ck_model = str(pipe.cfg.flame_model)
    model = FlameModel.from_spec(ck_model)
    if ds_model is not None and Path(str(ds_model)).name != Path(ck_model).name:
        raise DatasetError(f"{data}: motion was fitted to the FLAME model {ds_model!r}, the checkpoint uses "
                           f"{ck_model!r}; vertex metrics would compare different heads")
    if state.num_processes > 1:
        pipe.to(state.device)
    with state.main_process_first():  # the main process trains and caches the evaluators, the others load them
        evaluator, sync = _evaluators(pipe, data, progress and state.is_main_process, evaluator_steps)
    lips, upper = model.region("lips"), vertex.upper_face(model)
    train_motion = [FlameSequence.load(data / c.flame).motion() for c in all_clips if c.split == "train"][:500]
    mean_motion = np.concatenate(train_motion).mean(0) if train_motion else None
    if mean_motion is None:
        notes.append("no training clips: the mean-motion baseline is skipped")
    both = np.concatenate([lips, upper])
    setup = _Setup(pipe=pipe, data=data, clips=clips, cache=FeatureCache(data / "features", pipe.audio_encoder.key),
                   vocab=load_vocabulary(), model=model, sub=model.subset(both), lips_i=np.arange(len(lips)),
                   upper_i=np.arange(len(lips), len(both)), sub_template=model.v_template.detach().cpu().numpy()[both],
                   sync=sync, mean_motion=mean_motion, seed=seed)
    return setup, evaluator, notes


def run_benchmark(pipe, data: str | os.PathLike, split: str = "test", samples: int = 10, limit: int | None = None,
                  seed: int = 0, diversity_clips: int = 30, inception: str | None = None, syncnet: str | None = None,
                  progress: bool = True, evaluator_steps: tuple[int, int] = (800, 1500),
                  syncnet_crop: str = "face") -> BenchmarkRun | None:
    """Generate every row's motion per clip and measure it per clip (:func:`generate_clip`, :func:`clip_metrics`),
    then measure the sets (:func:`set_metrics`, diversity, controllability, instruction metrics).

    ``syncnet``: the user's syncnet_v2.model for image-based LSE-D / LSE-C on rendered crops (columns
    ``lse_d_syncnet`` / ``lse_c_syncnet``, ground truth in ``result['syncnet']``); ``inception``: a TorchScript
    Inception file for FID / KID on rendered frames.

    Under ``accelerate launch`` (several GPUs, or ``--cpu --num_processes N``) the clips are dealt over the processes
    for synthesis, diversity and SyncNet scoring and gathered on the main process, which measures and returns the
    result; the other processes return None."""
    from avitalk.text_metrics import instruction_scores
    from avitalk.vocab import EMOTIONS

    from .diversity import diversity, vertex_diversity

    data = Path(data)
    t0 = time.perf_counter()
    state = _state()  # the device of this process: its GPU, or the CPU
    scorer = None
    if syncnet:
        from .syncnet import SyncNetScorer, load_syncnet

        scorer = SyncNetScorer(load_syncnet(syncnet), device=state.device)
    s, evaluator, notes = _setup(pipe, data, split, limit, seed, state, progress, evaluator_steps)
    clips = s.clips

    def one(i: int) -> dict[str, Any]:
        d = generate_clip(s, i)
        d["metrics"] = clip_metrics(s, d["gt"], d["rows"], d["audio"])
        return d

    t_gen = time.perf_counter()
    done = _spread(state, len(clips), one, "eval: synthesize + per-clip metrics", progress)
    gen: dict[str, list[np.ndarray]] = {r: [d["rows"][r] for d in done if r in d["rows"]] for r in ROWS}
    gt, audios, texts = [d["gt"] for d in done], [d["audio"] for d in done], [d["text"] for d in done]
    edited_targets, edited = [d["target"] for d in done], [d["edited"] for d in done]
    t_gen = time.perf_counter() - t_gen
    if pipe.instructor is None:
        notes.append("the checkpoint has no stage 1: the stage-1 row is skipped")

    # diversity: K prior samples of the ground-truth instruction, style space and vertex space
    def div(i: int) -> tuple[float, float]:
        f = s.cache.get(clips[i].id)
        z = pipe.synthesizer.styles([clips[i].instructions[0]], samples, seed=seed + i)[0]
        seqs = pipe.synthesizer.synthesize(f, clips[i].instructions[0], num_samples=samples, seed=seed + i,
                                           num_frames=len(gt[i]))
        return diversity(z.cpu().numpy()), vertex_diversity(np.stack([s.verts(q.motion()) for q in seqs]))

    t_div = time.perf_counter()
    divs = _spread(state, min(diversity_clips, len(clips)), div, "eval: diversity", progress)
    t_div = time.perf_counter() - t_div
    rows = [row for row in ROWS if gen[row]]
    sync_out = (_syncnet_lse(state, scorer, s.model, gt, gen, audios, rows, syncnet_crop, progress)
                if scorer is not None else None)
    if not state.is_main_process:
        return None  # the main process measures and reports

    t_met = time.perf_counter()
    table, per_emotion = set_metrics(evaluator, clips, gen, gt, [d["metrics"] for d in done], rows, notes)
    z_div, v_div = [d[0] for d in divs], [d[1] for d in divs]
    for row in ("pipeline", "pipeline_gt_instruction"):
        if row in table:
            table[row]["diversity_style"] = float(np.mean(z_div)) if z_div else None
            table[row]["diversity_vertex_mm"] = float(np.mean(v_div)) if v_div else None
    t_met = time.perf_counter() - t_met

    y = np.array([EMOTIONS.index(c.emotion) if c.emotion in EMOTIONS else -1 for c in clips])
    y_edit = np.array([EMOTIONS.index(t) for t in edited_targets])
    result: dict[str, Any] = {
        "split": split, "clips": len(clips), "samples": samples, "seed": seed,
        "checkpoint": pipe.source, "flame_model": str(pipe.cfg.flame_model),
        "table": table,
        "emotion_accuracy_per_emotion": per_emotion,
        "ground_truth_emotion_accuracy": float((evaluator.classify(gt) == y).mean()),
        "controllability_edited_emotion": float((evaluator.classify(edited) == y_edit).mean()),
        "instruction": (instruction_scores(texts, [list(c.instructions) for c in clips], [c.emotion for c in clips],
                                           [c.intensity for c in clips]) if pipe.instructor is not None else None),
        "examples": [{"id": c.id, "reference": c.instructions[0], "generated": t} for c, t in list(zip(clips, texts))[:6]],
        "notes": notes,
        "comparability": "FID/KID use our evaluator motion encoder and LSE our offline sync expert, both trained on "
                         "this dataset's training split: not comparable with papers' numbers (Inception / SyncNet). The SyncNet "
                         "columns (with --syncnet) use SyncNet's own weights and algorithm, but on renders of an "
                         "untextured synthetic head, not on video of real faces: compare them with the ground-truth motion's "
                         "value on the same renders, not with papers' tables.",
        "seconds": {"synthesis": t_gen, "diversity": t_div, "metrics": t_met, "total": time.perf_counter() - t0},
        "processes": state.num_processes,
    }
    if inception:
        result["rendered"] = _rendered_fid(pipe, s.model, gt, gen, inception, notes)
    if sync_out is not None:
        result["syncnet"] = sync_out.pop("_meta")
        for row, r in sync_out.items():
            table[row].update(lse_d_syncnet=r["lse_d"], lse_c_syncnet=r["lse_c"], av_offset_syncnet=r["offset_median"])
    return BenchmarkRun(result, gen, gt)


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


def _syncnet_lse(state, scorer, model, gt, gen, audios, rows, crop: str, progress: bool) -> dict[str, Any]:
    """Image-based LSE with SyncNet: every row's motion and the ground truth rendered, cropped as syncnet_python crops
    face tracks, and scored against the clip's speech. {row: {lse_d, lse_c, offset_median}, '_meta': {...}}."""
    from .syncnet import CropRenderer

    sets = [("ground_truth", gt)] + [(row, gen[row]) for row in rows]
    items = [(row, i) for row, motions in sets for i in range(len(motions))]
    motions = dict(sets)
    timing = {"render": 0.0}
    t = time.perf_counter()
    with CropRenderer(model, crop) as cr:
        def score(k: int):
            row, i = items[k]
            t0 = time.perf_counter()
            crops = cr(motions[row][i])
            timing["render"] += time.perf_counter() - t0
            try:
                r = scorer.score(audios[i], crops)
            except SequenceError:
                return row, len(crops), None
            return row, len(crops), (r.lse_d, r.lse_c, r.offset)

        done = _spread(state, len(items), score, "eval: SyncNet LSE", progress)
    dt = time.perf_counter() - t
    out: dict[str, Any] = {}
    for row, _ in sets:
        got = [d[2] for d in done if d[0] == row and d[2] is not None]
        out[row] = {"lse_d": float(np.mean([g[0] for g in got])) if got else None,
                    "lse_c": float(np.mean([g[1] for g in got])) if got else None,
                    "offset_median": float(np.median([g[2] for g in got])) if got else None}
    frames = sum(d[1] for d in done)
    out["_meta"] = {"crop": crop, "ground_truth": out.pop("ground_truth"), "seconds": dt, "frames": frames,
                    "frames_per_s": frames / max(dt, 1e-9), "device": str(scorer.device),
                    "render_frames_per_s_main_process": sum(d[1] for d in done[state.process_index::state.num_processes])
                    / max(timing["render"], 1e-9)}
    return out


def _state():
    """accelerate's process state: one process unless launched by ``accelerate launch --multi_gpu`` or ``torchrun``
    (one process per GPU; on a machine without GPUs, CPU processes joined over gloo)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def _spread(state, n: int, fn, desc: str, progress: bool) -> list:
    """[fn(0), ..., fn(n - 1)] with the indices dealt round-robin over the processes and gathered back in order."""
    from tqdm import tqdm

    mine = range(state.process_index, n, state.num_processes)
    out = [(i, fn(i)) for i in tqdm(mine, desc=desc, unit="item", disable=not (progress and state.is_main_process) or None)]
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        out = gather_object(out)
    return [r for _, r in sorted(out, key=lambda x: x[0])]


def _seq(motion: np.ndarray):
    from avitalk.types import FlameSequence

    return FlameSequence.from_motion(motion)


# ------------------------------------------------------------------------------------------------ report
ROW_MEANINGS = {
    "pipeline": "the whole pipeline: stage 1 writes the instruction from the speech, stage 2 animates it",
    "pipeline_gt_instruction": "stage 2 alone, given the clip's reference instruction (stage 1's errors removed)",
    "no_prior": "stage 2 with the deterministic text -> style mapper instead of the diffusion prior (one style per text)",
    "neutral_face": "a baseline: no motion at all",
    "mean_motion": "a baseline: the training split's mean pose on every frame",
}


def _column_notes(result: dict[str, Any]) -> list[str]:
    """What each row and column measures, one sentence each."""
    n = result["clips"]
    kid_n = min(100, n)
    lines = ["Rows:"] + [f"- **{ROW_NAMES[r]}**: {ROW_MEANINGS[r]}." for r in result["table"]]
    lines += ["", "Columns:",
              "- **FID**: Frechet distance between Gaussians fitted to the evaluator's 128-d motion features of the "
              "generated and the ground-truth clips (lower is closer; the features are centred on the ground truth's "
              "mean and divided by its overall standard deviation, so FID is in those units, squared).",
              f"- **KID**: the unbiased squared MMD of the same features, standardised per dimension by the ground "
              f"truth's mean and std, with the cubic kernel (x·y/128 + 1)³ (dimensionless; the kernel of a point with "
              f"itself is about 8); mean ± standard deviation over 50 random subsets of {kid_n} clips per side. The "
              "unbiased estimator can be negative on small sets: a value within its std of 0 means the two sets cannot "
              "be told apart at this size (on a few hundred clips of 128 correlated features that std is large: "
              "read FID first).",
              "- **Div**: mean pairwise L2 distance between 10 prior samples' style vectors for one instruction "
              "(AVI-Talking's diversity; 0 for a deterministic row).",
              "- **LSE-D / LSE-C**: lip-sync distance (lower is better) and confidence (higher) of our offline sync "
              "expert between the motion and the speech.",
              "- **LVE sq-max**: per frame the largest squared lip-vertex error, mean over frames (FaceFormer / "
              "CodeTalker convention, mm²); **LVE max**: the same with the Euclidean error (mm).",
              "- **MVE**: mean error over all vertices (mm); **FDD**: how much less the upper face moves than in the "
              "ground truth (std over time of its displacement, mm²; 0 is the ground truth's own dynamics).",
              "- **emotion acc**: how often the evaluator's emotion head reads the clip's true emotion from the motion."]
    return lines


def _tradeoff(result: dict[str, Any]) -> list[str]:
    """The prior-vs-mapper trade-off in words, from this run's numbers."""
    t = result["table"]
    if "pipeline_gt_instruction" not in t or "no_prior" not in t:
        return []
    p, m = t["pipeline_gt_instruction"], t["no_prior"]
    out = ["Trade-off, with the reference instruction:"]
    if p.get("fid") is not None and m.get("fid") is not None:
        why = ("the mapper returns each text's average style, which sits near the middle of the real styles; the "
               "prior samples around it, and its spread costs FID" if m["fid"] < p["fid"] else
               "the prior's samples spread like the real styles of a text; the mapper's one average style per text "
               "misses that spread")
        better = "the mapper" if m["fid"] < p["fid"] else "the prior"
        out.append(f"- FID: the deterministic mapper {m['fid']:.2f}, the diffusion prior {p['fid']:.2f}: {better} is "
                   f"closer to the ground truth's distribution ({why}).")
    lp, lm = p.get("lve_euclidean_max_mm"), m.get("lve_euclidean_max_mm")
    if lp is not None and lm is not None:
        out.append(f"- LVE: prior {lp:.2f} mm, mapper {lm:.2f} mm ({'the prior' if lp < lm else 'the mapper'} is "
                   "closer on the lips).")
    if p.get("diversity_style") is not None:
        out.append(f"- Diversity: only the prior gives several styles for one instruction ({p['diversity_style']:.2f} "
                   "in style space; the mapper's is 0 by construction).")
    return out


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def write_report(run: BenchmarkRun, out: str | os.PathLike, model=None) -> Path:
    """REPORT/metrics.json, report.md and the plots (atomic files; the folder is filled in place). ``model``: the
    FlameModel for the contact sheet of rendered frames (skipped with a note when None or when offscreen rendering is
    unavailable)."""
    from avitalk.io import atomic_write_json, atomic_write_text

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result, gen, gt = run.result, run.generated, run.ground_truth
    atomic_write_json(out / "metrics.json", result)
    shown = result["table"]
    cols = [("FID", "fid", 2), ("KID (± std)", "kid", 3), ("Div", "diversity_style", 2), ("LSE-D", "lse_d", 3),
            ("LSE-C", "lse_c", 3), ("LVE sq-max mm²", "lve_squared_max_mm2", 2), ("LVE max mm", "lve_euclidean_max_mm", 2),
            ("MVE mm", "mve_mm", 2), ("FDD mm²", "fdd_mm2", 2), ("emotion acc", "emotion_accuracy", 3)]
    lines = [f"# avitalk evaluation: {result['checkpoint']}", "",
             f"{result['clips']} clips of split `{result['split']}`, {result['samples']} samples for diversity, "
             f"seed {result['seed']}, FLAME model `{result['flame_model']}`.", ""]
    if result.get("syncnet"):
        cols[5:5] = [("LSE-D SyncNet", "lse_d_syncnet", 3), ("LSE-C SyncNet", "lse_c_syncnet", 3)]
    lines += ["| method | " + " | ".join(c[0] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for row, r in shown.items():
        cells = [_fmt(r.get(k), d) + (f" ± {_fmt(r.get('kid_std'), d)}" if k == "kid" and r.get(k) is not None
                                      else "") for _, k, d in cols]
        lines.append(f"| {ROW_NAMES[row]} | " + " | ".join(cells) + " |")
    lines += ["", *_column_notes(result), "", *_tradeoff(result)]
    lines += ["", f"- evaluator emotion accuracy on ground-truth motion: {result['ground_truth_emotion_accuracy']:.3f}",
              f"- controllability (emotion word replaced, read back from the motion): "
              f"{result['controllability_edited_emotion']:.3f}"]
    if result.get("instruction"):
        s = result["instruction"]
        lines.append(f"- stage-1 instructions: emotion {s['emotion_accuracy']:.3f}, intensity {s['intensity_accuracy']:.3f}, "
                     f"AU F1 {s['action_unit_f1']:.3f}, BLEU {s['bleu']:.1f}, ROUGE-L {s['rouge_l']:.3f}")
    if result.get("rendered"):
        lines.append(f"- rendered frames (user's Inception): {json.dumps(result['rendered'])}")
    if result.get("syncnet"):
        sn = result["syncnet"]
        g = sn["ground_truth"]
        lines.append(f"- SyncNet (user's weights, {sn['crop']} crops of our renders): ground-truth motion LSE-D "
                     f"{_fmt(g['lse_d'], 3)}, LSE-C {_fmt(g['lse_c'], 3)}, AV offset median {_fmt(g['offset_median'], 1)}; "
                     f"{sn['frames']} frames at {sn['frames_per_s']:.1f} frames/s on {sn['device']} "
                     f"(rendering alone {sn['render_frames_per_s_main_process']:.0f} frames/s)")
    lines += ["", f"Not comparable with papers: {result['comparability']}"]
    for n in result["notes"]:
        lines.append(f"- note: {n}")
    sec = result["seconds"]
    lines += ["", f"Time ({result.get('processes', 1)} process(es)): synthesis and per-clip metrics {sec['synthesis']:.0f} s, "
              f"diversity {sec.get('diversity', 0):.0f} s, set metrics {sec['metrics']:.0f} s, total {sec['total']:.0f} s.", "",
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
