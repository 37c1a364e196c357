"""The face tracker and the FLAME fit (avitalk.track): rendered stand-in faces with known coefficients are the truth.
Tests that run the networks skip when they are not installed (`make setup` installs them)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

from avitalk.errors import TrackerMissing
from avitalk.track import landmarker as L
from avitalk.track.models import FILES, install, model_paths

try:
    model_paths()
    HAVE_TRACKER = True
except TrackerMissing:
    HAVE_TRACKER = False
needs_tracker = pytest.mark.skipif(not HAVE_TRACKER, reason="the tracker's networks are not installed (make setup)")


def test_anchors_cover_the_detector_grid():
    a = L._anchors()
    assert a.shape == (896, 2)
    assert np.allclose(a[0], [1 / 32, 1 / 32]) and np.allclose(a[512], [1 / 16, 1 / 16])
    assert (a > 0).all() and (a < 1).all()


def test_roi_from_landmarks_is_level_and_centred():
    pts = np.zeros((468, 3), np.float32)
    rng = np.random.default_rng(0)
    pts[:, :2] = rng.uniform([100, 50], [200, 170], size=(468, 2))
    pts[L.EYE_CORNERS[0], :2], pts[L.EYE_CORNERS[1], :2] = (120, 90), (180, 90)
    roi = L.Landmarker.roi_from_landmarks(pts)
    assert abs(roi.angle) < 1e-6
    assert 140 < roi.cx < 160 and 100 < roi.cy < 120
    assert roi.size == pytest.approx(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])) * L.ROI_SCALE)


def test_install_checks_the_files_it_copies(tmp_path):
    fake = tmp_path / "mediapipe-0.10.21-fake.whl"
    with zipfile.ZipFile(fake, "w") as z:
        for member, _ in FILES.values():
            z.writestr(member, b"not the network")
    with pytest.raises(TrackerMissing, match="SHA-256"):
        install(tmp_path / "models", wheel=fake)
    with pytest.raises(TrackerMissing, match="avitalk data track --install"):
        model_paths(tmp_path / "models")


@pytest.fixture(scope="module")
def head():
    from avitalk.flame import FlameModel

    return FlameModel.standin()


@pytest.fixture(scope="module")
def rendered(head):
    """A 40-frame clip on the stand-in: the jaw opens and closes twice while the lips part and smile a little."""
    from tests.conftest import render_talking_standin

    return render_talking_standin(head, lips_part=0.4)


@needs_tracker
def test_landmarks_follow_the_rendered_mouth(rendered):
    seq, _, frames = rendered
    lm = L.Landmarker()
    out = [lm(f) for f in frames]
    assert all(p is not None and presence > 0.9 for p, presence, _ in out)
    assert out[0][2] == 1  # the first frame is detected (one face), later ones tracked
    inner_gap = np.array([p[14, 1] - p[13, 1] for p, _, _ in out])  # lower minus upper inner lip, pixels
    assert np.corrcoef(inner_gap, seq.jaw_pose[:, 0])[0, 1] > 0.9


@needs_tracker
def test_fit_recovers_the_lip_gap_and_jaw(head, rendered):
    from avitalk.track.fit import correspondence, fit_landmarks
    from avitalk.types import FlameSequence

    seq, v, frames = rendered
    lm = L.Landmarker()
    corr = correspondence(head, lm)
    assert corr.vertices.shape == (468, 3) and np.allclose(corr.bary.sum(1), 1, atol=1e-5)
    lm.reset()
    pts = np.stack([lm(f)[0] for f in frames])
    fit = fit_landmarks(head, corr, pts)
    up, lo = (torch.as_tensor(a) for a in head.lip_midline())
    vf = head.sequence_vertices(FlameSequence(fit["expression"], fit["jaw_pose"]), shape=fit["shape"])
    g, gf = (head.lip_gap(torch.as_tensor(x), up, lo).numpy() for x in (v, vf))
    assert np.corrcoef(g, gf)[0, 1] > 0.95
    assert np.corrcoef(seq.jaw_pose[:, 0], fit["jaw_pose"][:, 0])[0, 1] > 0.95
    assert np.median(fit["residual_mm"]) < 1.5
    assert np.abs(np.degrees(fit["global_pose"])).max() < 3  # the camera never moved


@needs_tracker
def test_track_folder_fits_skips_and_resumes(tmp_path, rendered):
    from avitalk.data.real import load_fit
    from avitalk.render.video import write_video
    from avitalk.track.run import REPORT, track_folder

    seq, _, frames = rendered
    vids = tmp_path / "videos"
    vids.mkdir()
    write_video(vids / "talk.mp4", frames)
    write_video(vids / "empty.mp4", np.full((10, 288, 360, 3), 200, np.uint8))
    (vids / "broken.avi").write_bytes(b"\0garbage" * 50)
    (vids / "notes.txt").write_text("not a video")
    out = tmp_path / "fits"
    rep = track_folder(vids, out, workers=1, progress=False)
    assert (rep["videos"], rep["fitted"], rep["skipped"]) == (3, 1, 2)
    assert "face in 0 of 10" in rep["clips"]["empty"]["skipped"]
    assert "unreadable" in rep["clips"]["broken"]["skipped"]
    clip = rep["clips"]["talk"]
    assert clip["frames_with_face"] == clip["frames"] == len(frames) and clip["dropped_frames"] == 0
    fit = load_fit(out / "talk.npz")  # what `avitalk data ravdess|mead --fits` read
    assert fit.num_frames == len(frames) and fit.n_exp == 50
    with np.load(out / "talk.npz") as z:
        assert z["landmarks"].shape == (len(frames), 468, 3) and z["face"].all()
        assert json.loads(str(z["meta"]))["head"].startswith("avitalk-standin-")
    assert list(out.glob("correspondence-*.npz"))  # placed once per head, kept with the fits
    before = (out / "talk.npz").stat().st_mtime_ns
    rep2 = track_folder(vids, out, workers=1, progress=False)
    assert rep2["new_clips"] == 0 and (out / "talk.npz").stat().st_mtime_ns == before
    assert json.loads((out / REPORT).read_text())["fitted"] == 1


def test_cli_track_mistakes_are_one_line(tmp_path, monkeypatch, cli):
    code, _, err = cli("data", "track", tmp_path)
    assert code == 2 and "-o" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("data", "track", tmp_path / "nope", "-o", tmp_path / "fits")
    assert code == 2 and "no such file or folder" in err
    monkeypatch.setenv("AVITALK_TRACKER_DIR", str(tmp_path / "none"))
    (tmp_path / "v.mp4").write_bytes(b"")
    code, _, err = cli("data", "track", tmp_path, "-o", tmp_path / "fits")
    assert code == 2 and "avitalk data track --install" in err and len(err.strip().splitlines()) == 1
