"""Synthesizer: speech + instruction text -> FlameSequence(s). The instruction is the only style input, so an edited
text changes the face; several samples with different seeds give different, faithful styles."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from avitalk.errors import AudioError, CheckpointError
from avitalk.io import atomic_path, atomic_write_text
from avitalk.types import FEATURES_PER_FRAME, MOTION_DIM, MOTION_FPS, Audio, FlameSequence, Instruction

from .decoder import TalkingDecoder
from .prior import DiffusionPrior
from .style_encoder import StyleEncoder

log = logging.getLogger(__name__)
COMPONENTS = ("style_encoder", "decoder", "prior")
STREAM_DECODER = "decoder_stream"  # optional: the decoder fine-tuned on a live stream's windows (stage2.train.stream)


def build_modules(cfg: DictConfig, audio_dim: int, text_dim: int) -> dict[str, torch.nn.Module]:
    from avitalk.encoders import encoder_prosody_dim

    s = cfg.stage2
    return {
        "style_encoder": StyleEncoder(n_motion=MOTION_DIM, style_dim=s.style_dim,
                                      **OmegaConf.to_container(s.style_encoder)),
        "decoder": TalkingDecoder(audio_dim=audio_dim, n_motion=MOTION_DIM, style_dim=s.style_dim,
                                  prosody_dim=encoder_prosody_dim(cfg.audio_encoder), **OmegaConf.to_container(s.decoder)),
        "prior": DiffusionPrior(text_dim=text_dim, style_dim=s.style_dim, **OmegaConf.to_container(s.prior)),
    }


def save_module(module: torch.nn.Module, path: str | os.PathLike) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def load_module(module: torch.nn.Module, path: str | os.PathLike, name: str) -> None:
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p.parent}: missing component {name} ({p.name})")
    try:
        state = load_file(str(p))
    except Exception as e:  # noqa: BLE001 - any unreadable file
        raise CheckpointError(f"{p}: component {name} is not a readable safetensors file ({e})") from e
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items() if k in state and state[k].shape != v.shape]
    if missing or extra or wrong:
        detail = "; ".join(filter(None, [
            f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
            f"shape mismatch {wrong[:3]}" if wrong else ""]))
        raise CheckpointError(f"{p}: component {name} does not match the configured model ({detail})")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


class Synthesizer:
    """Stage 2. Build with :meth:`build` (random weights) or :meth:`load` (a trained directory)."""

    def __init__(self, cfg: DictConfig, modules: dict[str, torch.nn.Module], text_encoder=None, audio_encoder=None):
        from avitalk.config import resolve_config

        self.cfg = resolve_config(cfg, "stage-2 config")  # every key present (defaults from avitalk/config.py)
        self.style_encoder: StyleEncoder = modules["style_encoder"].eval()
        self.decoder: TalkingDecoder = modules["decoder"].eval()
        self.prior: DiffusionPrior = modules["prior"].eval()
        sd = modules.get(STREAM_DECODER)
        self.stream_decoder: TalkingDecoder | None = None if sd is None else sd.eval()
        self._text_encoder = text_encoder
        self._audio_encoder = audio_encoder
        self._seal: tuple | None = None  # (LipSeal or None, reference style), built on first use

    # ---------------------------------------------------------------- construction
    @classmethod
    def build(cls, cfg: DictConfig, text_encoder=None, audio_encoder=None) -> "Synthesizer":
        from avitalk.config import resolve_config

        cfg = resolve_config(cfg, "stage-2 config")
        te = text_encoder or cls._make_text_encoder(cfg)
        ae = audio_encoder or cls._make_audio_encoder(cfg)
        return cls(cfg, build_modules(cfg, ae.dim, te.dim), te, ae)

    @staticmethod
    def _make_text_encoder(cfg: DictConfig):
        from avitalk.encoders.text import text_encoder_from_config

        return text_encoder_from_config(cfg.stage2.text_encoder)

    @staticmethod
    def _make_audio_encoder(cfg: DictConfig):
        from avitalk.encoders import audio_encoder_from_config

        return audio_encoder_from_config(cfg.audio_encoder)

    @property
    def text_encoder(self):
        if self._text_encoder is None:
            self._text_encoder = self._make_text_encoder(self.cfg)
        return self._text_encoder

    @property
    def audio_encoder(self):
        if self._audio_encoder is None:
            self._audio_encoder = self._make_audio_encoder(self.cfg)
        return self._audio_encoder

    def modules(self) -> dict[str, torch.nn.Module]:
        mods = {"style_encoder": self.style_encoder, "decoder": self.decoder, "prior": self.prior}
        if self.stream_decoder is not None:
            mods[STREAM_DECODER] = self.stream_decoder
        return mods

    @property
    def live_decoder(self) -> TalkingDecoder:
        """The decoder a live stream uses: the one trained on the stream's own windows when the checkpoint has it
        (``decoder_stream.safetensors``), else the offline decoder."""
        return self.stream_decoder if self.stream_decoder is not None else self.decoder

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    def to(self, device: str | torch.device) -> "Synthesizer":
        """Move the trained networks (the frozen encoders stay where they run; they return numpy arrays). Seeded
        sampling draws its noise on the CPU, so a seed gives the same styles on any device up to float rounding."""
        for m in self.modules().values():
            m.to(device)
        return self

    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name, m in self.modules().items():
            save_module(m, d / f"{name}.safetensors")
        cfg = OmegaConf.create(OmegaConf.to_container(self.cfg))
        cfg.audio_dim = int(self.decoder.audio_in[0].normalized_shape[0]) + self.decoder.prosody_dim
        cfg.text_dim = int(self.prior.text_dim)
        atomic_write_text(d / "stage2.yaml", OmegaConf.to_yaml(cfg))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, text_encoder=None, audio_encoder=None,
             cfg: DictConfig | None = None) -> "Synthesizer":
        d = Path(directory)
        if cfg is None:
            if not (d / "stage2.yaml").is_file():
                raise CheckpointError(f"{d}: no stage2.yaml (not a stage-2 checkpoint)")
            cfg = OmegaConf.load(d / "stage2.yaml")
        te = text_encoder or cls._make_text_encoder(cfg)
        ae = audio_encoder
        from avitalk.config import resolve_config

        cfg = resolve_config(cfg, f"{d}")
        if ae is None and cfg.audio_dim is None:
            raise CheckpointError(f"{d}: its config has no audio_dim (the audio encoder's feature size) and no audio "
                                  "encoder was given")
        audio_dim = ae.dim if ae is not None else int(cfg.audio_dim)
        if cfg.text_dim is not None and int(cfg.text_dim) != te.dim:
            raise CheckpointError(f"{d}: the prior expects {cfg.text_dim}-d text embeddings, the text encoder gives {te.dim}")
        mods = build_modules(cfg, audio_dim, te.dim)
        for name, m in mods.items():
            load_module(m, d / f"{name}.safetensors", name)
        if (d / f"{STREAM_DECODER}.safetensors").is_file():
            import copy

            mods[STREAM_DECODER] = copy.deepcopy(mods["decoder"])
            load_module(mods[STREAM_DECODER], d / f"{STREAM_DECODER}.safetensors", STREAM_DECODER)
        return cls(cfg, mods, te, ae)

    # ---------------------------------------------------------------- inference
    def features(self, audio: Audio) -> np.ndarray:
        return self.audio_encoder.encode(audio)

    def styles(self, texts: Sequence[str], num_samples: int = 1, seed: int | None = None,
               guidance_scale: float | None = None, steps: int | None = None, use_prior: bool = True,
               sampler: str | None = None, seeds: Sequence[int | None] | None = None) -> torch.Tensor:
        """Style vectors [len(texts), num_samples, style_dim] for instruction texts. ``steps`` / ``sampler`` /
        ``guidance_scale`` default to the config's ``stage2.sampling`` (sampler ``ddim`` when it names none).
        ``seeds``: one seed per text instead of ``seed`` for all: row i is then the same as ``styles([texts[i]],
        seed=seeds[i])`` (its own starting noise), sampled in one batch."""
        samp = self.cfg.stage2.sampling
        emb = torch.as_tensor(self.text_encoder.encode(list(texts))).to(self.device)
        if not use_prior:
            return self.prior.map(emb)[:, None].expand(-1, num_samples, -1)
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        noise = None
        if seeds is not None:
            if len(seeds) != len(texts):
                raise ValueError(f"{len(seeds)} seeds for {len(texts)} texts")
            dim = self.prior.style_dim
            noise = torch.cat([torch.randn((num_samples, dim), generator=None if sd is None else
                                           torch.Generator().manual_seed(int(sd))) for sd in seeds])
        return self.prior.sample(emb, num_samples, steps=steps or int(samp.steps),
                                 guidance_scale=float(samp.guidance_scale if guidance_scale is None else guidance_scale),
                                 sampler=sampler or str(samp.sampler), generator=g, noise=noise)

    def lip_seal(self):
        """(LipSeal, reference style [style_dim]) for ``stage2.sampling.lip_seal`` (stage2_synthesis/lip_seal.py); the
        LipSeal is None, with one warning, when the head model lacks the lip region it needs or has fewer expression
        components than the decoder writes."""
        if self._seal is None:
            from avitalk.errors import FlameModelError
            from avitalk.flame import FlameModel

            from .lip_seal import REFERENCE_TEXT, LipSeal

            try:
                seal = LipSeal(FlameModel.from_spec(self.cfg.flame_model), n_expr=self.decoder.n_motion - 3)
            except FlameModelError as e:
                log.warning("lip seal off: %s", e)
                seal = None
            emb = torch.as_tensor(self.text_encoder.encode([REFERENCE_TEXT])).to(self.device)
            with torch.no_grad():
                self._seal = (seal, self.prior.map(emb)[0])
        return self._seal

    @torch.no_grad()
    def synthesize(
        self,
        audio: Audio | np.ndarray,
        instruction: str | Instruction,
        num_samples: int = 1,
        seed: int | None = None,
        guidance_scale: float | None = None,
        steps: int | None = None,
        use_prior: bool = True,
        num_frames: int | None = None,
        sampler: str | None = None,
        lip_seal: bool | None = None,
    ) -> list[FlameSequence]:
        """``audio``: an Audio, or its encoder features [N, D] at 50 Hz. Returns ``num_samples`` sequences (one clip of
        :meth:`synthesize_many`)."""
        if not isinstance(instruction, Instruction):  # checked before any audio work
            instruction = Instruction.from_text(instruction, truncate=True)
        if isinstance(audio, Audio):
            if audio.num_frames() < 1 or audio.duration < 1 / MOTION_FPS:
                raise AudioError(f"{audio.source or 'audio'}: shorter than one motion frame (40 ms)")
            feats, T = self.features(audio), num_frames or audio.num_frames()
        else:
            feats, T = audio, num_frames
        return self.synthesize_many([feats], [instruction], [T], [seed], num_samples, guidance_scale, steps, use_prior,
                                    sampler, lip_seal=lip_seal)[0]

    @torch.no_grad()
    def synthesize_many(
        self,
        features: Sequence[np.ndarray],
        instructions: Sequence[str | Instruction],
        num_frames: Sequence[int | None] | None = None,
        seeds: Sequence[int | None] | None = None,
        num_samples: int = 1,
        guidance_scale: float | None = None,
        steps: int | None = None,
        use_prior: bool = True,
        sampler: str | None = None,
        batch_size: int = 64,
        lip_seal: bool | None = None,
    ) -> list[list[FlameSequence]]:
        """Many clips at once (evaluation): encoder features [N_i, D] at 50 Hz and an instruction per clip ->
        ``num_samples`` sequences per clip, equal to ``synthesize(features[i], instructions[i], seed=seeds[i],
        num_frames=num_frames[i])`` clip by clip (to float rounding), with the prior and the decoder batched over
        ``batch_size`` clips. ``lip_seal`` (default: the config's ``stage2.sampling.lip_seal``): the lips close where
        the decoder's reading of the audio with a reference style closes them (stage2_synthesis/lip_seal.py)."""
        from avitalk.encoders import to_motion_rate

        n = len(features)
        if len(instructions) != n:
            raise ValueError(f"{n} feature arrays but {len(instructions)} instructions")
        if num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        frames = list(num_frames) if num_frames is not None else [None] * n
        sds = list(seeds) if seeds is not None else [None] * n
        if len(frames) != n or len(sds) != n:
            raise ValueError(f"num_frames and seeds need one entry per clip ({n})")
        # stage 2 reads the text only: a string is checked (Instruction's own rules), never parsed
        texts = [i.text if isinstance(i, Instruction) else Instruction.from_text(i, truncate=True).text
                 for i in instructions]
        seal, z_ref = self.lip_seal() if (self.cfg.stage2.sampling.lip_seal if lip_seal is None else lip_seal) else (None, None)
        out: list[list[FlameSequence]] = []
        for b in range(0, n, max(1, int(batch_size))):
            audios = []
            for f, T in zip(features[b : b + batch_size], frames[b : b + batch_size]):
                f = np.asarray(f, np.float32)
                if f.ndim != 2 or f.shape[0] < 2:
                    raise AudioError(f"features must be [N >= 2, D], got {f.shape}")
                audios.append(torch.as_tensor(to_motion_rate(f, T or f.shape[0] // FEATURES_PER_FRAME)).to(self.device))
            z = self.styles(texts[b : b + batch_size], num_samples, None, guidance_scale, steps, use_prior, sampler,
                            seeds=sds[b : b + batch_size])
            if seal is not None:  # the reference style decoded as one more sample of every clip
                z = torch.cat([z, z_ref.to(z).expand(z.shape[0], 1, -1)], 1)
            for k, m in enumerate(self.decoder.generate_many(audios, list(z))):
                if seal is not None:
                    m = seal.apply(m[:-1], m[-1])
                meta = {"instruction": texts[b + k], "seed": sds[b + k], "use_prior": use_prior,
                        "lip_seal": seal is not None}
                out.append([FlameSequence.from_motion(x, fps=MOTION_FPS, meta={**meta, "sample": j})
                            for j, x in enumerate(m.numpy())])
        return out

    def describe(self) -> dict[str, Any]:
        return {name: sum(p.numel() for p in m.parameters()) for name, m in self.modules().items()}
