"""The lip seal (stage2_synthesis/lip_seal.py): the lips close where a reference reading of the audio closes them, and
nothing else of the face changes."""

import numpy as np
import pytest
import torch

from avitalk.stage2_synthesis.lip_seal import LipSeal

from .conftest import tiny_stage2_cfg, wake_modulation


def _au(name: str, amount: float = 1.0) -> torch.Tensor:
    from avitalk.flame.standin import AU_NAMES, standin_arrays

    m = torch.zeros(53)
    m[:50] = amount * torch.as_tensor(standin_arrays()[0]["au_to_expression"][AU_NAMES.index(name)])
    return m


@pytest.fixture(scope="module")
def seal(standin):
    return LipSeal(standin)


def test_projector_moves_the_gap_and_little_else(seal, standin):
    """P keeps what an action does to the lip midline (the gap) and drops most of what it does elsewhere."""
    verts = lambda m: standin(expression=m[None, :50], jaw_pose=m[None, 50:])[0]  # noqa: E731
    rest = verts(torch.zeros(53))
    brows = np.unique(np.concatenate([standin.region("forehead"), standin.region("eye_region")]))
    corners = np.setdiff1d(standin.region("lips"), np.concatenate(standin.lip_midline()))
    for name in ("AU10_upper_lip_raise", "AU25_lips_part", "AU16_lower_lip_depress"):
        m = _au(name)
        p = m.clone()
        p[:50] = m[:50] @ seal.projector.T
        g, gp = float(seal.lip_gap(m[None])), float(seal.lip_gap(p[None]))
        assert g > 1.0 and abs(gp - g) < 0.1 * g  # the gap it opens is kept
    for name in ("AU04_brow_lower", "AU01_inner_brow_raise"):  # a brow action is all but dropped
        m = _au(name)
        p = m.clone()
        p[:50] = m[:50] @ seal.projector.T
        moved, kept = (verts(m) - rest)[brows].norm(dim=-1).max(), (verts(p) - rest)[brows].norm(dim=-1).max()
        assert kept < 0.05 * moved
    m = _au("AU12_lip_corner_pull")  # a smile opens no gap: the projector leaves the lip corners nearly still
    p = m.clone()
    p[:50] = m[:50] @ seal.projector.T
    assert (verts(p) - rest)[corners].norm(dim=-1).max() < 0.25 * (verts(m) - rest)[corners].norm(dim=-1).max()


def test_seal_closes_where_the_reference_closes_and_keeps_the_style(seal, standin):
    """Frames 0-9: a pause (the reference's lips rest closed): the style is kept. Frames 10-15 and 19-23: the reference
    speaks (open lips) with a bilabial at 16-18 (closed): sealed there, left alone where the reference is open."""
    T = 24
    brow, open_lips = _au("AU04_brow_lower"), _au("AU10_upper_lip_raise") + _au("AU25_lips_part")
    styled = torch.stack([(brow + open_lips).repeat(T, 1), brow.repeat(T, 1)])  # sample 2: lips already closed
    ref = torch.zeros(T, 53)
    ref[10:16] = ref[19:] = _au("AU25_lips_part", 1.5)
    out = seal.apply(styled, ref)
    gap = seal.lip_gap(out[0])
    assert float(seal.lip_gap(styled[0]).min()) > 3.0
    assert (gap[16:19] <= 0.5).all()  # sealed at the bilabial
    torch.testing.assert_close(out[:, :7], styled[:, :7])  # not through the pause (only within NEAR_S of speech)
    torch.testing.assert_close(out[:, 10:16], styled[:, 10:16])  # left alone where the reference is open
    torch.testing.assert_close(out[1], styled[1])  # a mouth already closed is left alone
    verts = lambda m: standin(expression=m[:, :50], jaw_pose=m[:, 50:])  # noqa: E731
    brows = np.unique(np.concatenate([standin.region("forehead"), standin.region("eye_region")]))
    moved = (verts(out[0, 16:19]) - verts(styled[0, 16:19]))[:, brows].norm(dim=-1).max()
    assert moved < 2e-4  # under 0.2 mm: the brows keep the style's frown (it moves them by millimetres)
    everywhere = LipSeal(standin, near_s=None).apply(styled, ref)  # without the speech condition: the pause too
    assert (seal.lip_gap(everywhere[0])[:10] <= 0.5).all()
    with pytest.raises(ValueError, match="do not fit"):
        seal.apply(styled[..., :50], ref)
    with pytest.raises(ValueError, match="touch_mm"):
        LipSeal(standin, touch_mm=2.0, open_mm=1.0)


def test_synthesizer_seals_with_the_reference_style():
    """lip_seal off is the decoder's own output; on, it is that output sealed against the reference style's
    (decoded in the same batch); the config switches it, a call overrides it."""
    from avitalk.stage2_synthesis.synthesizer import Synthesizer

    torch.manual_seed(0)
    s = Synthesizer.build(tiny_stage2_cfg())
    wake_modulation(s.decoder)
    feats = np.random.default_rng(0).normal(size=(80, s.audio_encoder.dim)).astype(np.float32)
    text = "A disgusted person speaks with upper lip raised."
    plain = s.synthesize(feats, text, num_samples=2, seed=3, num_frames=40)
    assert not s.cfg.stage2.sampling.lip_seal and plain[0].meta["lip_seal"] is False
    sealed = s.synthesize(feats, text, num_samples=2, seed=3, num_frames=40, lip_seal=True)
    assert sealed[0].meta["lip_seal"] is True
    seal, z_ref = s.lip_seal()
    from avitalk.encoders import to_motion_rate

    ref = s.decoder.generate(torch.as_tensor(to_motion_rate(feats, 40)), z_ref[None])[0]
    want = seal.apply(torch.as_tensor(np.stack([np.concatenate([q.expression, q.jaw_pose], 1) for q in plain])), ref)
    got = np.stack([np.concatenate([q.expression, q.jaw_pose], 1) for q in sealed])
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    s.cfg.stage2.sampling.lip_seal = True
    again = s.synthesize(feats, text, num_samples=2, seed=3, num_frames=40)
    np.testing.assert_allclose(again[1].expression, sealed[1].expression, atol=1e-6)


def test_seal_on_a_head_with_more_or_fewer_components(standin):
    """Motion with fewer expression coefficients than the head (a decoder of 50 on a FLAME of 100) is sealed with the
    head's first components; a head with fewer than the motion has is refused with a FlameModelError (the synthesizer
    then turns the seal off with a warning)."""
    from avitalk.errors import FlameModelError

    few = LipSeal(standin, n_expr=40)
    styled = (_au("AU10_upper_lip_raise") + _au("AU25_lips_part")).repeat(8, 1)[None]
    styled = torch.cat([styled[..., :40], styled[..., 50:]], -1)  # 40 expression + 3 jaw
    ref = torch.zeros(8, 43)
    ref[:3] = ref[6:] = torch.cat([_au("AU25_lips_part", 1.5)[:40], torch.zeros(3)])
    out = few.apply(styled, ref)
    assert out.shape == styled.shape and (few.lip_gap(out[0])[3:6] < few.lip_gap(styled[0])[3:6]).all()
    with pytest.raises(FlameModelError, match="expression components"):
        LipSeal(standin, n_expr=60)
