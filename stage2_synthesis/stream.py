"""MotionStream: stage 2 on a live stream. Encoder features of the latest audio window in, FLAME frames out, each
frame once ``lookahead`` frames of audio after it have arrived.

Every step decodes one window (the decoder's ``window`` frames, or fewer at the start) ending at the newest frame of
audio and emits the frames that now have their look-ahead: a frame is decoded as the offline decoder decodes the frame
``lookahead`` frames before the end of a clip. The style is sampled once per instruction (the prior, as offline);
a new instruction blends in over ``blend_s`` (smoothstep from the style in force to the new one) instead of jumping.
The lip seal (``stage2.sampling.lip_seal``) runs on each window, the reference style decoded in the same batch.
The decoder is the checkpoint's live decoder when it has one (``Synthesizer.live_decoder``: trained on the windows a
stream encodes, whose last frames Whisper computed without the audio after them), else the offline decoder.
"""

from __future__ import annotations

import numpy as np
import torch

from avitalk.types import MOTION_FPS, Instruction

from .synthesizer import Synthesizer


class MotionStream:
    def __init__(self, synth: Synthesizer, instruction: str | Instruction, lookahead: int = 3, seed: int | None = 0,
                 blend_s: float = 0.3, lip_seal: bool | None = None):
        self.decoder = synth.live_decoder
        if not 0 <= lookahead < self.decoder.window:
            raise ValueError(f"lookahead must be 0..{self.decoder.window - 1} frames (the decoder's window), "
                             f"got {lookahead}")
        self.synth, self.lookahead, self.seed = synth, int(lookahead), seed
        self.blend = max(1, int(round(blend_s * MOTION_FPS)))
        use_seal = synth.cfg.stage2.sampling.lip_seal if lip_seal is None else lip_seal
        self._seal, self._z_ref = synth.lip_seal() if use_seal else (None, None)
        self.next_frame = 0  # the first frame not yet emitted
        self.instruction = ""
        self._z_from = self._z_to = None
        self._blend_start = 0
        self.set_instruction(instruction)

    # ---------------------------------------------------------------- style
    def style_at(self, frame: int) -> torch.Tensor:
        """The style in force at ``frame`` [style_dim]."""
        if self._z_from is None:
            return self._z_to
        w = min(max((frame - self._blend_start + 1) / self.blend, 0.0), 1.0)
        w = w * w * (3 - 2 * w)  # smoothstep: no kink at either end
        return self._z_from + (self._z_to - self._z_from) * w

    def set_instruction(self, instruction: str | Instruction, seed: int | None = None) -> None:
        """A new instruction: its style (sampled by the prior with ``seed``, default the stream's) blends in from the
        next frame emitted over ``blend_s``."""
        ins = instruction if isinstance(instruction, Instruction) else Instruction.from_text(instruction, truncate=True)
        z = self.synth.styles([ins.text], 1, seed=self.seed if seed is None else seed)[0, 0]
        self._z_from = None if self._z_to is None else self.style_at(self.next_frame - 1)
        self._z_to, self._blend_start, self.instruction = z, self.next_frame, ins.text

    # ---------------------------------------------------------------- motion
    @torch.no_grad()
    def step(self, first: int, features: np.ndarray, final: bool = False) -> np.ndarray:
        """``features`` [n, D] at the motion frame rate for frames ``first .. first + n - 1`` (the newest audio
        window, e.g. :meth:`StreamingEncoder.encode <avitalk.encoders.streaming.StreamingEncoder.encode>`) ->
        the newly complete frames [k, n_motion] (expression, jaw), frames ``next_frame - k .. next_frame - 1``.
        ``final``: the stream has ended; the frames still waiting for look-ahead are emitted with what there is."""
        end = first + len(features)
        stop = end if final else end - self.lookahead
        if stop <= self.next_frame:
            return np.zeros((0, self.decoder.n_motion), np.float32)
        if self.next_frame < first:
            raise ValueError(f"frames {self.next_frame}..{first - 1} were never given (the window starts at {first})")
        win = self.decoder.window
        out = []
        while self.next_frame < stop:
            # the window reaching as far into the audio as it can while still holding the next frame; it gives the
            # frames that have their look-ahead inside it (all the rest, at the stream's end)
            w_end = min(end, self.next_frame + win)
            upto = stop if final and w_end == end else min(stop, w_end - self.lookahead)
            w_start = max(first, w_end - win)
            out.append(self._decode(features[w_start - first : w_end - first], w_start, self.next_frame, upto))
            self.next_frame = upto
        return np.concatenate(out).astype(np.float32)

    def _decode(self, feats: np.ndarray, w_start: int, a: int, b: int) -> np.ndarray:
        """Frames a..b-1 of a window of features starting at frame ``w_start``."""
        dev = self.synth.device
        x = torch.as_tensor(np.asarray(feats, np.float32), device=dev)[None]
        z = self.style_at((a + b - 1) // 2).to(dev)[None]
        if self._seal is not None:
            x, z = x.expand(2, -1, -1), torch.cat([z, self._z_ref.to(z)[None]])
        m = self.decoder(x, z).float().cpu()
        if self._seal is not None:
            m = self._seal.apply(m[:1], m[1])
        return m[0, a - w_start : b - w_start].numpy()
