"""eval/ metrics, each against an independent computation on known inputs."""

import numpy as np
import pytest
import torch

from avitalk.errors import CheckpointError, SequenceError
from avitalk.eval.diversity import diversity, vertex_diversity
from avitalk.eval.fid_kid import fid_kid, inception_features
from avitalk.eval.lse import lse, mfcc_windows, motion_windows, sync_distances
from avitalk.eval.vertex import eve, fdd, lve_euclidean_max, lve_squared_max, mve


@pytest.fixture()
def verts():
    rng = np.random.default_rng(0)
    gt = rng.normal(size=(6, 30, 3)) * 0.01
    pred = gt + rng.normal(size=gt.shape) * 0.002
    return pred, gt


def test_vertex_metrics_match_loops(verts):
    pred, gt = verts
    lips, upper = [0, 4, 7, 9], [10, 11, 12, 20]
    d = np.linalg.norm(pred - gt, axis=-1) * 1000  # [T, V] mm, computed independently
    assert lve_squared_max(pred, gt, lips) == pytest.approx(np.mean([max(d[t, v] ** 2 for v in lips) for t in range(6)]), rel=1e-5)
    assert lve_euclidean_max(pred, gt, lips) == pytest.approx(np.mean([max(d[t, v] for v in lips) for t in range(6)]))
    assert mve(pred, gt) == pytest.approx(d.mean())
    assert eve(pred, gt, upper) == pytest.approx(np.mean([max(d[t, v] for v in upper) for t in range(6)]))
    assert lve_squared_max(gt, gt, lips) == 0 and mve(gt, gt) == 0
    with pytest.raises(SequenceError):
        mve(pred[:, :5], gt)


def test_fdd_is_gt_minus_prediction_dynamics():
    T, V = 50, 6
    template = np.zeros((V, 3))
    t = np.arange(T) / 25
    gt = np.zeros((T, V, 3))
    gt[:, :, 1] = 0.002 * np.sin(2 * np.pi * 2 * t)[:, None]  # brows moving 2 mm
    still = np.zeros_like(gt)
    upper = [0, 1, 2]
    sq = (gt[:, upper, 1] * 1000) ** 2  # squared displacement per frame (mm^2)
    expected = np.mean(sq.std(axis=0))
    assert fdd(still, gt, template, upper) == pytest.approx(expected)
    assert fdd(gt, gt, template, upper) == pytest.approx(0.0)
    assert fdd(gt, still, template, upper) == pytest.approx(-expected)


def test_diversity_by_hand():
    pts = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5
    assert diversity(pts) == pytest.approx(2 * (3 + 4 + 5) / 6)
    assert diversity(np.ones((4, 7))) == 0
    v = np.zeros((2, 3, 4, 3))
    v[1, ..., 0] = 0.001  # every vertex 1 mm apart
    assert vertex_diversity(v) == pytest.approx(1.0)
    with pytest.raises(SequenceError):
        diversity(pts[:1])


def test_fid_and_kid_against_formulas():
    from scipy import linalg

    torch.manual_seed(0)  # KID draws its subsets with torch's generator
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 8))
    fake = rng.normal(size=(150, 8)) * 1.3 + 0.5
    r = fid_kid(real, fake, subsets=3, subset_size=150)
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    fid = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert r.fid == pytest.approx(fid, rel=1e-3)
    # KID with subsets of all 150 fake samples: compare with the unbiased MMD^2 (cubic polynomial kernel, on features
    # standardised by the real set) computed
    # independently on the same number of samples; different real subsets only move it a little
    def k(a, b):
        return (a @ b.T / a.shape[1] + 1) ** 3

    mu, sd = real.mean(0), real.std(0, ddof=1)  # KID reads per-dimension z-scores of the real set
    x, y = (real[:150] - mu) / sd, (fake - mu) / sd
    m = len(x)
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    mmd = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()
    assert abs(r.kid_mean - mmd) < 3 * r.kid_std + 0.05 * mmd and r.kid_subset_size == 150
    assert mmd > 10 * r.kid_std  # the two sets really differ
    assert fid_kid(real, real, subsets=2, subset_size=50).fid == pytest.approx(0, abs=1e-3)
    # two independent draws of one distribution: KID near zero (the same samples on both sides would bias it down)
    same = fid_kid(real, rng.normal(size=(200, 8)), subsets=20, subset_size=100)
    assert abs(same.kid_mean) < 0.1 * mmd
    small = fid_kid(real[:5], fake[:3], subsets=2, subset_size=100)
    assert small.kid_subset_size == 3  # cut to the smaller set, and said
    with pytest.raises(SequenceError, match="at least 2"):
        fid_kid(real[:1], fake)


def test_inception_features_from_a_torchscript_file(tmp_path):
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x / 255).mean(dim=(2, 3))

    path = tmp_path / "tiny_inception.pt"
    torch.jit.script(Tiny()).save(str(path))
    frames = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
    f = inception_features(frames, path, batch=2)
    assert f.shape == (5, 4)
    with pytest.raises(CheckpointError, match="no such Inception file"):
        inception_features(frames, tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(CheckpointError, match="not a TorchScript"):
        inception_features(frames, tmp_path / "bad.pt")


@pytest.mark.parametrize("shift", [0, 3, -5])
def test_lse_recovers_a_planted_offset(shift):
    rng = np.random.default_rng(2)
    audio = rng.normal(size=(80, 16))
    video = np.roll(audio, -shift, axis=0) + 0.1 * rng.normal(size=audio.shape)  # video[i] ~ audio[i + shift]
    r = lse(video, audio)
    assert r.offset == -shift
    assert r.lse_d == pytest.approx(r.distances.min()) and r.lse_c == pytest.approx(np.median(r.distances) - r.lse_d)
    assert r.lse_c > 1.0  # confident: the planted offset stands out
    # a loop over offsets, written out the way the algorithm is described
    padded = np.concatenate([np.zeros((15, 16)), audio, np.zeros((15, 16))])
    loop = [np.mean([np.linalg.norm(video[i] - padded[i + j] + 1e-6) for i in range(80)]) for j in range(31)]
    np.testing.assert_allclose(sync_distances(video, audio), loop, rtol=1e-5)


def test_sync_windows():
    t = np.arange(16000) / 16000
    w = mfcc_windows(np.sin(2 * np.pi * 200 * t) * 0.3)
    assert w.shape[1:] == (20, 13) and len(w) == 99 // 4 - 4
    assert motion_windows(np.zeros((12, 53))).shape == (8, 5, 53)
    with pytest.raises(SequenceError):
        motion_windows(np.zeros((3, 53)))
