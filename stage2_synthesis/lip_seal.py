"""The lip seal: the lips close for /b p m/ whatever the instruction, as they do on the decoder's reading of the audio
alone.

Real lips seal for a bilabial whatever the face is doing. The decoder learns that from SynthTalk, where the ground
truth seals the lips at every /b p m/ under every emotion, and on espeak's audio it does (98% of SynthTalk's validation
bilabials closed). On real voices the evidence for a bilabial is weaker, and a strong style wins: with the instruction
stage 1 wrote for the RAVDESS clips it heard as disgusted, the lips closed at 66% of the bilabials (the raised upper lip
held them apart), while the same decoder with "A person speaks." closed 99% of them.

So the decoder reads the audio twice: with the instruction's style, and with a fixed reference style (the prior's
deterministic map of :data:`REFERENCE_TEXT`). Where the reference's lips touch and the styled ones do not, the styled
lips are pulled to the reference's. Per frame and sample, the weight c is 1 where the reference's lip gap is at most
``touch_mm`` and 0 from ``open_mm`` on (linear between), times how much more open the styled lips are than the
reference's (full from ``excess_mm`` on), and only within ``near_s`` of a frame where the reference's lips are open:
in speech, not through a pause, where the style's own mouth (a surprised face's parted lips) stays. Then

    expression <- expression + c * P (expression_ref - expression),    jaw <- jaw + c * (jaw_ref - jaw)

where P (:func:`mouth_projector`) turns an expression change into the one that moves the lip midline vertically as it
does while moving the rest of the face (lip corners, cheeks, brows, eyes) as little as it can: a least-squares problem
on the head model's expression basis, solved once. So the smile, the pout or the raised brows of the style stay; only
the gap closes. Cost: a second decoder pass and a lip-gap forward (about 0.01 s per 10 s of speech on 2 cores). The
thresholds were chosen on SynthTalk validation; README "The mouth on real speech" has the measurements.
"""

from __future__ import annotations

import numpy as np
import torch

from avitalk.types import MOTION_FPS

REFERENCE_TEXT = "A person speaks."
TOUCH_MM = 0.5  # a reference lip gap up to this: sealed (chosen on SynthTalk validation, README)
OPEN_MM = 1.5  # from this reference gap on, the styled mouth is left alone
EXCESS_MM = 1.0  # the seal's full weight where the styled lips are this much more open than the reference's
NEAR_S = 0.12  # only this near a frame where the reference's lips are open: in speech, not through a pause


def mouth_projector(model, keep_weight: float = 0.1, n_expr: int | None = None) -> np.ndarray:
    """[E, E] P = argmin_P sum over expression changes d of |L (P d - d)|^2 + w |K P d|^2, L: the expression basis at
    the lip midline (:meth:`FlameModel.lip_midline`), vertical component; K: at every other face vertex, all three
    (w = ``keep_weight`` per coordinate): P d opens or closes the lips at the midline as d does and moves the rest of
    the face (lip corners, cheeks, brows) as little as it can, so a smile or a pout survives the seal. ``n_expr``: the
    first components only (what the decoder writes; default all)."""
    E = model.exprdirs.detach().cpu().double().numpy()[..., :n_expr]  # [V, 3, n_expr]
    up, lo = model.lip_midline()
    mid = np.concatenate([up, lo])
    face = model.region("face") if "face" in model.regions else np.arange(E.shape[0])
    keep = np.setdiff1d(face, mid)
    L, K = E[mid, 1], E[keep].reshape(-1, E.shape[-1])
    A, C = L.T @ L, K.T @ K * (len(mid) / max(len(keep), 1))
    ridge = 1e-6 * np.trace(A) / len(A) * np.eye(len(A))
    return np.linalg.solve(A + float(keep_weight) * C + ridge, A).astype(np.float32)


class LipSeal:
    """Built once per head model; :meth:`apply` seals styled motion where the reference motion's lips touch.
    ``n_expr``: how many expression coefficients the motion has (the decoder's; default: the model's). A head with more
    uses its first ``n_expr`` components, as the head's forward does; one with fewer is a FlameModelError."""

    def __init__(self, model, touch_mm: float = TOUCH_MM, open_mm: float = OPEN_MM, excess_mm: float = EXCESS_MM,
                 near_s: float | None = NEAR_S, fps: float = MOTION_FPS, n_expr: int | None = None):
        from avitalk.errors import FlameModelError

        if n_expr is not None and n_expr > model.n_exp:
            raise FlameModelError(f"{model.name}: has {model.n_exp} expression components, the motion {n_expr}")
        if not 0 <= touch_mm < open_mm or excess_mm <= 0:
            raise ValueError(f"need 0 <= touch_mm < open_mm and excess_mm > 0, got {touch_mm}, {open_mm}, {excess_mm}")
        self.touch_mm, self.open_mm, self.excess_mm = float(touch_mm), float(open_mm), float(excess_mm)
        self.near = None if near_s is None else max(1, int(round(float(near_s) * fps)))
        up, lo = model.lip_midline()
        self._mid = model.subset(np.concatenate([up, lo]))
        self._up = torch.arange(len(up))
        self._lo = torch.arange(len(up), len(up) + len(lo))
        self.projector = torch.as_tensor(mouth_projector(model, n_expr=n_expr))
        self.n_expr = self.projector.shape[0]

    @torch.no_grad()
    def lip_gap(self, motion: torch.Tensor) -> torch.Tensor:
        """[T] lip gap in mm of motion [T, n_expr + 3] (expression, jaw)."""
        from avitalk.flame import FlameModel

        m = motion.float()
        return FlameModel.lip_gap(self._mid(m[:, : self.n_expr], m[:, self.n_expr :]), self._up, self._lo)

    @torch.no_grad()
    def weights(self, reference: torch.Tensor) -> torch.Tensor:
        """[T] in [0, 1]: 1 where the reference's lips touch, 0 where they are open ``open_mm`` or more."""
        return self._weights(self.lip_gap(reference))

    def _weights(self, g: torch.Tensor) -> torch.Tensor:
        c = ((self.open_mm - g) / (self.open_mm - self.touch_mm)).clamp(0, 1)
        if self.near is not None:  # speech nearby: the reference opens within `near` frames
            opened = (g >= self.open_mm).float()[None, None]
            c = c * torch.nn.functional.max_pool1d(opened, 2 * self.near + 1, 1, self.near)[0, 0]
        return c

    @torch.no_grad()
    def apply(self, styled: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """styled [S, T, n_expr + 3] (S samples of one clip), reference [T, n_expr + 3] -> sealed [S, T, n_expr + 3]."""
        if styled.shape[-1] != self.n_expr + 3 or reference.shape != styled.shape[1:]:
            raise ValueError(f"motion {tuple(styled.shape)} and reference {tuple(reference.shape)} do not fit a head "
                             f"with {self.n_expr} expression coefficients")
        g_ref = self.lip_gap(reference)
        c = self._weights(g_ref)[None, :, None]
        # only as far as the styled lips are more open than the reference's: a mouth already closed is left alone
        S, T, M = styled.shape
        excess = (self.lip_gap(styled.reshape(S * T, M)).reshape(S, T) - g_ref).clamp_min(0)
        c = (c * (excess / self.excess_mm).clamp(0, 1)[..., None]).to(styled.dtype)
        d = reference[None].to(styled.dtype) - styled
        expr = d[..., : self.n_expr] @ self.projector.to(styled.dtype).T
        return styled + c * torch.cat([expr, d[..., self.n_expr :]], -1)
