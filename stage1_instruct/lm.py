"""Stage 1's language model: one interface, two implementations.

* :class:`LeanLM`: a Llama-family LM with its LoRA adapter on :class:`avitalk.lean.llama.LlamaLite` (plain torch, no
  transformers or peft import): what inference uses whenever the checkpoint allows it.
* :class:`PeftLM`: any transformers causal LM with a peft LoRA adapter, inside the trainable
  :class:`~.model.InstructionModel`: training, beam search, and LMs the lean runtime does not run.

Each owns its load, save and generate. Both write the same folder: ``tokenizer/``, ``lm/`` (the frozen LM alone,
safetensors) and ``adapter/`` (peft format); both write the same greedy text (tests/test_lean.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from avitalk.errors import CheckpointError
from avitalk.io import atomic_dir, atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text

LM_PARTS = ("tokenizer", "lm", "adapter")


class LanguageModel:
    """What the Instructor needs of an LM: ``model`` (the torch module), ``tokenizer``, the input embeddings, text
    generation from prefix embeddings (with an optional :class:`~.vote.EmotionVote` applied at each step), saving, and
    its parameter counts."""

    model: torch.nn.Module
    tokenizer: object

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size")
                   else self.model.config["hidden_size"])

    def embeddings(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    def to(self, device, dtype: torch.dtype | None = None) -> None:
        self.model.to(device) if dtype is None else self.model.to(device, dtype)

    def generate(self, prefix: torch.Tensor, mask: torch.Tensor, vote=None, *, max_new_tokens: int, do_sample: bool,
                 temperature: float, top_p: float, num_samples: int, num_beams: int) -> list[str]:
        raise NotImplementedError

    def save(self, out: Path) -> None:
        raise NotImplementedError

    def sizes(self) -> dict[str, int]:
        """``{"llm": frozen LM parameters, "lora": adapter parameters}``."""
        raise NotImplementedError


class LeanLM(LanguageModel):
    def __init__(self, model, tokenizer, adapter_config: dict, tokenizer_files: dict[str, bytes]):
        self.model, self.tokenizer = model, tokenizer
        self._adapter_config, self._tokenizer_files = adapter_config, tokenizer_files

    @classmethod
    def load(cls, d: Path, chat_template: bool) -> "LeanLM":
        """From a stage-1 folder; raises :class:`avitalk.lean.llama.UnsupportedModel` (or OSError / ValueError /
        KeyError) where the lean runtime cannot run this LM."""
        from avitalk.lean.llama import LlamaLite, UnsupportedModel
        from avitalk.lean.tokenizer import LeanTokenizer

        lm = LlamaLite.from_pretrained(d / "lm", d / "adapter")
        tok = LeanTokenizer(d / "tokenizer")
        if chat_template or tok.bos_token_id is None:
            raise UnsupportedModel("chat template or no BOS token")
        files = {p.name: p.read_bytes() for p in (d / "tokenizer").iterdir() if p.is_file()}
        return cls(lm, tok, json.loads((d / "adapter" / "adapter_config.json").read_text()), files)

    def generate(self, prefix, mask, vote=None, *, max_new_tokens, do_sample, temperature, top_p, num_samples,
                 num_beams):
        if num_beams != 1:
            raise ValueError("beam search needs the transformers LM (Instructor.load(..., lean=False))")
        tok = self.tokenizer
        out = self.model.generate(prefix, mask, max_new_tokens, tok.eos_token_id, tok.pad_token_id, do_sample,
                                  temperature, top_p, num_samples, logit_bias=vote)
        return [tok.decode(row.tolist()) for row in out]

    def save(self, out: Path) -> None:
        from safetensors.torch import save_file

        with atomic_dir(out / "tokenizer") as tmp:
            for name, data in self._tokenizer_files.items():
                atomic_write_bytes(tmp / name, data)
        lm_state, lora = {}, {}
        for k, v in self.model.state_dict().items():
            if k != "lm_head.weight" or not self.model.c["tie_word_embeddings"]:
                lm_state[k.replace(".base.", ".")] = v.detach().contiguous().cpu()
        for name, mod in self.model.named_modules():
            if getattr(mod, "lora_A", None) is not None:
                lora[f"base_model.model.{name}.lora_A.weight"] = mod.lora_A.detach().contiguous().cpu()
                lora[f"base_model.model.{name}.lora_B.weight"] = mod.lora_B.detach().contiguous().cpu()
        with atomic_dir(out / "lm") as tmp:
            save_file(lm_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            atomic_write_json(tmp / "config.json", self.model.config)
        with atomic_dir(out / "adapter") as tmp:
            save_file(lora, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
            atomic_write_json(tmp / "adapter_config.json", self._adapter_config)

    def sizes(self) -> dict[str, int]:
        m = self.model
        lora = sum(x.lora_A.numel() + x.lora_B.numel() for x in m.modules() if getattr(x, "lora_A", None) is not None)
        tied = m.lm_head.weight.numel() if m.c["tie_word_embeddings"] else 0
        return {"llm": sum(p.numel() for p in m.parameters()) - tied, "lora": lora}


class PeftLM(LanguageModel):
    """The transformers + peft LM of a trainable InstructionModel (``model.llm``, ``model.tokenizer``)."""

    def __init__(self, instruction_model):
        self.model, self.tokenizer = instruction_model.llm, instruction_model.tokenizer

    def generate(self, prefix, mask, vote=None, *, max_new_tokens, do_sample, temperature, top_p, num_samples,
                 num_beams):
        tok = self.tokenizer
        extra = {}
        if vote is not None:
            from transformers import LogitsProcessorList

            from .vote import TransformersVote

            extra["logits_processor"] = LogitsProcessorList([TransformersVote(vote)])
        out = self.model.generate(
            inputs_embeds=prefix, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
            temperature=temperature if do_sample else None, top_p=top_p if do_sample else None, num_beams=num_beams,
            num_return_sequences=num_samples, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            bos_token_id=tok.bos_token_id, **extra)
        return tok.batch_decode(out, skip_special_tokens=True)

    def save(self, out: Path) -> None:
        with atomic_dir(out / "tokenizer") as tmp:
            self.tokenizer.save_pretrained(str(tmp))
        with atomic_dir(out / "adapter") as tmp:
            self.model.save_pretrained(str(tmp))  # the LoRA weights only (peft format)
        save_lm(None, self.model, out)

    def sizes(self) -> dict[str, int]:
        return {"llm": sum(p.numel() for n, p in self.model.get_base_model().named_parameters() if "lora_" not in n),
                "lora": sum(p.numel() for n, p in self.model.named_parameters() if "lora_" in n)}


# ------------------------------------------------------------------- the transformers + peft checkpoint (training)
def save_stage1(model, out: Path, cfg: DictConfig) -> None:
    """A trained InstructionModel's folder: ``tokenizer/``, ``adapter/``, ``qformer.safetensors`` (Q-Former and the
    training heads) and ``stage1.yaml`` (``lm/`` is written once, when the frozen LM is made: :func:`save_lm`)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out / "tokenizer") as tmp:
        model.tokenizer.save_pretrained(str(tmp))
    with atomic_dir(out / "adapter") as tmp:
        model.llm.save_pretrained(str(tmp))
    with atomic_path(out / "qformer.safetensors") as tmp:
        save_file({k: v.contiguous().cpu() for k, v in model_heads(model, with_qformer=True).items()}, str(tmp))
    atomic_write_text(out / "stage1.yaml", OmegaConf.to_yaml(cfg))


def model_heads(model, with_qformer: bool = False) -> dict[str, torch.Tensor]:
    """An InstructionModel's Q-Former (optionally) and training heads as ``qformer.*``, ``align.*``, ``aux.*``,
    ``logit_scale``: the tensors of ``qformer.safetensors``."""
    state = {f"qformer.{k}": v for k, v in model.qformer.state_dict().items()} if with_qformer else {}
    state.update({f"align.{k}": v for k, v in model.align.state_dict().items()})
    state.update({f"aux.{k}": v for k, v in model.aux.state_dict().items()})
    state["logit_scale"] = model.logit_scale.detach()
    return {k: v.detach() for k, v in state.items()}


def open_stage1(ckpt: str | os.PathLike, cfg: DictConfig | None = None) -> tuple[Path, DictConfig]:
    """A stage-1 folder checked for its parts (a CheckpointError naming the first missing one) and its config:
    ``cfg`` when given (a pipeline checkpoint keeps one ``config.yaml`` for both stages), else its ``stage1.yaml``."""
    d = Path(ckpt)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such checkpoint folder")
    for need in ("stage1.yaml",) * (cfg is None) + LM_PARTS + ("qformer.safetensors",):
        if not (d / need).exists():
            raise CheckpointError(f"{d}: missing stage-1 component {need}")
    return d, OmegaConf.load(d / "stage1.yaml") if cfg is None else cfg


def load_stage1(ckpt: str | os.PathLike, text_dim: int | None = None, cfg: DictConfig | None = None):
    """Rebuild the trainable instruction model from a checkpoint folder (never unpickles). ``cfg`` replaces the
    folder's ``stage1.yaml`` (a pipeline checkpoint keeps one ``config.yaml`` for both stages); ``text_dim``: the
    alignment head's width (read from the weights when not given). Weights stored in float16 load as float32."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .model import build_model

    d, cfg = open_stage1(ckpt, cfg)
    try:
        tok = AutoTokenizer.from_pretrained(str(d / "tokenizer"))
        llm = AutoModelForCausalLM.from_pretrained(str(d / "lm")).float()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{d}: stage-1 language model or tokenizer unreadable ({e})") from e
    try:
        llm = PeftModel.from_pretrained(llm, str(d / "adapter"))
    except Exception as e:  # noqa: BLE001 - peft raises many kinds
        raise CheckpointError(f"{d / 'adapter'}: LoRA adapter does not match the language model ({e})") from e
    state = load_file(str(d / "qformer.safetensors"))
    if text_dim is None and "align.weight" in state:
        text_dim = int(state["align.weight"].shape[0])
    model = build_model(cfg, tok, llm, text_dim)
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
