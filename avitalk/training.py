"""The one training loop of both stages, correct on one process or many (``accelerate launch`` / ``torchrun``):

* :class:`Phase` + :func:`run_phase`: a stage describes a phase (its step: batch, forward, losses; its optimizer,
  schedule and modules) and the loop does the rest: seeded batches, backward, gradient clipping, logging, the
  progress bar, checkpoints and their resume. Stage 1 runs two phases (Q-Former warm-up, adapter), stage 2 two
  (lip-sync, prior).
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
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

LOG_EVERY = 20  # a history record every 20 steps (and at the last)


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


def accelerator(mixed_precision: str, find_unused_parameters: bool = False):
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


@dataclass
class Phase:
    """One phase of training: ``steps`` optimizer steps of ``step(rng) -> (losses, clip_ids)``, where ``losses`` holds
    ``"loss"`` (what is minimised) and whatever else the history should record, and ``clip_ids`` names the clips of
    the batch. ``modules``: what a checkpoint of the phase saves and a resume restores (``trainable_only``: only their
    parameters that train, e.g. stage 1's LoRA and Q-Former and not the frozen LLM); ``params``: what the gradient
    norm is clipped over. ``on_checkpoint``: the stage's own files at each checkpoint (main process); ``autocast``: the
    step runs under accelerate's mixed-precision autocast; ``show``: a loss shown beside ``loss`` on the progress
    bar."""

    name: str
    index: int
    steps: int
    step: Callable[[np.random.Generator], tuple[dict, list]]
    params: list
    opt: Any
    sched: Any
    modules: dict
    trainable_only: bool = False
    on_checkpoint: Callable[[], None] | None = None
    autocast: bool = False
    show: str | None = None


def phase_weights(phase: Phase) -> dict:
    """The tensors a checkpoint of ``phase`` saves, named ``<module>.<parameter>``."""
    out = {}
    for name, m in phase.modules.items():
        items = ((k, p) for k, p in m.named_parameters() if p.requires_grad) if phase.trainable_only \
            else m.state_dict().items()
        out.update({f"{name}.{k}": v for k, v in items})
    return out


def resume_phase(out, phase: Phase, history: dict) -> int:
    """Restore a phase's last saved weights, optimizer and schedule, and cut its history there; the step to continue
    from (0 when there is none). Weights that do not match the configured model are a CheckpointError."""
    from .errors import CheckpointError

    got = load_phase(out, phase.name)
    if got is None:
        return 0
    start, weights, st = got
    own = phase_weights(phase)
    if set(weights) != set(own):
        raise CheckpointError(f"{Path(out) / 'train_state' / phase.name}.safetensors: saved weights do not match the "
                              f"configured model ({len(set(weights) ^ set(own))} names differ); train into a new folder")
    for name, m in phase.modules.items():
        m.load_state_dict({k[len(name) + 1 :]: v for k, v in weights.items() if k.startswith(name + ".")},
                          strict=not phase.trainable_only)
    phase.opt.load_state_dict(st["optimizer"])
    phase.sched.load_state_dict(st["scheduler"])
    history[phase.name] = [h for h in history.get(phase.name, []) if h["step"] < start]
    return start


def log_step(history: dict, phase: str, step: int, losses: dict, acc, clips_by_rank: list, bar=None, show=None,
             writer=None) -> None:
    """One history record: the losses averaged over the processes, and what each process trained on (a few clip ids
    per process: they must differ); also on the progress bar and in tensorboard when given."""
    vals = {k: v.detach().float() for k, v in losses.items()}
    if acc.num_processes > 1:
        vals = {k: acc.reduce(v.to(acc.device), "mean") for k, v in vals.items()}
    rec = {"step": step, **{k: float(v) for k, v in vals.items()}, "clips_by_rank": clips_by_rank}
    history.setdefault(phase, []).append(rec)
    if bar is not None:
        bar.set_postfix({k: f"{rec[k]:.3f}" for k in ("loss", show) if k in rec})
    if writer is not None:
        for k, v in rec.items():
            if k not in ("step", "clips_by_rank"):
                writer.add_scalar(f"{phase}/{k}", v, step)


def run_phase(acc, phase: Phase, out, history: dict, seed: int, every: int, resume: bool = False,
              progress: bool = True, writer=None, desc: str = "") -> None:
    """Train ``phase`` to its last step: each step draws this process's own batch from :func:`step_rng` (the same
    after a resume), backward through accelerate, clips the gradient norm at 1, steps optimizer and schedule; a
    history record every :data:`LOG_EVERY` steps; a checkpoint (:func:`save_phase`, after ``on_checkpoint``) every
    ``every`` steps and at the end, written by the main process. ``resume``: continue from the phase's last
    checkpoint in ``out``."""
    from tqdm import tqdm

    start = resume_phase(out, phase, history) if resume else 0
    opt, sched = acc.prepare_optimizer(phase.opt), acc.prepare_scheduler(phase.sched)
    n = int(phase.steps)
    bar = tqdm(range(start, n), initial=start, total=n, desc=desc or phase.name,
               disable=not (progress and acc.is_main_process) or None)
    for step in bar:
        rng = step_rng(seed, acc.process_index, phase.index, step)
        with acc.autocast() if phase.autocast else nullcontext():
            losses, clip_ids = phase.step(rng)
        opt.zero_grad(set_to_none=True)
        acc.backward(losses["loss"])
        acc.clip_grad_norm_(phase.params, 1.0)
        opt.step()
        sched.step()
        if step % LOG_EVERY == 0 or step == n - 1:
            log_step(history, phase.name, step, losses, acc, ranks_log(acc, list(clip_ids)[:4]), bar, phase.show,
                     writer)
        if (step + 1) % int(every) == 0 or step + 1 == n:
            if acc.is_main_process:
                if phase.on_checkpoint is not None:
                    phase.on_checkpoint()
                save_phase(out, phase.name, step + 1, phase_weights(phase), opt, sched, history)
            maybe_stop(acc, phase.name, step + 1)
