"""DDIM sampling for the prior, in plain torch (Song et al. 2021, deterministic with eta = 0).

The schedule is the one the prior trains with (diffusers' ``DDPMScheduler``, ``squaredcos_cap_v2``: the cosine schedule
of Nichol & Dhariwal 2021, betas capped at 0.999), and the step is diffusers' ``DDIMScheduler`` with
``prediction_type="sample"``, "leading" timestep spacing and the final alpha set to one; tests check that the samples
are the same. Written out here so sampling (every `avitalk run`) does not import diffusers (about 1.5 s).
"""

from __future__ import annotations

import math

import torch


def cosine_alphas_cumprod(timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Cumulative products of (1 - beta) [timesteps] for the capped cosine schedule (float32)."""
    def abar(t: float) -> float:
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - abar((i + 1) / timesteps) / abar(i / timesteps), max_beta) for i in range(timesteps)],
                         dtype=torch.float32)
    return torch.cumprod(1.0 - betas, 0)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """The ``steps`` timesteps visited, from noisiest to cleanest ("leading" spacing: 0, r, 2r, ... reversed)."""
    ratio = timesteps // steps
    return [k * ratio for k in range(steps)][::-1]


def ddim_step(x0: torch.Tensor, t: int, x_t: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int) -> torch.Tensor:
    """x_{t - T/steps} from x_t and the predicted clean sample ``x0`` (eta = 0)."""
    prev = t - len(alphas_cumprod) // steps
    a_t = alphas_cumprod[t]
    a_prev = alphas_cumprod[prev] if prev >= 0 else torch.tensor(1.0)
    eps = (x_t - a_t ** 0.5 * x0) / (1 - a_t) ** 0.5
    return a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
