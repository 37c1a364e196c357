"""Stage-1 training and measurement.

``avitalk train stage1 --config configs/tiny.yaml --data DIR --out CKPT [--resume]``: (1) for the embedded default,
a tokenizer and a tiny Llama are trained on the training split's instruction text, then frozen; (2) Q-Former,
projection and LoRA are trained on (speech features -> instruction), with the same cached encoder features as
stage 2. Checkpoint: ``tokenizer/``, ``lm/`` (safetensors), ``adapter/`` (peft), ``qformer.safetensors``,
``stage1.yaml``, ``history.json``, ``loss_curves.png``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from avitalk.io import atomic_write_json
from avitalk.vocab import load_vocabulary

from .features import FeatureBank
from .hearing import prosody_dim
from .lm import save_lm, save_stage1
from .model import build_model, load_prompts


def train_stage1(cfg: DictConfig, data: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
                 progress: bool = True, limit: int | None = None, extra_data: tuple = (),
                 exclude_speakers: tuple = (), with_reader: bool = True) -> dict[str, Any]:
    """Train stage 1 on ``data`` (with motion or not) plus ``extra_data`` (e.g. labelled real speech imported with
    ``avitalk data ravdess`` without fits); ``exclude_speakers`` are left out of training (leave-actors-out folds).
    ``with_reader=False``: no emotion reader is fitted here (``stage1.reader`` on or not), for a caller that installs
    its own (the default checkpoint's build, which calibrates one on leave-speakers-out folds).
    With ``stage1.train.augment_copies`` > 0, that many augmented copies of every training clip (noise, reverb, band
    limits, gain, codec) are encoded once and cached; a batch takes one with probability ``augment_p``; a batch
    holds ``real_fraction`` clips of the extra data; ``augment_p_main`` (when set) is the main corpus's own chance."""
    from tqdm import tqdm

    from avitalk.training import Phase, accelerator, run_phase, warmup_cosine

    from avitalk.data.manifest import read_manifest
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.text import text_encoder_from_config

    from .lm_pretrain import pretrain_lm, tiny_llama, train_tokenizer

    data, out = Path(data), Path(out)
    extra_data = tuple(Path(d) for d in extra_data)
    read_manifest(data, "train")
    for d in extra_data:
        read_manifest(d, "train")
    out.mkdir(parents=True, exist_ok=True)
    from avitalk.config import merge_config

    cfg = merge_config(cfg, source="the stage-1 training config")  # a checked copy with every default: never the caller's
    s1 = cfg.stage1
    tc = s1.train
    acc = accelerator(str(tc.mixed_precision), find_unused_parameters=True)  # the warm-up trains the Q-Former alone
    seed, main = int(cfg.seed), acc.is_main_process
    progress = progress and main
    torch.manual_seed(int(cfg.seed))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    enc = audio_encoder_from_config(cfg.audio_encoder)
    cfg.audio_dim = int(enc.dim)
    copies = int(tc.augment_copies)
    with acc.main_process_first():  # the main process encodes and caches; the others then read the cache
        train = training_bank(cfg, enc, (data, *extra_data), exclude_speakers, limit, progress, prosody=True)
    real_fraction = float(tc.real_fraction) if extra_data else 0.0
    augment_p = float(tc.augment_p) if copies else 0.0
    augment_p_main = None if tc.augment_p_main is None or not copies else float(tc.augment_p_main)
    timings["features_s"] = time.perf_counter() - t0
    texts = [[t for t in c.instructions] for c in train.clips]
    history: dict[str, list] = {"lm": []}
    if resume and (out / "history.json").is_file():
        history = json.loads((out / "history.json").read_text())

    # ---- (1) tokenizer + tiny LM (or a pretrained causal LM from a path / hub id)
    t = time.perf_counter()
    if s1.llm == "tiny":
        if resume and (out / "lm").is_dir() and (out / "tokenizer").is_dir():
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
            llm = AutoModelForCausalLM.from_pretrained(str(out / "lm"))
        else:
            corpus = [x for ts in texts for x in ts] + load_prompts()
            tok = train_tokenizer(corpus, vocab_size=int(s1.tiny_lm.vocab_size))
            llm = tiny_llama(tok, seed=int(cfg.seed), **{k: v for k, v in OmegaConf.to_container(s1.tiny_lm).items()
                                                         if k not in ("vocab_size", "steps", "batch_size", "lr")})
            # every process trains the same tiny LM (seeded, on the same text); the main one writes it
            history["lm"] = pretrain_lm(llm, tok, [x for ts in texts for x in ts], steps=int(s1.tiny_lm.steps),
                                        batch_size=int(s1.tiny_lm.batch_size), lr=float(s1.tiny_lm.lr),
                                        seed=int(cfg.seed), progress=progress)
            if main:
                save_lm(tok, llm, out)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from avitalk.errors import CheckpointError, no_download

        try:
            tok = AutoTokenizer.from_pretrained(str(s1.llm), local_files_only=True)
            llm = AutoModelForCausalLM.from_pretrained(str(s1.llm), local_files_only=True)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the language model {str(s1.llm)!r} (stage1.llm): not on this machine "
                                  f"or not a causal LM; {no_download(s1.llm)}") from e
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if tok.bos_token_id is None:
            tok.bos_token = tok.eos_token
        if main:
            save_lm(tok, llm, out)
    timings["lm_s"] = time.perf_counter() - t

    # ---- (2) Q-Former + projection + LoRA
    te = text_encoder_from_config(cfg.stage2.text_encoder)
    model = build_model(cfg, tok, llm, te.dim)
    flat = sorted({x for ts in texts for x in ts})
    emb = dict(zip(flat, torch.as_tensor(te.encode(flat))))
    dev = acc.device
    model.to(dev)
    pmodel = acc.prepare_model(model)  # DDP on several processes: the losses below go through it
    emb = {k: v.to(dev) for k, v in emb.items()}
    every = int(tc.checkpoint_every)
    weights = {k: float(tc[k]) for k in ("contrastive_weight", "aux_weight", "keyword_weight")}  # of the losses
    prompts = load_prompts()
    vocab = load_vocabulary()
    spans = [[vocab.emotion_spans(x) for x in ts] for ts in texts]
    model.train()

    # (2a) Q-Former warm-up without the LLM: queries that already separate emotions and intensities (classification)
    # and match the instruction's sentence embedding (contrastive) give the LoRA stage something to read.
    t = time.perf_counter()
    warm = int(tc.qformer_warmup_steps)
    if warm:
        qparams = [*model.qformer.parameters(), *model.align.parameters(), *model.aux.parameters(), model.logit_scale]
        qopt = torch.optim.AdamW(qparams, lr=float(tc.qformer_warmup_lr), weight_decay=0.01)
        qsched = torch.optim.lr_scheduler.LambdaLR(qopt, lambda s: 1.0)
        crop = tc.qformer_warmup_crop

        def warm_step(brng) -> tuple[dict[str, torch.Tensor], list[str]]:
            idx = train.sample(int(tc.qformer_warmup_batch_size), brng, real_fraction)
            f, m = train.batch(idx, int(crop) if crop else None, brng, augment_p=augment_p, augment_p_main=augment_p_main)
            k = [int(brng.integers(len(texts[i]))) for i in idx]
            emo, inten = train.labels(idx)
            return pmodel(f.to(dev), m.to(dev), None, torch.stack([emb[texts[i][j]] for i, j in zip(idx, k)]),
                          emotion=emo.to(dev), intensity=inten.to(dev), warmup=True, **weights), [train.clips[i].id for i in idx]

        run_phase(acc, Phase("qformer_warmup", 1, warm, warm_step, qparams, qopt, qsched, {"model": model},
                             trainable_only=True, autocast=True), out, history, seed, every, resume, progress,
                  desc="stage1 qformer_warmup")
        timings["qformer_warmup_s"] = time.perf_counter() - t
        t = time.perf_counter()

    # (2b) Q-Former + projection + LoRA on the instruction text
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(tc.lr), weight_decay=0.01)
    steps = int(tc.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(int(tc.warmup), steps, decay_from_start=True))

    def adapter_step(brng) -> tuple[dict[str, torch.Tensor], list[str]]:
        idx = train.sample(int(tc.batch_size), brng, real_fraction)
        f, m = train.batch(idx, None, brng, augment_p=augment_p, augment_p_main=augment_p_main)
        k = [int(brng.integers(len(texts[i]))) for i in idx]
        tx = [texts[i][j] for i, j in zip(idx, k)]
        pr = [prompts[int(brng.integers(len(prompts)))] for _ in idx]
        emo, inten = train.labels(idx)
        return pmodel(f.to(dev), m.to(dev), tx, torch.stack([emb[x] for x in tx]), pr, emotion=emo.to(dev),
                      intensity=inten.to(dev), keyword_spans=[spans[i][j] for i, j in zip(idx, k)], warmup=False,
                      **weights), [train.clips[i].id for i in idx]

    run_phase(acc, Phase("adapter", 2, steps, adapter_step, params, opt, sched, {"model": model}, trainable_only=True,
                         autocast=True), out, history, seed, every, resume, progress, desc="stage1 adapter")
    model = acc.unwrap_model(pmodel).eval().cpu()
    timings["adapter_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    if main and bool(s1.reader) and with_reader:  # (3) the emotion reader, after the rest
        t = time.perf_counter()
        _save_reader(cfg, enc, train, (data, *extra_data), out, tuple(exclude_speakers), progress)
        timings["reader_s"] = time.perf_counter() - t
    if main:  # one checkpoint, written by the main process
        save_stage1(model, out, cfg)
        atomic_write_json(out / "history.json", history)
        from avitalk.plots import plot_history

        plot_history(history, out / "loss_curves.png")
        atomic_write_json(out / "train_info.json", {
            "timings": timings, "train_clips": len(train.clips), "real_train_clips": int(train.real.sum()),
            "data": [str(d) for d in (data, *extra_data)], "excluded_speakers": sorted(exclude_speakers),
            "augment_copies": copies, "processes": acc.num_processes})
    acc.wait_for_everyone()
    return {"model": model, "timings": timings, "history": history}


def training_bank(cfg, enc, datasets, exclude_speakers=(), limit: int | None = None, progress: bool = False, *,
                  prosody: bool):
    """Stage 1's training clips (FeatureBank, float16): every dataset's train split, encoded and cached (+ prosody
    when stage 1 adds it, + ``stage1.train.augment_copies`` augmented copies), the excluded speakers left out."""
    from avitalk.encoders.cache import cache_augmented_features, cache_dataset_features
    from avitalk.encoders.prosody import ProsodyEncoder

    copies = int(cfg.stage1.train.augment_copies)
    sources = []
    for d in datasets:
        cache = cache_dataset_features(d, enc, progress=progress)
        add = prosody and prosody_dim(cfg)
        pcache = cache_dataset_features(d, ProsodyEncoder(), progress=progress) if add else None
        acache = cache_augmented_features(d, enc, copies, seed=int(cfg.seed), progress=progress) if copies else None
        sources.append((d, cache, pcache, acache, copies, tuple(exclude_speakers)))
    return FeatureBank(split="train", limit=limit, sources=sources, dtype=np.float16)


def fit_stage1_reader(cfg, enc, datasets, out: str | os.PathLike, exclude_speakers=(), progress: bool = False) -> None:
    """Fit the emotion reader of a stage 1 trained without one (on the clips it trained on) into ``out``."""
    bank = training_bank(cfg, enc, datasets, exclude_speakers, progress=progress, prosody=True)
    _save_reader(cfg, enc, bank, datasets, out, tuple(exclude_speakers), progress)


def _save_reader(cfg, enc, bank, datasets, out: str | os.PathLike, exclude_speakers: tuple = (),
                 progress: bool = False) -> None:
    """The emotion reader of ``bank`` (stage1.train.reader_c), calibrated (temperature, threshold) on the datasets'
    validation splits when they have one, into ``out``."""
    import logging

    from avitalk.encoders.cache import cache_dataset_features
    from avitalk.errors import DatasetError

    from .reader import READER_FILE, bank_rows, calibrate, fit_reader

    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.prosody import ProsodyEncoder

    own = cfg.stage1.reader_encoder  # the reader's own encoder: its own features (it carries its prosody)
    if own:
        enc = audio_encoder_from_config(own)
        bank = training_bank(cfg, enc, datasets, exclude_speakers, progress=progress, prosody=False)
    rows = bank_rows(bank, progress=progress)
    reader = fit_reader(rows["x"], rows["y"], rows["real"], c=float(cfg.stage1.train.reader_c))
    try:
        val = FeatureBank(split="val", sources=[
            (d, cache_dataset_features(d, enc, progress=False),
             cache_dataset_features(d, ProsodyEncoder(), progress=False) if prosody_dim(cfg) and not own else None,
             None, 0, ()) for d in datasets])
        v = bank_rows(val, clean_only=True)
        reader = calibrate(reader, v["x"], v["y"], v["corpus"])
    except DatasetError:
        logging.getLogger(__name__).warning("no validation clips: the emotion reader is not calibrated (temperature "
                                            "1, no threshold); scripts/voice_folds.py calibrates it on held-out speakers")
    reader.save(Path(out) / READER_FILE)
