from collections import Counter

import numpy as np
import pytest
import torch

from avitalk.flame import standin as S
from avitalk.render import renderer_for_model


def test_size_and_format(standin):
    assert 4500 <= standin.num_vertices <= 7000
    assert (standin.n_exp, standin.n_shape, standin.num_joints) == (50, 10, 5)
    for r in ("lips", "eye_region", "forehead", "face"):
        assert len(standin.region(r)) > 50
    assert standin.meta["expression_names"] == list(S.EXPRESSION_NAMES)


def test_closed_consistently_oriented_surface(standin):
    """The head is one closed surface; the teeth and the tongue are open shells inside the mouth (seen only from the
    front), consistently oriented, facing out of the mouth."""
    f_all = standin.faces
    directed = Counter(map(tuple, np.concatenate([f_all[:, [0, 1]], f_all[:, [1, 2]], f_all[:, [2, 0]]])))
    assert max(directed.values()) == 1, "an edge is used twice in the same direction (flipped triangle)"
    inner = np.zeros(standin.num_vertices, bool)
    inner[standin.region("teeth")] = inner[standin.region("tongue")] = True
    assert inner.sum() > 100
    f = f_all[~inner[f_all].any(1)]
    directed = Counter(map(tuple, np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])))
    missing = [e for e in directed if (e[1], e[0]) not in directed]
    assert not missing, f"{len(missing)} boundary edges: the surface is not closed"
    v0 = standin.v_template.numpy()
    fi = f_all[inner[f_all].all(1)]
    n = np.cross(v0[fi[:, 1]] - v0[fi[:, 0]], v0[fi[:, 2]] - v0[fi[:, 0]])
    centre = v0[standin.region("tongue")].mean(0)
    facing = np.einsum("ij,ij->i", n, v0[fi].mean(1) - centre + [0, 0, 0.02])  # roughly away from the mouth's inside
    assert np.mean(facing > 0) > 0.9
    v = standin.v_template.numpy()
    area = np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]), axis=1)
    assert np.mean(area > 0) > 0.995  # only the closed mouth slit may have slivers at rest


def test_expression_basis_orthonormal_and_mapping_exact(standin):
    E = standin.exprdirs.numpy().reshape(-1, 50)
    np.testing.assert_allclose(E.T @ E / S.EXPRESSION_SCALE**2, np.eye(50), atol=1e-4)
    fields = S._fields(S._build()).reshape(50, -1)  # the named deformations the components come from
    M = standin.au_to_expression
    assert M.shape == (50 + len(S.VISEMES), 50)
    np.testing.assert_allclose(M[:50] @ E.T, fields, atol=2e-6)
    np.testing.assert_allclose(np.tril(M[:50].T, -1), 0, atol=1e-6)
    assert min(standin.meta["expression_residual"]) > 0.1  # every field brings a new direction


def test_deterministic():
    a1, _ = S.standin_arrays()
    S.standin_arrays.cache_clear()
    a2, _ = S.standin_arrays()
    for k in a1:
        np.testing.assert_array_equal(a1[k], a2[k])


def _verts(model, acts=None, jaw=0.0):
    e = torch.as_tensor(S.expression_from_activations(acts or {}))[None]
    return model(expression=e, jaw_pose=torch.tensor([[jaw, 0.0, 0.0]]))[0].detach().numpy()


def test_jaw_opens_the_mouth(standin):
    v0, v1 = _verts(standin), _verts(standin, jaw=0.3)
    lips = standin.region("lips")
    moved = np.linalg.norm(v1[lips] - v0[lips], axis=1)
    # the lower lip drops by centimetres, the upper lip stays
    assert moved.max() > 0.015 and np.sort(moved)[: len(lips) // 3].max() < 1e-3
    assert np.allclose(v1[standin.region("forehead")], v0[standin.region("forehead")])


def test_expressions_move_the_right_places(standin):
    v0 = _verts(standin)
    lips = standin.region("lips")
    corners = lips[np.argsort(np.abs(v0[lips, 0]))[-6:]]
    smile = _verts(standin, {"AU12_lip_corner_pull": 1.0})
    assert (smile[corners, 1] - v0[corners, 1]).mean() > 0.003
    fh = standin.region("forehead")
    assert (_verts(standin, {"AU02_outer_brow_raise": 1, "AU01_inner_brow_raise": 1})[fh, 1] - v0[fh, 1]).max() > 0.004
    assert (_verts(standin, {"AU04_brow_lower": 1})[fh, 1] - v0[fh, 1]).min() < -0.003


@pytest.fixture(scope="module")
def renders(standin):
    with renderer_for_model(standin, size=192) as r:
        return {
            name: r.render(_verts(standin, acts, jaw))
            for name, acts, jaw in [("neutral", {}, 0.0), ("jaw", {}, 0.3), ("blink", {"AU43_eyes_closed": 1.0}, 0.0)]
        }


def test_render_shows_eyes_and_a_mouth_that_opens(renders):
    def iris(img):  # the blue of the irises
        f = img.astype(int)
        return int(((f[..., 2] - f[..., 0] > 25) & (f[..., 2] > 90)).sum())

    def mouth(img):  # the dark red of the mouth cavity, in the lower middle of the frame
        h, w = img.shape[:2]
        f = img[int(h * 0.55) : int(h * 0.9), int(w * 0.3) : int(w * 0.7)].astype(int)
        return int(((f[..., 0] < 120) & (f[..., 1] < 50) & (f[..., 0] > f[..., 2])).sum())

    assert iris(renders["neutral"]) > 40
    assert iris(renders["blink"]) < 0.1 * iris(renders["neutral"])
    # closed, only the thin line between the lips is dark; open, the cavity fills many times that area
    assert mouth(renders["jaw"]) > 300 and mouth(renders["jaw"]) > 5 * mouth(renders["neutral"])
    assert (renders["neutral"].std(axis=(0, 1)) > 10).all()  # not a blank image


def test_pchip_is_scipys():
    """The head's cross-sections are interpolated by our PCHIP (no scipy.interpolate import on a cold start): bit for bit
    SciPy's on the head's own profiles, and SciPy's to rounding on data with flat runs, peaks and sign changes."""
    from scipy.interpolate import PchipInterpolator

    from avitalk.flame.standin import _PROFILE, _PROFILE_Y, _pchip, _ring_levels

    y = np.clip(_ring_levels(), -0.17, 0.035)
    for vals in _PROFILE.values():
        np.testing.assert_array_equal(_pchip(_PROFILE_Y[::-1], vals[::-1], y),
                                      PchipInterpolator(_PROFILE_Y[::-1], vals[::-1])(y))
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.uniform(0.1, 1.0, 12))
    for v in (rng.normal(size=12), np.r_[0, 0, 1, 2, 2, 2, 1, 0, -1, -1, 3, 3.0], np.cumsum(rng.uniform(0, 1, 12))):
        q = np.linspace(x[0], x[-1], 301)
        np.testing.assert_allclose(_pchip(x, v, q), PchipInterpolator(x, v)(q), rtol=0, atol=1e-12)
