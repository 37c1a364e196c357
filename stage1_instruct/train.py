"""Stage-1 training and measurement.

``avitalk train stage1 --config configs/tiny.yaml --data DIR --out CKPT [--resume]``: (1) for the embedded default,
a tokenizer and a tiny Llama are trained on the training split's instruction text, then frozen; (2) Q-Former,
projection and LoRA are trained on (speech features -> instruction), with the same cached encoder features as
stage 2. Checkpoint: ``tokenizer/``, ``lm/`` (safetensors), ``adapter/`` (peft), ``qformer.safetensors``,
``stage1.yaml``, ``history.json``, ``loss_curves.png``.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from avitalk.errors import CheckpointError, DatasetError
from avitalk.io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text
from avitalk.text_metrics import instruction_scores
from avitalk.vocab import EMOTIONS, load_vocabulary

from .instructor import Instructor, build_qformer, load_prompts, prosody_dim


class FeatureBank:
    """Per-clip features of one split of one or more datasets (encoder features, with prosody channels appended when
    ``prosody`` caches are given), each clip with its augmented copies when ``augmented`` caches are given.

    ``sources``: ``[(root, cache, prosody_cache_or_None, augmented_cache_or_None, copies, exclude_speakers)]``; the
    first source is the main corpus, the others are marked ``real`` (sampled with ``real_fraction`` in training).
    """

    def __init__(self, root: Path | None = None, split: str = "train", cache=None, limit: int | None = None,
                 prosody=None, sources: list | None = None, dtype=np.float32):
        from avitalk.data.manifest import read_manifest
        from avitalk.encoders.cache import augmented_id

        if sources is None:
            sources = [(root, cache, prosody, None, 0, ())]
        self.clips, self.feats, self.variants, self.real = [], [], [], []
        for n_src, (src_root, c_cache, p_cache, a_cache, copies, exclude) in enumerate(sources):
            clips = [c for c in read_manifest(src_root, split) if c.speaker not in set(exclude or ())][:limit]
            for c in clips:
                ids = [c.id] + ([augmented_id(c.id, k) for k in range(copies)] if a_cache is not None else [])
                vs = []
                for j, cid in enumerate(ids):
                    f = (c_cache if j == 0 else a_cache).get(cid)
                    if f is None:
                        raise DatasetError(f"{cid}: features missing from {(c_cache if j == 0 else a_cache).dir}")
                    if p_cache is not None:
                        p = p_cache.get(c.id)
                        if p is None:
                            raise DatasetError(f"{c.id}: prosody features missing from {p_cache.dir}")
                        n = min(len(f), len(p))
                        f = np.concatenate([f[:n], p[:n]], 1)
                    vs.append(np.asarray(f, dtype))
                self.clips.append(c)
                self.feats.append(vs[0])
                self.variants.append(vs)
                self.real.append(n_src > 0)
        if not self.clips:
            raise DatasetError(f"no clips in split {split!r} of {[str(s[0]) for s in sources]}")
        self.real = np.asarray(self.real)

    def sample(self, n: int, rng: np.random.Generator, real_fraction: float = 0.0) -> np.ndarray:
        """``n`` clip indices; ``real_fraction`` of them from the real (non-first) sources when there are any, drawn
        so that every emotion is equally likely (RAVDESS has twice as many neutral clips: neutral and calm)."""
        real = np.flatnonzero(self.real)
        main = np.flatnonzero(~self.real)
        if not len(real) or real_fraction <= 0:
            return rng.integers(0, len(self.clips), n)
        if not hasattr(self, "_real_p"):
            emo = [self.clips[i].emotion for i in real]
            counts = {e: emo.count(e) for e in set(emo)}
            p = np.array([1.0 / counts[e] for e in emo])
            self._real_p = p / p.sum()
        if not len(main) or real_fraction >= 1:
            return real[rng.choice(len(real), n, p=self._real_p)]
        k = int(rng.binomial(n, real_fraction))
        return np.concatenate([real[rng.choice(len(real), k, p=self._real_p)], main[rng.integers(0, len(main), n - k)]])

    def labels(self, idx) -> tuple[torch.Tensor, torch.Tensor]:
        """Emotion and intensity class indices (-100 where a clip has none)."""
        emo = [EMOTIONS.index(self.clips[i].emotion) if self.clips[i].emotion in EMOTIONS else -100 for i in idx]
        inten = [int(self.clips[i].intensity) - 1 if self.clips[i].intensity in (1, 2, 3) else -100 for i in idx]
        return torch.tensor(emo), torch.tensor(inten)

    def batch(self, idx, crop: int | None = None, rng: np.random.Generator | None = None,
              augment_p: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded features [B, L, D] and mask; ``crop``: a random window of at most that many frames per clip;
        ``augment_p``: the chance of taking one of the clip's augmented copies instead of the clean features."""
        parts = []
        for i in idx:
            vs = self.variants[i]
            f = vs[0]
            if augment_p > 0 and len(vs) > 1 and rng is not None and rng.random() < augment_p:
                f = vs[1 + int(rng.integers(len(vs) - 1))]
            if crop is not None and len(f) > crop:
                s = int((rng or np.random.default_rng()).integers(0, len(f) - crop + 1))
                f = f[s : s + crop]
            parts.append(np.asarray(f, np.float32))
        from avitalk.data.dataset import pad_arrays

        return pad_arrays(parts)


def build_model(cfg: DictConfig, tokenizer, llm, text_dim: int):
    from .model import InstructionModel

    s1 = cfg.stage1
    return InstructionModel(llm, tokenizer, build_qformer(cfg, llm.config.hidden_size), load_prompts()[0],
                            text_dim=text_dim, lora=OmegaConf.to_container(s1.lora),
                            chat_template=bool(s1.get("chat_template", False)))


def save_stage1(model, out: Path, cfg: DictConfig) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "tokenizer") as tmp:
        model.tokenizer.save_pretrained(str(tmp))
    with atomic_dir(out / "adapter") as tmp:
        model.llm.save_pretrained(str(tmp))  # the LoRA weights only (peft format)
    state = {f"qformer.{k}": v for k, v in model.qformer.state_dict().items()}
    state.update({f"align.{k}": v for k, v in model.align.state_dict().items()})
    state.update({f"aux.{k}": v for k, v in model.aux.state_dict().items()})
    state["logit_scale"] = model.logit_scale.detach()
    with atomic_path(out / "qformer.safetensors") as tmp:
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(tmp))
    atomic_write_text(out / "stage1.yaml", OmegaConf.to_yaml(cfg))


def load_stage1(ckpt: str | os.PathLike, text_dim: int = 384, cfg: DictConfig | None = None):
    """Rebuild the instruction model from a checkpoint directory (never unpickles). ``cfg`` replaces the folder's
    ``stage1.yaml`` (a pipeline checkpoint keeps one ``config.yaml`` for both stages). Weights stored in float16 are
    loaded as float32."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = Path(ckpt)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such checkpoint folder")
    for need in ("stage1.yaml",) * (cfg is None) + ("tokenizer", "lm", "adapter", "qformer.safetensors"):
        if not (d / need).exists():
            raise CheckpointError(f"{d}: missing stage-1 component {need}")
    if cfg is None:
        cfg = OmegaConf.load(d / "stage1.yaml")
    try:
        tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
        llm = AutoModelForCausalLM.from_pretrained(str(d / "lm")).float()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{d}: stage-1 language model or tokenizer unreadable ({e})") from e
    try:
        llm = PeftModel.from_pretrained(llm, str(d / "adapter"))
    except Exception as e:  # noqa: BLE001 - peft raises many kinds
        raise CheckpointError(f"{d / 'adapter'}: LoRA adapter does not match the language model ({e})") from e
    model = build_model(cfg, tok, llm, text_dim)
    state = load_file(str(d / "qformer.safetensors"))
    try:
        model.qformer.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("qformer.")})
        model.align.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("align.")})
        model.aux.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("aux.")})
    except RuntimeError as e:
        raise CheckpointError(f"{d / 'qformer.safetensors'}: component qformer does not match the config ({e})") from e
    model.logit_scale.data.copy_(state["logit_scale"])
    return model.float().eval(), cfg


def save_lm(tok, llm, out: Path) -> None:
    """``tokenizer/`` (unless ``tok`` is None) and ``lm/``: the frozen LM alone (a peft model is saved without its
    LoRA layers)."""
    if tok is not None:
        with atomic_dir(out / "tokenizer") as tmp:
            tok.save_pretrained(str(tmp))
    from peft import PeftModel

    with atomic_dir(out / "lm") as tmp:
        (_plain_llm(llm) if isinstance(llm, PeftModel) else llm).save_pretrained(str(tmp))


def _plain_llm(peft_model):
    """The frozen language model without the LoRA layers peft wrapped into it (for saving the LM alone)."""
    from transformers import AutoModelForCausalLM

    base = peft_model.get_base_model()
    state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
    plain = AutoModelForCausalLM.from_config(base.config)
    plain.load_state_dict(state, strict=False)
    missing = set(plain.state_dict()) - set(state)
    if missing - {k for k in missing if "rotary" in k or k == "lm_head.weight"}:
        raise CheckpointError(f"could not separate the language model from its adapter (missing {sorted(missing)[:3]})")
    return plain


def train_stage1(cfg: DictConfig, data: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
                 progress: bool = True, limit: int | None = None, extra_data: tuple = (),
                 exclude_speakers: tuple = ()) -> dict[str, Any]:
    """Train stage 1 on ``data`` (with motion or not) plus ``extra_data`` (e.g. labelled real speech imported with
    ``avitalk data ravdess`` without fits); ``exclude_speakers`` are left out of training (leave-actors-out folds).
    With ``stage1.train.augment_copies`` > 0, that many augmented copies of every training clip (noise, reverb, band
    limits, gain, codec) are encoded once and cached; a batch takes one with probability ``augment_p``; a batch
    holds ``real_fraction`` clips of the extra data."""
    from accelerate import Accelerator
    from tqdm import tqdm

    from avitalk.data.manifest import read_manifest
    from avitalk.encoders import audio_encoder_from_config
    from avitalk.encoders.cache import cache_augmented_features, cache_dataset_features
    from avitalk.encoders.prosody import ProsodyEncoder
    from avitalk.encoders.text import text_encoder_from_config

    from .lm_pretrain import pretrain_lm, tiny_llama, train_tokenizer

    data, out = Path(data), Path(out)
    extra_data = tuple(Path(d) for d in extra_data)
    read_manifest(data, "train")
    for d in extra_data:
        read_manifest(d, "train")
    out.mkdir(parents=True, exist_ok=True)
    s1 = cfg.stage1
    torch.manual_seed(int(cfg.seed))
    rng = np.random.default_rng(int(cfg.seed))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    enc = audio_encoder_from_config(cfg.audio_encoder)
    OmegaConf.set_struct(cfg, False)
    cfg.audio_dim = int(enc.dim)
    tc = s1.train
    copies = int(tc.get("augment_copies", 0))
    sources = []
    for d in (data, *extra_data):
        cache = cache_dataset_features(d, enc, progress=progress)
        pcache = cache_dataset_features(d, ProsodyEncoder(), progress=progress) if prosody_dim(cfg) else None
        acache = cache_augmented_features(d, enc, copies, seed=int(cfg.seed), progress=progress) if copies else None
        sources.append((d, cache, pcache, acache, copies, tuple(exclude_speakers)))
    train = FeatureBank(split="train", limit=limit, sources=sources, dtype=np.float16)
    real_fraction = float(tc.get("real_fraction", 0.5)) if extra_data else 0.0
    augment_p = float(tc.get("augment_p", 0.5)) if copies else 0.0
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
            tok = train_tokenizer(corpus, int(s1.tiny_lm.vocab_size))
            llm = tiny_llama(tok, **{k: v for k, v in OmegaConf.to_container(s1.tiny_lm).items() if k not in ("vocab_size", "steps", "batch_size", "lr")})
            history["lm"] = pretrain_lm(llm, tok, [x for ts in texts for x in ts], int(s1.tiny_lm.steps),
                                        int(s1.tiny_lm.batch_size), float(s1.tiny_lm.lr), int(cfg.seed), progress)
            save_lm(tok, llm, out)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(s1.llm))
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if tok.bos_token_id is None:
            tok.bos_token = tok.eos_token
        llm = AutoModelForCausalLM.from_pretrained(str(s1.llm))
        save_lm(tok, llm, out)
    timings["lm_s"] = time.perf_counter() - t

    # ---- (2) Q-Former + projection + LoRA
    te = text_encoder_from_config(cfg.stage2.text_encoder)
    model = build_model(cfg, tok, llm, te.dim)
    flat = sorted({x for ts in texts for x in ts})
    emb = dict(zip(flat, torch.as_tensor(te.encode(flat))))
    acc = Accelerator(cpu=not torch.cuda.is_available(),
                      mixed_precision=str(tc.get("mixed_precision", "bf16")) if torch.cuda.is_available() else "no")
    dev = acc.device
    model.to(dev)
    emb = {k: v.to(dev) for k, v in emb.items()}
    every = int(tc.get("checkpoint_every", 200))
    prompts = load_prompts()
    vocab = load_vocabulary()
    spans = [[vocab.emotion_spans(x) for x in ts] for ts in texts]
    model.train()

    def run_phase(name: str, n_steps: int, params: list, opt, sched, step_fn) -> None:
        start = _resume_phase(out, name, model, opt, sched, rng, history) if resume else 0
        bar = tqdm(range(start, n_steps), initial=start, total=n_steps, desc=f"stage1 {name}",
                   disable=not progress or None)
        for step in bar:
            with acc.autocast():
                losses = step_fn()
            opt.zero_grad(set_to_none=True)
            acc.backward(losses["loss"])
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if step % 20 == 0 or step == n_steps - 1:
                history.setdefault(name, []).append({"step": step, **{k: float(v.detach()) for k, v in losses.items()}})
            if (step + 1) % every == 0 or step + 1 == n_steps:
                _save_phase(out, name, step + 1, model, opt, sched, rng, history)

    # (2a) Q-Former warm-up without the LLM: queries that already separate emotions and intensities (classification)
    # and match the instruction's sentence embedding (contrastive) give the LoRA stage something to read.
    t = time.perf_counter()
    warm = int(tc.get("qformer_warmup_steps", 0))
    if warm:
        qparams = [*model.qformer.parameters(), *model.align.parameters(), *model.aux.parameters(), model.logit_scale]
        qopt = torch.optim.AdamW(qparams, lr=float(tc.get("qformer_warmup_lr", 2e-3)), weight_decay=0.01)
        qsched = torch.optim.lr_scheduler.LambdaLR(qopt, lambda s: 1.0)
        crop = tc.get("qformer_warmup_crop")

        def warm_step() -> dict[str, torch.Tensor]:
            idx = train.sample(int(tc.get("qformer_warmup_batch_size", 32)), rng, real_fraction)
            f, m = train.batch(idx, int(crop) if crop else None, rng, augment_p)
            k = [int(rng.integers(len(texts[i]))) for i in idx]
            emo, inten = train.labels(idx)
            _, q = model.qformer(f.to(dev), m.to(dev))
            ls = model.speech_losses(q.mean(1).float(), torch.stack([emb[texts[i][j]] for i, j in zip(idx, k)]),
                                     emo.to(dev), inten.to(dev))
            ls["loss"] = ls.get("aux", 0.0) + ls["contrastive"]
            return ls

        run_phase("qformer_warmup", warm, qparams, qopt, qsched, warm_step)
        timings["qformer_warmup_s"] = time.perf_counter() - t
        t = time.perf_counter()

    # (2b) Q-Former + projection + LoRA on the instruction text
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(tc.lr), weight_decay=0.01)
    steps = int(tc.steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))

    def adapter_step() -> dict[str, torch.Tensor]:
        idx = train.sample(int(tc.batch_size), rng, real_fraction)
        f, m = train.batch(idx, None, rng, augment_p)
        k = [int(rng.integers(len(texts[i]))) for i in idx]
        tx = [texts[i][j] for i, j in zip(idx, k)]
        pr = [prompts[int(rng.integers(len(prompts)))] for _ in idx]
        emo, inten = train.labels(idx)
        return model(f.to(dev), m.to(dev), tx, torch.stack([emb[x] for x in tx]), pr,
                     contrastive_weight=float(tc.contrastive_weight), emotion=emo.to(dev), intensity=inten.to(dev),
                     aux_weight=float(tc.get("aux_weight", 0.0)), keyword_spans=[spans[i][j] for i, j in zip(idx, k)],
                     keyword_weight=float(tc.get("keyword_weight", 1.0)))

    run_phase("adapter", steps, params, opt, sched, adapter_step)
    model.eval().cpu()
    timings["adapter_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    save_stage1(model, out, cfg)
    atomic_write_json(out / "history.json", history)
    from avitalk.plots import plot_history

    plot_history(history, out / "loss_curves.png")
    atomic_write_json(out / "train_info.json", {
        "timings": timings, "train_clips": len(train.clips), "real_train_clips": int(train.real.sum()),
        "data": [str(d) for d in (data, *extra_data)], "excluded_speakers": sorted(exclude_speakers),
        "augment_copies": copies})
    return {"model": model, "timings": timings, "history": history}


def _save_phase(out: Path, phase: str, step: int, model, opt, sched, rng: np.random.Generator, history: dict) -> None:
    """Trainable weights (safetensors) + optimizer / schedule / random state (torch, tensors only), atomically."""
    from safetensors.torch import save_file

    d = out / "train_state"
    d.mkdir(parents=True, exist_ok=True)
    weights = {n: p.detach().float().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    with atomic_path(d / f"{phase}.safetensors") as tmp:
        save_file(weights, str(tmp))
    state = {"phase": phase, "step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "torch_rng": torch.get_rng_state(), "numpy_rng": json.dumps(rng.bit_generator.state)}
    with atomic_path(d / f"{phase}.pt") as tmp:
        torch.save(state, tmp)
    atomic_write_json(out / "history.json", history)


def _resume_phase(out: Path, phase: str, model, opt, sched, rng: np.random.Generator, history: dict) -> int:
    """Restore a phase's last saved state; the step to continue from (0 when there is none)."""
    from safetensors.torch import load_file

    d = out / "train_state"
    if not (d / f"{phase}.pt").is_file() or not (d / f"{phase}.safetensors").is_file():
        return 0
    try:
        st = torch.load(d / f"{phase}.pt", map_location="cpu", weights_only=True)
        weights = load_file(str(d / f"{phase}.safetensors"))
    except Exception as e:  # noqa: BLE001 - any unreadable state
        raise CheckpointError(f"{d / phase}: cannot resume from it ({e})") from e
    own = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != own:
        raise CheckpointError(f"{d / phase}.safetensors: saved weights do not match the configured model "
                              f"({len(set(weights) ^ own)} names differ); train into a new folder")
    model.load_state_dict(weights, strict=False)
    opt.load_state_dict(st["optimizer"])
    sched.load_state_dict(st["scheduler"])
    torch.set_rng_state(st["torch_rng"])
    rng.bit_generator.state = json.loads(st["numpy_rng"])
    history[phase] = [h for h in history.get(phase, []) if h["step"] < int(st["step"])]
    return int(st["step"])


# ------------------------------------------------------------------------------------------------ metrics
def evaluate_stage1(ckpt: str | os.PathLike, data: str | os.PathLike, split: str = "test",
                    limit: int | None = None) -> dict[str, Any]:
    from avitalk.data.dataset import FeatureCache
    from avitalk.encoders import audio_encoder_from_config

    model = Instructor.load(ckpt)
    cfg = model.cfg
    data = Path(data)
    enc = audio_encoder_from_config(cfg.audio_encoder)
    cache = FeatureCache(data / "features", enc.key)
    pcache = None
    if prosody_dim(cfg):
        from avitalk.encoders.cache import cache_dataset_features
        from avitalk.encoders.prosody import ProsodyEncoder

        pcache = cache_dataset_features(data, ProsodyEncoder(), progress=False)
    bank = FeatureBank(data, split, cache, limit, pcache)

    def run(use_speech: bool) -> tuple[list[str], float]:
        outs = []
        t = time.perf_counter()
        for s in range(0, len(bank.clips), 16):
            idx = list(range(s, min(s + 16, len(bank.clips))))
            f, m = bank.batch(idx)
            outs += [o[0] for o in model.generate(f, m, use_speech=use_speech)]
        return outs, time.perf_counter() - t

    gen, t_gen = run(True)
    abl, _ = run(False)

    def scores(outs: list[str]) -> dict[str, float]:
        return instruction_scores(outs, [list(c.instructions) for c in bank.clips],
                                  [c.emotion for c in bank.clips], [c.intensity for c in bank.clips])

    # speed: instruct 5 s of speech (encoder excluded): generation time and tokens/s
    f5, m5 = bank.batch([int(np.argmin([abs(len(x) - 250) for x in bank.feats]))])
    model.generate(f5, m5)
    t = time.perf_counter()
    out = model.generate(f5, m5)[0][0]
    dt = time.perf_counter() - t
    ntok = len(model.token_ids(out)) + 1
    return {
        "split": split,
        "clips": len(bank.clips),
        "with_speech": scores(gen),
        "ablation_speech_tokens_removed": scores(abl),
        "chance_emotion": 1 / len(EMOTIONS),
        "examples": [{"id": c.id, "reference": c.instructions[0], "generated": g} for c, g in list(zip(bank.clips, gen))[:8]],
        "speed": {"instruct_5s_s": dt, "tokens_per_s": ntok / dt, "eval_generation_s": t_gen},
    }
