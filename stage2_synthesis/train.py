"""Stage-2 training: lip-sync pretraining of style encoder + decoder, then (with
``stage2.train.stream.steps``) the live decoder, then the diffusion prior.

``avitalk train stage2 --config configs/tiny.yaml --data DIR --out CKPT [--phase lipsync|stream|prior|all] [--resume]``.
The same code runs on CPU, one GPU or several (``accelerate launch``); seeded; checkpoints are written atomically and
``--resume`` continues from the last one; loss curves go to ``CKPT/logs`` (tensorboard) and ``CKPT/loss_curves.png``.

Lip-sync phase: the decoder reconstructs a clip's motion from its audio, with the style z encoded from a *different*
clip of the same speaker, emotion and intensity (same emotion and intensity when the speaker has no other), so z
carries style, not lip content. Losses: coefficient L2, vertex L2 through the FLAME model (extra weight on the
lips), velocity L2. With ``event_data`` (speech without motion whose words are aligned, e.g. plain read speech),
``stage2.train.lipsync.event_rows`` rows of it join every lip-sync and live-decoder batch, their loss the lip gap at
the aligned sounds alone (:func:`event_loss`, :func:`rest_loss`). Prior phase: the frozen style encoder maps every
training clip to its z; the prior learns p(z | instruction) from the clip's instruction paraphrases plus augmented
ones (emotion only, or a random subset of its action units; and, with ``conflict_probability``, its emotion word
with another emotion's action phrases, so that the emotion word wins when the two disagree).

Live-decoder phase (``decoder_stream.safetensors``, used by ``avitalk live``): a copy of the lip-sync decoder
fine-tuned, style encoder frozen, on the windows a live stream encodes: the last ``context_s`` seconds heard encoded
as one clip, so Whisper's features for its last frames are computed without the audio after them (bidirectional
attention), unlike anything the offline decoder reads but a clip's very end. Same losses as lip-sync.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from avitalk.errors import DatasetError
from avitalk.io import atomic_write_json

from avitalk.training import crop_start, warmup_cosine

from .clips import ClipBank

log = logging.getLogger(__name__)


def _pad(arrs: list[np.ndarray], L: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    from avitalk.data.dataset import pad_arrays

    return pad_arrays(arrs, L)


def lipsync_batch(bank: ClipBank, idx: np.ndarray, crop: int, rng: np.random.Generator,
                  augment_p: float, pause_p: float, speech_only: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """A lip-sync batch; ``augment_p``: the chance of reading a clip's audio through one of its augmented copies
    (noise, reverberation, band limits, gain, codec) while the target motion stays the clean clip's; ``pause_p``: the
    chance of reading one of its pause copies instead (the clip between seconds of silence, the face at rest in them).
    ``speech_only`` [rows] (bool): rows whose ``loss_mask`` keeps only the frames of speech (``bank.speech``: within
    a margin of a word), when the clip has word times; ``loss_mask`` is ``mask`` elsewhere."""
    feats, motion, partners, speech = [], [], [], []
    for row, i in enumerate(idx):
        src, mot, sp = bank.feats[i], bank.motion[i], bank.speech[i]
        paused = bank.paused[i] if getattr(bank, "paused", None) else []
        if pause_p > 0 and paused and rng.random() < pause_p:
            k = int(rng.integers(len(paused)))
            (src, mot), sp = paused[k], bank.paused_speech[i][k]
            src = src.astype(np.float32)
        elif augment_p > 0 and bank.variants[i] and rng.random() < augment_p:
            src = bank.variants[i][int(rng.integers(len(bank.variants[i])))].astype(np.float32)
        s = crop_start(len(mot), crop, rng)
        feats.append(src[s : s + crop])
        motion.append(mot[s : s + crop])
        keep = sp is not None and speech_only is not None and bool(speech_only[row])
        speech.append(torch.as_tensor(sp[s : s + crop] if keep else np.ones(len(motion[-1]), bool)))
        p = bank.partners[i]
        pm = bank.motion[p[int(rng.integers(len(p)))]]
        ps = crop_start(len(pm), crop, rng)
        partners.append(pm[ps : ps + crop])
    f, mask = _pad(feats, crop)
    m, _ = _pad(motion, crop)
    pm, pmask = _pad(partners)
    loss_mask = mask.clone()
    for row, sp in enumerate(speech):
        loss_mask[row, : len(sp)] &= sp
    return {"feats": f, "motion": m, "mask": mask, "loss_mask": loss_mask, "partner": pm, "partner_mask": pmask}


def stream_batch(bank: ClipBank, idx: np.ndarray, crop: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A batch for the live decoder: each row one of the clip's stream windows (the last seconds a live stream
    encodes, features and motion, :func:`avitalk.encoders.cache.cache_stream_windows`); the style partner as in
    :func:`lipsync_batch` (a ``crop``-frame stretch of another clip of the same speaker, emotion and intensity)."""
    feats, motion, partners = [], [], []
    for i in idx:
        f, m = bank.windows[i][int(rng.integers(len(bank.windows[i])))]
        feats.append(f.astype(np.float32))
        motion.append(m)
        p = bank.partners[i]
        pm = bank.motion[p[int(rng.integers(len(p)))]]
        ps = crop_start(len(pm), crop, rng)
        partners.append(pm[ps : ps + crop])
    f, mask = _pad(feats)
    m, _ = _pad(motion, f.shape[1])
    pm, pmask = _pad(partners)
    return {"feats": f, "motion": m, "mask": mask, "partner": pm, "partner_mask": pmask}


def conflicting_instruction(label: dict[str, Any], other: dict[str, Any], rng: np.random.Generator) -> str:
    """The clip's emotion word with the action phrases of a clip of another emotion. Trained towards the clip's own
    style, it teaches the rule that the emotion word wins when the two disagree (what an edit of the word expects)."""
    from avitalk.vocab import load_vocabulary

    acts = sorted(other.get("action_units", {}).items(), key=lambda kv: -kv[1])
    return load_vocabulary().write(label["emotion"], label["intensity"], acts, label.get("gender", "unknown"), rng)


def augmented_instructions(label: dict[str, Any], rng: np.random.Generator, n_partial: int = 2) -> list[str]:
    """Extra training texts for a clip: an emotion-only instruction ("A furious person speaks.") and ``n_partial``
    instructions naming a random subset of its action units. Such texts are shared by many clips of the same
    emotion, so the prior learns what the emotion word alone means (controllability) and keeps the spread of
    styles a text allows (diversity) instead of mapping each clip-specific sentence to one point."""
    from avitalk.vocab import load_vocabulary

    v = load_vocabulary()
    acts = sorted(label.get("action_units", {}).items(), key=lambda kv: -kv[1])
    out = [v.write(label["emotion"], label["intensity"], [], label.get("gender", "unknown"), rng) for _ in range(2)]
    for _ in range(n_partial if acts else 0):
        k = int(rng.integers(1, len(acts) + 1))
        pick = [acts[j] for j in sorted(rng.choice(len(acts), size=k, replace=False))]
        out.append(v.write(label["emotion"], label["intensity"], pick, label.get("gender", "unknown"), rng))
    return out


# ------------------------------------------------------------------------------------------------ losses
def lipsync_losses(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, decoder, subset, lip_ids: torch.Tensor,
                   w: DictConfig, gap_ids: tuple[torch.Tensor, torch.Tensor] | None = None,
                   lips_only: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``lips_only`` [B] (bool): rows whose losses read the mouth alone (the lip vertices, the lip gap and the jaw
    pose; not the expression coefficients nor the rest of the face)."""
    B, T, M = pred.shape
    dims = torch.ones(B, 1, M, dtype=pred.dtype, device=pred.device)  # which coefficients count, per row
    if lips_only is not None:
        dims[lips_only, :, :-3] = 0.0
    m = mask.unsqueeze(-1).to(pred.dtype) * dims
    std = decoder.motion_std
    coef = (((pred - target) / std) ** 2 * m).sum() / m.sum().clamp_min(1)
    vel_p, vel_t = (pred[:, 1:] - pred[:, :-1]) / std, (target[:, 1:] - target[:, :-1]) / std
    mv = (mask[:, 1:] & mask[:, :-1]).unsqueeze(-1).to(pred.dtype) * dims
    vel = ((vel_p - vel_t) ** 2 * mv).sum() / mv.sum().clamp_min(1)
    # vertices of a random quarter of the real frames: the same expected loss for a quarter of the cost
    flat_m = mask.reshape(-1) & (torch.rand(B * T, device=mask.device) < float(w.vertex_frame_fraction))
    pp, tt = pred.reshape(-1, M)[flat_m], target.reshape(-1, M)[flat_m]
    vp = subset(pp[:, :-3], pp[:, -3:])
    vt = subset(tt[:, :-3], tt[:, -3:])
    err = ((vp - vt) ** 2).sum(-1) * 1e6  # squared mm
    weights = torch.ones(err.shape[1], device=err.device)
    weights[lip_ids] = float(w.lip_weight)
    weights = weights.expand_as(err)
    if lips_only is not None:
        on_lips = torch.zeros(err.shape[1], dtype=err.dtype, device=err.device)
        on_lips[lip_ids] = 1.0
        row = torch.arange(B, device=mask.device).repeat_interleave(T)[flat_m]
        weights = torch.where(lips_only[row, None], weights * on_lips, weights)
    vert = ((err * weights).sum(1) / weights.sum(1)).mean() if len(err) else err.sum()
    total = float(w.coef_weight) * coef + float(w.vertex_weight) * vert * 1e-2 + float(w.velocity_weight) * vel
    out = {"coef": coef, "vertex_mm2": vert, "velocity": vel}
    if gap_ids is not None and float(w.gap_weight) > 0 and len(vp):
        # the lip gap (mm) itself, with frames where the lips touch in the data counted closed_weight times more: a
        # bilabial is a short, all-or-nothing event that a plain vertex loss lets an uncertain model half-close
        from avitalk.flame import FlameModel

        gp, gt = FlameModel.lip_gap(vp, *gap_ids), FlameModel.lip_gap(vt, *gap_ids)
        wt = 1.0 + float(w.closed_weight) * (gt < 1.0).to(gp.dtype)
        out["gap_mm2"] = (wt * (gp - gt) ** 2).sum() / wt.sum()
        total = total + float(w.gap_weight) * out["gap_mm2"] * 1e-2
    return {"loss": total, **out}


SEAL_MM = 0.3  # an aligned /b p m/ counts as shut when the smallest lip gap near it is under this (mm)
OPEN_EVENT_MM = 3.5  # an aligned open vowel counts as open when the largest gap near it is over this (mm)
EVENT_FRAMES = 2  # frames either side of an aligned sound (80 ms at 25 fps, eval/bilabial.py's window)
REST_MM = 1.0  # in a pause of speech without motion the lips rest: a gap over this is penalised (mm)


def event_loss(gap: torch.Tensor, events: list[list[tuple[str, float]]], mask: torch.Tensor) -> torch.Tensor:
    """Squared hinges on the lip gap [B, T] (mm) at aligned sounds (:class:`.clips.EventBank`): the smallest gap within
    EVENT_FRAMES of a bilabial under SEAL_MM, the largest within EVENT_FRAMES of an open vowel over OPEN_EVENT_MM;
    the mean over the events (zero when there are none)."""
    terms = []
    for i, es in enumerate(events):
        n = int(mask[i].sum())
        for kind, t in es:
            a, b = max(0, int(np.floor(t)) - EVENT_FRAMES), min(n, int(np.ceil(t)) + EVENT_FRAMES + 1)
            if a >= b:
                continue
            seg = gap[i, a:b]
            terms.append(torch.relu(seg.min() - SEAL_MM) ** 2 if kind == "bilabial"
                         else torch.relu(OPEN_EVENT_MM - seg.max()) ** 2)
    return torch.stack(terms).mean() if terms else gap.sum() * 0.0


def rest_loss(gap: torch.Tensor, quiet: torch.Tensor) -> torch.Tensor:
    """A squared hinge on the lip gap [B, T] (mm) over REST_MM in the pauses ``quiet`` [B, T] of speech without
    motion (:class:`.clips.EventBank`): the face at rest when nothing is said; the mean over those frames."""
    q = quiet.to(gap.dtype)
    return (torch.relu(gap - REST_MM) ** 2 * q).sum() / q.sum().clamp_min(1)


def row_weights(bank: ClipBank, share: float | None) -> np.ndarray | None:
    """Per-clip sampling probabilities for lip-sync batches: clips of the first corpus share 1 - ``share``, those of
    the others ``share`` (each corpus's clips equally likely); None (uniform over clips) with one corpus or no share."""
    corpus = np.asarray(bank.corpus)
    if share is None or corpus.max() == 0:
        return None
    share = float(share)
    if not 0.0 <= share <= 1.0:
        from avitalk.config import ConfigError

        raise ConfigError(f"stage2.train.lipsync.motion_data_share must lie in [0, 1], got {share}")
    first = corpus == 0
    p = np.where(first, (1.0 - share) / first.sum(), share / (~first).sum())
    return p / p.sum()


# ------------------------------------------------------------------------------------------------ main
def train_stage2(cfg: DictConfig, data: str | os.PathLike, out: str | os.PathLike, phase: str = "all",
                 resume: bool = False, progress: bool = True, limit: int | None = None,
                 motion_data: tuple[str | os.PathLike, ...] = (),
                 event_data: tuple[str | os.PathLike, ...] = ()) -> dict[str, Any]:
    from accelerate.utils import set_seed
    from torch.utils.tensorboard import SummaryWriter

    from avitalk.encoders.cache import cache_dataset_features, cache_paused_features
    from avitalk.flame import FlameModel

    from .synthesizer import Synthesizer, load_module, save_module

    if phase not in ("lipsync", "stream", "prior", "all"):
        raise ValueError("phase must be lipsync, stream, prior or all")
    data, out = Path(data), Path(out)
    from avitalk.data.manifest import read_manifest

    read_manifest(data, "train")  # a clear error before any model is loaded
    motion_data = tuple(Path(d) for d in motion_data)
    for d in motion_data:
        read_manifest(d, "train")
    out.mkdir(parents=True, exist_ok=True)
    from avitalk.config import merge_config

    cfg = merge_config(cfg, source="the stage-2 training config")  # a checked copy with every default: never the caller's
    tc = cfg.stage2.train
    if phase == "stream" and int(tc.stream.steps) <= 0:
        from avitalk.config import ConfigError

        raise ConfigError("--phase stream: stage2.train.stream.steps is 0 in this config, so there is no live decoder to "
                          "train (e.g. --set stage2.train.stream.steps=3000)")
    from avitalk.training import Phase, accelerator, run_phase

    acc = accelerator(str(tc.mixed_precision))
    seed = int(cfg.seed)
    set_seed(int(cfg.seed))  # the same initial weights on every process (DDP also broadcasts them)
    rng = np.random.default_rng(int(cfg.seed))
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    synth = Synthesizer.build(cfg)
    cfg = synth.cfg
    cfg.audio_dim, cfg.text_dim = int(synth.audio_encoder.dim), int(synth.text_encoder.dim)
    t = time.perf_counter()
    cache = cache_dataset_features(data, synth.audio_encoder, progress=progress and acc.is_main_process)
    copies = int(tc.augment_copies)
    acache = None
    if copies:
        from avitalk.encoders.cache import cache_augmented_features

        acache = cache_augmented_features(data, synth.audio_encoder, copies, seed=int(cfg.seed),
                                          progress=progress and acc.is_main_process)
    pauses = int(tc.pause_copies)
    pcache = None
    if pauses:
        pcache = cache_paused_features(data, synth.audio_encoder, pauses, seed=int(cfg.seed),
                                       progress=progress and acc.is_main_process)
    sc = tc.stream
    streaming = int(sc.steps) > 0 and phase in ("stream", "all")
    wcache = None
    if streaming:
        from avitalk.encoders.cache import cache_stream_windows

        wcache = cache_stream_windows(data, synth.audio_encoder, int(sc.windows), float(sc.context_s),
                                      seed=int(cfg.seed), progress=progress and acc.is_main_process)
    train = ClipBank(data, "train", cache, limit, acache, copies, pcache, pauses, int(cfg.seed), wcache,
                     int(sc.windows) if streaming else 0)
    if len(train) < 2:
        raise DatasetError(f"{data}: needs at least 2 training clips, has {len(train)}")
    # lip-sync pretraining reads the motion corpora too (tracked real faces); the prior learns styles from data's
    banks = [train]
    for d in motion_data:
        c = cache_dataset_features(d, synth.audio_encoder, progress=progress and acc.is_main_process)
        a = (cache_augmented_features(d, synth.audio_encoder, copies, seed=int(cfg.seed),
                                      progress=progress and acc.is_main_process) if copies else None)
        pc_ = (cache_paused_features(d, synth.audio_encoder, pauses, seed=int(cfg.seed),
                                     progress=progress and acc.is_main_process) if pauses else None)
        banks.append(ClipBank(d, "train", c, limit, a, copies, pc_, pauses, int(cfg.seed)))
    # speech without motion whose aligned sounds teach the lips (stage2.train.lipsync.event_rows)
    ebank = None
    if event_data and int(tc.lipsync.event_rows) > 0 and (phase in ("lipsync", "all") or streaming):
        from .clips import EventBank

        ebank = EventBank.concat([EventBank(Path(d), cache_dataset_features(Path(d), synth.audio_encoder,
                                                                           progress=progress and acc.is_main_process),
                                            int(tc.lipsync.event_holdout_every), limit) for d in event_data])
    timings["features_s"] = time.perf_counter() - t
    lip_bank = ClipBank.concat(banks, str(tc.lipsync.motion_data_partners)) if len(banks) > 1 else train
    lip_p = row_weights(lip_bank, tc.lipsync.motion_data_share)
    allm = np.concatenate(lip_bank.motion)
    mean, std = torch.as_tensor(allm.mean(0)), torch.as_tensor(allm.std(0))
    synth.decoder.set_motion_stats(mean, std)
    synth.style_encoder.set_motion_stats(mean, std)
    history: dict[str, list] = {"lipsync": [], "stream": [], "prior": []}
    if (out / "history.json").is_file() and resume:
        history = {"stream": [], **json.loads((out / "history.json").read_text())}
    writer = SummaryWriter(str(out / "logs")) if acc.is_main_process else None
    model = FlameModel.from_spec(cfg.flame_model)

    # the vertices the motion losses read: the lips and a random draw of the rest of the face
    lc = tc.lipsync
    if phase in ("lipsync", "stream", "all"):
        lips = model.region("lips") if "lips" in model.regions else np.arange(0)
        face = model.region("face") if "face" in model.regions else np.arange(model.num_vertices)
        extra = rng.choice(np.setdiff1d(face, lips), size=min(int(lc.face_vertices), len(face)), replace=False)
        ids = np.concatenate([lips, np.sort(extra)])
        subset = model.subset(ids).to(acc.device)
        lip_ids = torch.arange(len(lips), device=acc.device)
        gap_ids = None
        if float(lc.gap_weight) > 0 and len(lips):
            up, lo = model.lip_midline()
            gap_ids = (torch.as_tensor(np.flatnonzero(np.isin(lips, up)), device=acc.device),
                       torch.as_tensor(np.flatnonzero(np.isin(lips, lo)), device=acc.device))

    if ebank is not None:
        if gap_ids is None:
            from avitalk.config import ConfigError

            raise ConfigError("stage2.train.lipsync.event_rows needs the lip gap (gap_weight > 0 and a head model with "
                              "lips)")
        lip_subset = model.subset(lips).to(acc.device)
        plain = [i for i, lab in enumerate(train.labels) if lab["emotion"] == "neutral"] or list(range(len(train)))

    def event_rows(net, style, brng, losses: dict[str, torch.Tensor]) -> list[str]:
        """``event_rows`` rows of speech without motion through ``net``, styled by ``style`` (the style encoder) of a
        neutral clip of the main corpus ("a person speaks"); their hinges added to ``losses``; their clip ids."""
        eidx = brng.integers(0, len(ebank), int(lc.event_rows))
        x, m, events, quiet = ebank.batch(eidx, int(lc.crop_frames), brng)
        crop, styles = int(lc.crop_frames), []
        for j in (plain[int(brng.integers(len(plain)))] for _ in eidx):
            s0 = crop_start(len(train.motion[j]), crop, brng)
            styles.append(train.motion[j][s0 : s0 + crop])
        pm, pmask = _pad(styles)
        ep = net(x.to(acc.device), style(pm.to(acc.device), pmask.to(acc.device)), m.to(acc.device)).float()
        flat = ep.reshape(-1, ep.shape[-1])
        g = FlameModel.lip_gap(lip_subset(flat[:, :-3], flat[:, -3:]), *gap_ids).reshape(ep.shape[:2])
        losses["events_mm2"] = event_loss(g, events, m)
        losses["rest_mm2"] = rest_loss(g, quiet.to(acc.device))
        losses["loss"] = losses["loss"] + float(lc.event_weight) * (losses["events_mm2"] + losses["rest_mm2"])
        return [ebank.ids[i] for i in eidx]

    # ------------------------------------------------ phase 1: lip-sync pretraining
    if phase in ("lipsync", "all"):
        params = list(synth.style_encoder.parameters()) + list(synth.decoder.parameters())
        opt = torch.optim.AdamW(params, lr=float(lc.lr), weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(lc.warmup), int(lc.steps)))
        enc, dec = acc.prepare_model(synth.style_encoder), acc.prepare_model(synth.decoder)
        enc.train(), dec.train()

        def lipsync_step(brng) -> tuple[dict[str, torch.Tensor], list[str]]:
            idx = (brng.integers(0, len(lip_bank), int(lc.batch_size)) if lip_p is None
                   else brng.choice(len(lip_bank), int(lc.batch_size), p=lip_p))
            tracked = np.asarray(lip_bank.corpus)[idx] > 0  # rows of the motion corpora
            speech_only = tracked if str(lc.motion_data_frames) == "speech" else None
            b = {k: v.to(acc.device) for k, v in lipsync_batch(lip_bank, idx, int(lc.crop_frames), brng,
                                                               float(lc.augment_p), float(lc.pause_p),
                                                               speech_only).items()}
            pred = dec(b["feats"], enc(b["partner"], b["partner_mask"]), b["mask"])
            lips_only = torch.as_tensor(tracked, device=acc.device) if str(lc.motion_data_loss) == "lips" else None
            losses = lipsync_losses(pred.float(), b["motion"], b["loss_mask"], synth.decoder, subset, lip_ids, lc,
                                    gap_ids, lips_only)
            ids = [lip_bank.ids[i] for i in idx]
            if ebank is not None:
                ids += event_rows(dec, enc, brng, losses)
            return losses, ids

        def save_lipsync() -> None:
            save_module(synth.style_encoder, out / "style_encoder.safetensors")
            save_module(synth.decoder, out / "decoder.safetensors")

        t = time.perf_counter()
        run_phase(acc, Phase("lipsync", 1, int(lc.steps), lipsync_step, params, opt, sched,
                             {"style_encoder": synth.style_encoder, "decoder": synth.decoder},
                             on_checkpoint=save_lipsync, show="vertex_mm2"),
                  out, history, seed, int(tc.checkpoint_every), resume, progress, writer, "stage2 lipsync")
        timings["lipsync_s"] = time.perf_counter() - t
        synth.style_encoder.eval(), synth.decoder.eval()
    else:
        load_module(synth.style_encoder, out / "style_encoder.safetensors", "style_encoder")
        load_module(synth.decoder, out / "decoder.safetensors", "decoder")

    # ------------------------------------------------ phase 1b: the live decoder
    if streaming:
        import copy

        from .synthesizer import STREAM_DECODER

        live = copy.deepcopy(synth.decoder).train()
        synth.style_encoder.eval().requires_grad_(False)
        lparams = list(live.parameters())
        opt = torch.optim.AdamW(lparams, lr=float(sc.lr), weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(sc.warmup), int(sc.steps)))
        ldec = acc.prepare_model(live)

        def stream_step(brng) -> tuple[dict[str, torch.Tensor], list[str]]:
            idx = brng.integers(0, len(train), int(sc.batch_size))
            b = {k: v.to(acc.device) for k, v in stream_batch(train, idx, int(lc.crop_frames), brng).items()}
            with torch.no_grad():
                z = synth.style_encoder(b["partner"], b["partner_mask"])
            pred = ldec(b["feats"], z, b["mask"])
            losses = lipsync_losses(pred.float(), b["motion"], b["mask"], live, subset, lip_ids, lc, gap_ids)
            ids = [train.ids[i] for i in idx]
            if ebank is not None:  # the lips of speech without motion, as the offline decoder learned them

                def frozen_style(m, mask):
                    with torch.no_grad():
                        return synth.style_encoder(m, mask)

                ids += event_rows(ldec, frozen_style, brng, losses)
            return losses, ids

        t = time.perf_counter()
        run_phase(acc, Phase("stream", 3, int(sc.steps), stream_step, lparams, opt, sched, {STREAM_DECODER: live},
                             on_checkpoint=lambda: save_module(live, out / f"{STREAM_DECODER}.safetensors"),
                             show="vertex_mm2"),
                  out, history, seed, int(tc.checkpoint_every), resume, progress, writer, "stage2 live decoder")
        timings["stream_s"] = time.perf_counter() - t
        synth.stream_decoder = live.eval()
        synth.style_encoder.requires_grad_(True)
    elif phase in ("lipsync", "all"):  # a live decoder left from an earlier training fits an older decoder
        (out / "decoder_stream.safetensors").unlink(missing_ok=True)
    elif (out / "decoder_stream.safetensors").is_file():  # phase prior: the live decoder of an earlier call
        import copy

        synth.stream_decoder = copy.deepcopy(synth.decoder)
        load_module(synth.stream_decoder, out / "decoder_stream.safetensors", "decoder_stream")
    if phase in ("lipsync", "stream") and (out / "prior.safetensors").is_file():  # keep a prior trained before
        load_module(synth.prior, out / "prior.safetensors", "prior")

    # ------------------------------------------------ phase 2: the diffusion prior
    if phase in ("prior", "all"):
        pc = tc.prior
        with torch.no_grad():
            Z = []
            for s in range(0, len(train), 64):
                m, mask = _pad(train.motion[s : s + 64])
                Z.append(synth.style_encoder.eval()(m.to(acc.device), mask.to(acc.device)).cpu())
            Z = torch.cat(Z)
        texts = [list(ins) + augmented_instructions(lab, rng, int(pc.partial_instructions))
                 for ins, lab in zip(train.instructions, train.labels)]
        n_conf = int(pc.conflicting_instructions)
        conflicts: list[list[str]] = [[] for _ in range(len(train))]
        for i, lab in enumerate(train.labels):
            others = [j for j in rng.integers(0, len(train), 16) if train.labels[j]["emotion"] != lab["emotion"]]
            conflicts[i] = [conflicting_instruction(lab, train.labels[j], rng) for j in others[:n_conf]]
        flat_conf = [t for ts in conflicts for t in ts]
        p_conf = float(pc.conflict_probability)
        flat = sorted({t for ts in texts for t in ts} | set(flat_conf))
        emb = dict(zip(flat, torch.as_tensor(synth.text_encoder.encode(flat))))
        prior = synth.prior
        opt = torch.optim.AdamW(prior.parameters(), lr=float(pc.lr), weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(pc.warmup), int(pc.steps)))
        pprior = acc.prepare_model(prior)
        pprior.train()
        ddpm = prior.train_scheduler()

        def prior_step(brng) -> tuple[dict[str, torch.Tensor], list[str]]:
            idx = brng.integers(0, len(train), int(pc.batch_size))
            pick = [conflicts[i][int(brng.integers(len(conflicts[i])))] if conflicts[i] and brng.random() < p_conf
                    else texts[i][int(brng.integers(len(texts[i])))] for i in idx]
            tx = torch.stack([emb[t] for t in pick]).to(acc.device)
            # through the prepared module (its forward is the losses), so DDP synchronises the gradients
            return (pprior(Z[idx].to(acc.device), tx, ddpm, contrastive_weight=float(pc.contrastive_weight),
                           mapper_weight=float(pc.mapper_weight)),
                    [train.ids[i] for i in idx])

        t = time.perf_counter()
        run_phase(acc, Phase("prior", 2, int(pc.steps), prior_step, list(prior.parameters()), opt, sched,
                             {"prior": prior}, on_checkpoint=lambda: save_module(prior, out / "prior.safetensors"),
                             show="diffusion"),
                  out, history, seed, int(tc.checkpoint_every), resume, progress, writer, "stage2 prior")
        timings["prior_s"] = time.perf_counter() - t
        synth.prior = prior.eval()

    timings["total_s"] = time.perf_counter() - t_start
    if acc.is_main_process:
        synth.save(out)
        from avitalk.plots import plot_history

        plot_history(history, out / "loss_curves.png")
        atomic_write_json(out / "history.json", history)
        atomic_write_json(out / "train_info.json", {"timings": timings, "train_clips": len(train), "phase": phase,
                                                    "motion_data": [str(d) for d in motion_data],
                                                    "event_data": [str(d) for d in event_data],
                                                    "event_clips": len(ebank) if ebank is not None else 0,
                                                    "event_held_out_speakers": (sorted(ebank.held_out)
                                                                                if ebank is not None else []),
                                                    "config": OmegaConf.to_container(cfg)})
    if writer:
        writer.close()
    return {"timings": timings, "history": history, "synthesizer": synth}
