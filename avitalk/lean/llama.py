"""A Llama-family causal LM in plain torch for generation (``LlamaForCausalLM`` parameter names: RMSNorm, rotary
positions, grouped-query attention, SwiGLU), with a peft LoRA adapter applied the way peft applies it
(``base(x) + lora_B(lora_A(x)) * alpha / r``), a KV cache, greedy or nucleus sampling.

Two ways to decode, the same tokens: a growing KV cache (``static=False``, the CPU default) and a static one
(``static=True``, the CUDA default): key/value buffers of a fixed length written in place, so that one decoding step
has fixed shapes and, on CUDA, is captured once as a CUDA graph and replayed for every new token (``graph=True``).
A step then costs the GPU's work, not a few hundred Python-issued kernel launches.

Covers ``model_type`` llama and qwen2 (q/k/v biases) with the default rotary embedding; anything else raises
:class:`UnsupportedModel` and the caller falls back to transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F


class UnsupportedModel(ValueError):
    pass


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class LoRALinear(nn.Module):
    """A frozen linear layer plus a low-rank update (peft's LoRA, unmerged)."""

    def __init__(self, base: nn.Linear):
        super().__init__()
        self.base = base
        self.lora_A: torch.Tensor | None = None
        self.lora_B: torch.Tensor | None = None
        self.scaling = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.lora_A is not None:
            y = y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling
        return y


class _Attention(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        H, hd = c["hidden_size"], c["head_dim"]
        bias = c["attention_bias"]
        self.heads, self.kv_heads, self.head_dim = c["num_attention_heads"], c["num_key_value_heads"], hd
        self.q_proj = LoRALinear(nn.Linear(H, self.heads * hd, bias=bias))
        self.k_proj = LoRALinear(nn.Linear(H, self.kv_heads * hd, bias=bias))
        self.v_proj = LoRALinear(nn.Linear(H, self.kv_heads * hd, bias=bias))
        self.o_proj = LoRALinear(nn.Linear(self.heads * hd, H, bias=c["o_bias"]))

    def forward(self, x, cos, sin, bias, cache):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        if isinstance(cache, _Slot):  # static: written in place at the step's columns, read whole (bias masks)
            cache.k.index_copy_(2, cache.cols, k)
            cache.v.index_copy_(2, cache.cols, v)
            k, v = cache.k, cache.v
        elif cache is not None:
            if cache[0] is not None:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[0], cache[1] = k, v
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        y = F.scaled_dot_product_attention(q, k, v, bias)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class _Slot:
    """One layer's static key/value buffers [B, kv_heads, L, head_dim]; ``cols`` (a tensor) says where a step writes."""

    def __init__(self, B: int, kv: int, L: int, hd: int, dtype: torch.dtype, dev: torch.device):
        self.k = torch.zeros(B, kv, L, hd, dtype=dtype, device=dev)
        self.v = torch.zeros_like(self.k)
        self.cols = torch.zeros(1, dtype=torch.long, device=dev)


class _Workspace:
    """Everything one fixed-shape decoding step reads and writes, kept between calls of the same batch and length
    (so a captured CUDA graph is replayed, not captured again)."""

    def __init__(self, lm: "LlamaLite", B: int, L: int, dtype: torch.dtype, dev: torch.device):
        c = lm.c
        self.slots = [_Slot(B, c["num_key_value_heads"], L, c["head_dim"], dtype, dev) for _ in lm.model.layers]
        self.valid = torch.zeros(B, L, dtype=torch.bool, device=dev)  # columns a query may attend to
        self.tok = torch.zeros(B, dtype=torch.long, device=dev)
        self.pos = torch.zeros(B, dtype=torch.long, device=dev)  # the new token's rotary position
        self.col = torch.zeros(1, dtype=torch.long, device=dev)  # the new token's column
        self.neg = torch.finfo(dtype).min
        self.lm, self.graph, self.logits = lm, None, None

    def step(self) -> torch.Tensor:
        bias = torch.zeros(self.valid.shape, dtype=self.slots[0].k.dtype, device=self.valid.device)
        bias = bias.masked_fill(~self.valid, self.neg)[:, None, None]
        for s in self.slots:
            s.cols = self.col
        return self.lm._step(self.lm.model.embed_tokens(self.tok)[:, None], self.pos[:, None], bias, self.slots)

    def run(self, graph: bool) -> torch.Tensor:
        if not graph:
            return self.step()
        if self.graph is None:  # warm up on a side stream, then capture (PyTorch's recipe for CUDA graphs)
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.step()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = self.step()
        self.graph.replay()
        return self.logits


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, -1)
    return torch.cat([-b, a], -1)


class _MLP(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        H, ff, b = c["hidden_size"], c["intermediate_size"], c["mlp_bias"]
        self.gate_proj = LoRALinear(nn.Linear(H, ff, bias=b))
        self.up_proj = LoRALinear(nn.Linear(H, ff, bias=b))
        self.down_proj = LoRALinear(nn.Linear(ff, H, bias=b))

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _Layer(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.self_attn = _Attention(c)
        self.mlp = _MLP(c)
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])

    def forward(self, x, cos, sin, bias, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, bias, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class _Body(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(_Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


def _arch(cfg: dict) -> dict:
    mt = cfg.get("model_type")
    if mt not in ("llama", "qwen2"):
        raise UnsupportedModel(f"model_type {mt!r}")
    rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UnsupportedModel(f"rope type {rope.get('rope_type', rope.get('type'))!r}")
    if cfg.get("hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"activation {cfg.get('hidden_act')!r}")
    heads = int(cfg["num_attention_heads"])
    return dict(
        vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden_size"]), num_hidden_layers=int(cfg["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads), intermediate_size=int(cfg["intermediate_size"]),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))),
        attention_bias=bool(cfg.get("attention_bias", mt == "qwen2")), o_bias=bool(cfg.get("attention_bias", False)) and mt == "llama",
        mlp_bias=bool(cfg.get("mlp_bias", False)), tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
    )


class LlamaLite(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        self.config = dict(config)  # as read from config.json (written back on save)
        self.c = _arch(config)
        self.model = _Body(self.c)
        self.lm_head = nn.Linear(self.c["hidden_size"], self.c["vocab_size"], bias=False)
        hd = self.c["head_dim"]
        self.register_buffer("inv_freq", 1.0 / self.c["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd),
                             persistent=False)
        self.hidden_size = self.c["hidden_size"]
        self._workspaces: dict = {}

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, lm_dir: str | Path, adapter_dir: str | Path | None = None) -> "LlamaLite":
        """A transformers model folder (``config.json`` + ``model.safetensors``) and optionally a peft LoRA adapter
        folder; float16 weights are loaded as float32."""
        from safetensors.torch import load_file

        lm_dir = Path(lm_dir)
        files = sorted(lm_dir.glob("*.safetensors"))
        if not files:
            raise UnsupportedModel(f"{lm_dir}: no safetensors weights")
        m = cls(json.loads((lm_dir / "config.json").read_text()))
        state = {}
        for f in files:
            state.update(load_file(str(f)))
        own = {k.replace(".base.", "."): k for k in m.state_dict()}
        if m.c["tie_word_embeddings"] or "lm_head.weight" not in state:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        missing = set(own) - set(state)
        if missing:
            raise UnsupportedModel(f"{lm_dir}: weights missing {sorted(missing)[:3]}")
        m.load_state_dict({own[k]: v.float() for k, v in state.items() if k in own}, strict=True)
        if adapter_dir is not None:
            m.load_lora(adapter_dir)
        return m.eval().requires_grad_(False)

    @classmethod
    def from_transformers(cls, model: nn.Module) -> "LlamaLite":
        """The same network as a loaded transformers ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` (no adapter), sharing
        its weight tensors (no copy: device and dtype stay theirs)."""
        cfg = model.config.to_dict()
        with torch.device("meta"):
            m = cls(cfg)
        state = dict(model.state_dict())
        if m.c["tie_word_embeddings"] or "lm_head.weight" not in state:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]
        own = {k.replace(".base.", "."): k for k in m.state_dict()}
        missing = set(own) - set(state)
        if missing:
            raise UnsupportedModel(f"weights missing {sorted(missing)[:3]}")
        m.load_state_dict({own[k]: v for k, v in state.items() if k in own}, strict=True, assign=True)
        w = m.model.embed_tokens.weight
        hd = m.c["head_dim"]
        m.inv_freq = 1.0 / m.c["rope_theta"] ** (torch.arange(0, hd, 2, device=w.device).float() / hd)
        return m.eval().requires_grad_(False)

    def load_lora(self, adapter_dir: str | Path) -> None:
        from safetensors.torch import load_file

        d = Path(adapter_dir)
        ac = json.loads((d / "adapter_config.json").read_text())
        if ac.get("peft_type") != "LORA" or ac.get("use_dora") or ac.get("modules_to_save") or \
                ac.get("bias", "none") != "none" or ac.get("rank_pattern") or ac.get("alpha_pattern") or \
                ac.get("trainable_token_indices"):
            raise UnsupportedModel(f"{d}: adapter features beyond plain LoRA")
        self._workspaces.clear()
        r, alpha = int(ac["r"]), float(ac["lora_alpha"])
        scaling = alpha / (r ** 0.5 if ac.get("use_rslora") else r)
        state = load_file(str(d / "adapter_model.safetensors"))
        modules = dict(self.named_modules())
        seen = set()
        for k, v in state.items():
            name = k.removeprefix("base_model.model.")
            for part in ("lora_A", "lora_B"):
                if f".{part}." in name:
                    mod = name.split(f".{part}.")[0]
                    lin = modules.get(mod)
                    if not isinstance(lin, LoRALinear):
                        raise UnsupportedModel(f"{d}: LoRA on {mod!r}, which this runtime does not adapt")
                    setattr(lin, part, v.float())
                    lin.scaling = scaling
                    seen.add(mod)
                    break
            else:
                raise UnsupportedModel(f"{d}: unexpected adapter tensor {k!r}")
        for mod in seen:
            if modules[mod].lora_A is None or modules[mod].lora_B is None:
                raise UnsupportedModel(f"{d}: {mod} has only one of lora_A / lora_B")

    def to(self, *args, **kwargs):
        super().to(*args, **kwargs)
        self._workspaces.clear()  # captured graphs hold the old tensors
        for mod in self.modules():
            if isinstance(mod, LoRALinear) and mod.lora_A is not None:
                w = mod.base.weight
                mod.lora_A, mod.lora_B = mod.lora_A.to(w.device, w.dtype), mod.lora_B.to(w.device, w.dtype)
        return self

    # ---------------------------------------------------------------- running
    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def _step(self, x: torch.Tensor, pos: torch.Tensor, bias: torch.Tensor, caches: list) -> torch.Tensor:
        f = pos[..., None].float() * self.inv_freq
        emb = torch.cat([f, f], -1)
        cos, sin = emb.cos()[:, None].to(x.dtype), emb.sin()[:, None].to(x.dtype)
        for layer, cache in zip(self.model.layers, caches):
            x = layer(x, cos, sin, bias, cache)
        return self.lm_head(self.model.norm(x[:, -1]))

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int = 64,
                 eos_token_id: int | None = None, pad_token_id: int = 0, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, num_return_sequences: int = 1,
                 static: bool | None = None, graph: bool | None = None,
                 logit_bias: torch.Tensor | None = None) -> torch.Tensor:
        """New token ids [B * num_return_sequences, <= max_new_tokens] after a left-padded embedded prefix (rows
        repeated for several sequences; finished rows padded with ``pad_token_id``). Sampling uses torch's global
        generator (seed it with ``torch.manual_seed``). ``static`` (default: on CUDA) decodes with a static KV cache,
        ``graph`` (default: with ``static`` on CUDA) replays each step as a CUDA graph; the tokens are the same.
        ``logit_bias`` [B, vocab] is added to every step's logits of that row (before sampling or the argmax); or a
        callable with ``repeat_rows(n, device)`` that maps each step's float32 logits [B, vocab] to new ones."""
        x = inputs_embeds.repeat_interleave(num_return_sequences, 0)
        if callable(logit_bias):
            logit_bias = logit_bias.repeat_rows(num_return_sequences, x.device)
        elif logit_bias is not None:
            logit_bias = logit_bias.to(x.device, torch.float32).repeat_interleave(num_return_sequences, 0)
        mask = attention_mask.repeat_interleave(num_return_sequences, 0).long()
        B, P, _ = x.shape
        dev = x.device
        pos = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
        static = dev.type == "cuda" if static is None else bool(static)
        graph = static and dev.type == "cuda" if graph is None else bool(graph)
        if graph and not (static and dev.type == "cuda"):
            raise ValueError("graph=True needs static=True on a CUDA device")
        if static:
            return self._generate_static(x, mask, pos, max_new_tokens, eos_token_id, pad_token_id, do_sample,
                                         temperature, top_p, graph, logit_bias)
        caches = [[None, None] for _ in self.model.layers]
        neg = torch.finfo(x.dtype).min

        def bias_for(m: torch.Tensor, q: int) -> torch.Tensor:  # causal over the last q positions, padding masked
            L = m.shape[1]
            causal = torch.ones(q, L, dtype=torch.bool, device=dev).tril(L - q)
            ok = causal[None] & m[:, None, :].bool()
            return torch.zeros(ok.shape, dtype=x.dtype, device=dev).masked_fill(~ok, neg)[:, None]

        logits = self._step(x, pos, bias_for(mask, P), caches)
        out = []
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        next_pos = pos[:, -1]
        for _ in range(max_new_tokens):
            tok, done = _next_token(logits, logit_bias, done, do_sample, temperature, top_p, pad_token_id, eos_token_id)
            out.append(tok)
            if len(out) == max_new_tokens or bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], 1)
            next_pos = next_pos + 1
            logits = self._step(self.model.embed_tokens(tok)[:, None], next_pos[:, None], bias_for(mask, 1), caches)
        return torch.stack(out, 1)

    def _generate_static(self, x, mask, pos, max_new_tokens, eos_token_id, pad_token_id, do_sample, temperature,
                         top_p, graph, logit_bias=None) -> torch.Tensor:
        B, P, _ = x.shape
        dev = x.device
        L = -(-(P + max_new_tokens) // 64) * 64  # rounded up, so that nearby prefix lengths share one workspace
        key = (B, L, x.dtype, dev)
        ws = self._workspaces.get(key)
        if ws is None:
            if len(self._workspaces) >= 4:  # a few shapes at most (memory): forget the oldest
                self._workspaces.pop(next(iter(self._workspaces)))
            ws = self._workspaces[key] = _Workspace(self, B, L, x.dtype, dev)
        ws.valid.zero_()
        ws.valid[:, :P] = mask.bool()
        cols = torch.arange(P, device=dev)
        for s in ws.slots:
            s.cols = cols
        causal = torch.ones(P, L, dtype=torch.bool, device=dev).tril()  # prefix query i sees columns <= i
        bias = torch.zeros(B, P, L, dtype=x.dtype, device=dev).masked_fill(~(causal[None] & ws.valid[:, None]), ws.neg)
        logits = self._step(x, pos, bias[:, None], ws.slots)
        ws.pos.copy_(pos[:, -1])
        ws.col.fill_(P)
        out = []
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        for _ in range(max_new_tokens):
            tok, done = _next_token(logits, logit_bias, done, do_sample, temperature, top_p, pad_token_id, eos_token_id)
            out.append(tok)
            if len(out) == max_new_tokens or bool(done.all()):
                break
            ws.tok.copy_(tok)
            ws.pos.add_(1)
            ws.valid.index_fill_(1, ws.col, True)
            logits = ws.run(graph)
            ws.col.add_(1)
        return torch.stack(out, 1)


def _next_token(logits, bias, done, do_sample, temperature, top_p, pad_token_id, eos_token_id):
    """The next token of every row (finished rows get ``pad_token_id``) and which rows are finished after it."""
    logits = logits.float()
    tok = _choose(logits if bias is None else bias(logits) if callable(bias) else logits + bias, do_sample, temperature,
                  top_p)
    tok = torch.where(done, torch.full_like(tok, pad_token_id), tok)
    return tok, (done | (tok == eos_token_id)) if eos_token_id is not None else done


def _choose(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    scores = logits / temperature
    if top_p < 1.0:  # nucleus: drop the least likely tokens whose total probability is at most 1 - top_p
        srt, idx = scores.sort(-1)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum <= 1 - top_p
        drop[..., -1:] = False
        scores = scores.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))
    return torch.multinomial(scores.softmax(-1), 1)[:, 0]
