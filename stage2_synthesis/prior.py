"""DiffusionPrior: instruction embedding -> style z, by denoising diffusion.

A small transformer denoises z (split into a few tokens) given a text token and a timestep token, predicting the
clean sample x0. Trained with diffusers' DDPMScheduler (100 steps), the condition dropped 20% of the time for
classifier-free guidance, plus a contrastive (InfoNCE) loss that aligns a projection of the text embedding with
the style of the same clip. Sampled with DDIM or DPM-Solver++(2M) (:mod:`.samplers`, the same steps as diffusers' schedulers); different seeds give different styles. A deterministic
text -> z mapper is trained alongside as the "no prior" baseline.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from avitalk.dropout import cheap_dropouts

from .layers import sinusoidal
from .style_encoder import normalize_style


class DiffusionPrior(nn.Module):
    def __init__(self, *, text_dim: int, style_dim: int, d_model: int, layers: int, heads: int, n_tokens: int,
                 timesteps: int, cond_drop: float, dropout: float, snr_gamma: float):
        super().__init__()
        if style_dim % n_tokens:
            raise ValueError("style_dim must be divisible by n_tokens")
        self.style_dim, self.text_dim, self.n_tokens = style_dim, text_dim, n_tokens
        self.timesteps, self.cond_drop, self.snr_gamma = int(timesteps), float(cond_drop), float(snr_gamma)
        self.text_in = nn.Sequential(nn.Linear(text_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.null_text = nn.Parameter(torch.zeros(text_dim))
        self.time_mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        self.z_in = nn.Linear(style_dim // n_tokens, d_model)
        self.pos = nn.Parameter(torch.randn(n_tokens + 2, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.body = cheap_dropouts(nn.TransformerEncoder(layer, layers, enable_nested_tensor=False))
        self.norm = nn.LayerNorm(d_model)
        self.z_out = nn.Linear(d_model, style_dim // n_tokens)
        # alignment heads (contrastive) and the deterministic baseline
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d_model), nn.GELU(), nn.Linear(d_model, style_dim))
        self.style_proj = nn.Linear(style_dim, style_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.mapper = nn.Sequential(nn.Linear(text_dim, d_model), nn.GELU(), nn.Linear(d_model, d_model), nn.GELU(),
                                    nn.Linear(d_model, style_dim))

    # ---------------------------------------------------------------- diffusion
    def train_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=self.timesteps, beta_schedule="squaredcos_cap_v2",
                             prediction_type="sample", clip_sample=False)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Predict x0 [B, style_dim] from x_t [B, style_dim], timesteps [B] and text embeddings [B, text_dim]."""
        B = x_t.shape[0]
        d = self.pos.shape[1]
        tt = self.time_mlp(sinusoidal(t.float(), d))
        tokens = torch.cat([self.text_in(text)[:, None], tt[:, None], self.z_in(x_t.view(B, self.n_tokens, -1))], 1)
        h = self.body(tokens + self.pos)
        return self.z_out(self.norm(h[:, 2:])).reshape(B, self.style_dim)

    def forward(self, z: torch.Tensor, text: torch.Tensor, scheduler=None, **kwargs) -> dict[str, torch.Tensor]:
        """The training losses (what a DDP-wrapped prior computes when called)."""
        return self.losses(z, text, scheduler, **kwargs)

    def losses(self, z: torch.Tensor, text: torch.Tensor, scheduler=None, generator: torch.Generator | None = None,
               *, contrastive_weight: float, mapper_weight: float) -> dict[str, torch.Tensor]:
        sched = scheduler or self.train_scheduler()
        B = z.shape[0]
        dev = z.device
        noise = torch.randn(z.shape, generator=generator, device=dev)
        t = torch.randint(0, self.timesteps, (B,), generator=generator, device=dev)
        x_t = sched.add_noise(z, noise, t)
        drop = torch.rand(B, generator=generator, device=dev) < self.cond_drop
        cond = torch.where(drop[:, None], self.null_text.expand(B, -1), text)
        # Min-SNR weighting (gamma 5) of the x0 error: plain x0-MSE is dominated by high-noise steps, where only
        # the conditional mean can be predicted, and the model learns to ignore x_t (samples collapse to the mean)
        abar = sched.alphas_cumprod.to(dev)[t]
        w = torch.clamp(abar / (1 - abar), max=self.snr_gamma) if self.snr_gamma else torch.ones_like(abar)
        diff = ((self.denoise(x_t, t, cond) - z) ** 2).mean(-1).mul(w).sum() / w.sum()
        # InfoNCE between each clip's text and its style (both directions)
        a = nn.functional.normalize(self.text_proj(text), dim=-1)
        b = nn.functional.normalize(self.style_proj(z), dim=-1)
        logits = self.logit_scale.exp().clamp(max=100) * a @ b.T
        target = torch.arange(B, device=dev)
        con = 0.5 * (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target))
        mapped = nn.functional.mse_loss(self.mapper(text), z)
        total = diff + contrastive_weight * con + mapper_weight * mapped
        return {"loss": total, "diffusion": diff, "contrastive": con, "mapper": mapped}

    @torch.no_grad()
    def sample(self, text: torch.Tensor, num_samples: int, *, steps: int, guidance_scale: float, sampler: str,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Styles [B, num_samples, style_dim] for text embeddings [B, text_dim] (classifier-free guidance; ``sampler``
        ``ddim`` or ``dpmpp2m``, see :mod:`.samplers`; ``steps`` network calls, each on a doubled batch when guided).
        ``noise`` [B * num_samples, style_dim]: the starting noise (drawn from ``generator`` when not given); both
        samplers are deterministic from there, so rows seeded one by one can be sampled together."""
        from .samplers import cosine_alphas_cumprod, sample

        n = max(1, min(int(steps), self.timesteps))
        if not hasattr(self, "_abar"):
            self._abar = cosine_alphas_cumprod(self.timesteps)
        B = text.shape[0]
        cond = text.repeat_interleave(num_samples, 0)
        null = self.null_text.expand_as(cond)
        gdev = generator.device if generator is not None else text.device  # a CPU generator serves any device
        if noise is None:
            x = torch.randn((B * num_samples, self.style_dim), generator=generator, device=gdev).to(text.device)
        else:
            x = noise.to(text.device, text.dtype)
            if x.shape != (B * num_samples, self.style_dim):
                raise ValueError(f"noise must be [{B * num_samples}, {self.style_dim}], got {list(x.shape)}")

        def denoise(x_t: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((x_t.shape[0],), t, device=text.device)
            if guidance_scale == 1.0:
                return self.denoise(x_t, tt, cond)
            c, u = self.denoise(torch.cat([x_t, x_t]), torch.cat([tt, tt]), torch.cat([cond, null])).chunk(2)
            return u + guidance_scale * (c - u)

        x = sample(denoise, x, self._abar.to(text.device), n, sampler)
        return normalize_style(x).view(B, num_samples, self.style_dim)

    @torch.no_grad()
    def map(self, text: torch.Tensor) -> torch.Tensor:
        """The deterministic baseline: one style per text, no diffusion."""
        return normalize_style(self.mapper(text))
