"""What both stages' training loops share, correct on one process or many (``accelerate launch`` / ``torchrun``):

* :func:`step_rng`: every process draws its own batches, and a resumed run draws exactly what the uninterrupted run
  would: the batch generator (and torch's, for noise and dropout) is seeded from (seed, process, phase, step).
* :func:`warmup_cosine`: the learning-rate schedule (linear warm-up, cosine decay); :func:`crop_start`: random
  windows of clips.
* :func:`accelerator`: one Accelerator per run (DDP that may tolerate parameters a phase does not use).
* :func:`ranks_log`: what every process trained on at a logged step, gathered on the main process (for the history).
* :func:`save_phase` / :func:`load_phase`: one resume layout for both stages: ``OUT/train_state/<phase>.safetensors``
  (the phase's trainable weights) and ``<phase>.pt`` (step, optimizer, schedule: tensors only, read with
  ``weights_only=True``), written atomically by the main process.
* :func:`maybe_stop`: ``AVITALK_TRAIN_STOP_AT=phase:step`` stops every process right after the checkpoint of that
  step is written (exit code 75): how the tests interrupt a multi-process run to check that ``--resume`` continues it
  exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def step_rng(seed: int, rank: int, phase: int, step: int) -> np.random.Generator:
    """The generator for one training step of one process; also seeds torch's global generator the same way."""
    import torch

    ss = np.random.SeedSequence([int(seed), int(rank), int(phase), int(step)])
    torch.manual_seed(int(ss.generate_state(1, np.uint64)[0] % (2**63 - 1)))
    return np.random.default_rng(ss)


def warmup_cosine(warmup: int, total: int, decay_from_start: bool = False):
    """LambdaLR factor: linear warm-up over ``warmup`` steps, then a cosine decay to 0 at ``total``
    (``decay_from_start``: the cosine runs over all ``total`` steps, multiplied by the warm-up ramp: stage 1's LMs)."""
    def f(step: int) -> float:
        if decay_from_start:
            return min(1.0, (step + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total))))
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    return f


def crop_start(n: int, length: int, rng: np.random.Generator) -> int:
    """A uniformly random start for a window of ``length`` frames in ``n`` (0, drawing nothing, when it all fits)."""
    return int(rng.integers(0, n - length + 1)) if n > length else 0


def accelerator(mixed_precision: str = "bf16", find_unused_parameters: bool = False):
    """``find_unused_parameters``: for a model whose phases train only some of its parameters (stage 1's warm-up)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    gpu = torch.cuda.is_available()
    return Accelerator(cpu=not gpu, mixed_precision=mixed_precision if gpu else "no",
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)])


def ranks_log(acc, items: Any) -> list:
    """``items`` of every process, in process order (on every process; a list of one item on a single process)."""
    if acc.num_processes == 1:
        return [items]
    from accelerate.utils import gather_object

    return gather_object([items])


def maybe_stop(acc, phase: str, step: int) -> None:
    """Stop all processes after the checkpoint of ``phase`` at ``step`` when ``AVITALK_TRAIN_STOP_AT`` says so."""
    import os

    want = os.environ.get("AVITALK_TRAIN_STOP_AT", "")
    if want and want == f"{phase}:{step}":
        acc.wait_for_everyone()
        raise SystemExit(75)


def save_phase(out, phase: str, step: int, weights: dict, opt, sched, history: dict) -> None:
    """The state a phase resumes from (see the module docstring), plus the history so far."""
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from .io import atomic_path, atomic_write_json

    d = Path(out) / "train_state"
    d.mkdir(parents=True, exist_ok=True)
    with atomic_path(d / f"{phase}.safetensors") as tmp:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in weights.items()}, str(tmp))
    with atomic_path(d / f"{phase}.pt") as tmp:
        torch.save({"phase": phase, "step": int(step), "optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                   tmp)
    atomic_write_json(Path(out) / "history.json", history)


def load_phase(out, phase: str):
    """``(step, weights, state)`` of a phase's last save, or None when there is none; a damaged state is a
    CheckpointError."""
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from .errors import CheckpointError

    d = Path(out) / "train_state"
    if not (d / f"{phase}.pt").is_file() or not (d / f"{phase}.safetensors").is_file():
        return None
    try:
        st = torch.load(d / f"{phase}.pt", map_location="cpu", weights_only=True)
        weights = load_file(str(d / f"{phase}.safetensors"))
    except Exception as e:  # noqa: BLE001 - any unreadable state
        raise CheckpointError(f"{d / phase}: cannot resume from it ({e})") from e
    return int(st["step"]), weights, st
