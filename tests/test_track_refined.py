"""The refined tracker (MediaPipe's face mesh with refined lips, in an environment of its own) and the fit's lip
edges. The pipe to the worker is tested against a stand-in for mediapipe; the real model's tests skip unless its
environment is installed (`make tracker-refined`)."""

from __future__ import annotations

import stat
import sys
import textwrap

import numpy as np
import pytest
import torch

from avitalk.errors import TrackerMissing
from avitalk.track.refined import RefinedLandmarker, env_python

try:
    env_python()
    HAVE_REFINED = True
except TrackerMissing:
    HAVE_REFINED = False
needs_refined = pytest.mark.skipif(not HAVE_REFINED, reason="the refined tracker's environment is not installed "
                                   "(make tracker-refined)")

FAKE_MEDIAPIPE = '''
import types
__version__ = "0.0-fake"


class FaceMesh:
    """Answers 478 points: x along the row, y = frames seen since it was made (so a reset shows), z = 0; no face
    in a white frame; two faces when the top-left pixel is 7."""

    def __init__(self, **kw):
        assert kw["refine_landmarks"] is True
        self.n = 0

    def process(self, img):
        self.n += 1
        if img.min() == 255:
            return types.SimpleNamespace(multi_face_landmarks=None)
        pts = [types.SimpleNamespace(x=i / 478, y=self.n / 100, z=0.0) for i in range(478)]
        face = types.SimpleNamespace(landmark=pts)
        return types.SimpleNamespace(multi_face_landmarks=[face] * (2 if img[0, 0, 0] == 7 else 1))

    def close(self):
        pass


solutions = types.SimpleNamespace(face_mesh=types.SimpleNamespace(FaceMesh=FaceMesh))
'''


def _python_with(tmp_path, package: str | None) -> str:
    """An executable that runs this Python with ``package`` (a fake mediapipe's source) importable."""
    site = tmp_path / "site"
    (site / "mediapipe").mkdir(parents=True)
    if package is not None:
        (site / "mediapipe" / "__init__.py").write_text(package)
    else:
        (site / "mediapipe" / "__init__.py").write_text("raise ImportError('no module named mediapipe.solutions')\n")
    exe = tmp_path / "python"
    exe.write_text(f"#!/bin/sh\nPYTHONPATH={site} exec {sys.executable} \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script interpreter")
def test_the_pipe_carries_frames_resets_and_faces(tmp_path):
    with RefinedLandmarker(python=_python_with(tmp_path, FAKE_MEDIAPIPE)) as lm:
        assert lm.version == "0.0-fake"
        frame = np.zeros((30, 40, 3), np.uint8)
        pts, presence, faces = lm(frame)
        assert pts.shape == (468, 3) and pts.dtype == np.float32 and presence == 1.0 and faces == 1  # found
        assert lm.points_478.shape == (478, 3)
        np.testing.assert_allclose(pts[:, 0], np.arange(468) / 478 * 40, rtol=1e-5)  # pixels: x times the width
        np.testing.assert_allclose(pts[:, 1], 1 / 100 * 30, rtol=1e-5)  # y times the height
        assert lm(frame)[0][0, 1] == pytest.approx(2 / 100 * 30)  # the same tracked face, one more frame
        lm.reset()
        assert lm(frame)[0][0, 1] == pytest.approx(1 / 100 * 30)  # a new video starts afresh
        assert lm(np.full((30, 40, 3), 255, np.uint8)) == (None, 0.0, 0)  # no face
        two = frame.copy()
        two[0, 0, 0] = 7
        assert lm(two)[2] == 2  # found again: both faces counted
        assert lm(two)[2] == 0  # followed: faces are counted when the face is found, as by the default landmarker
        lm.reset()
        assert lm(two)[2] == 2
        with pytest.raises(ValueError, match="RGB"):
            lm(np.zeros((30, 40), np.uint8))
    assert lm.proc.poll() is not None  # closed: the worker has quit


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script interpreter")
def test_a_broken_environment_is_one_clear_error(tmp_path):
    with pytest.raises(TrackerMissing, match="did not start.*mediapipe.solutions.*--install-refined"):
        RefinedLandmarker(python=_python_with(tmp_path, None))
    with pytest.raises(TrackerMissing, match="--install-refined"):
        env_python(tmp_path / "no-env")


def test_cli_refined_mistakes_are_one_line(tmp_path, monkeypatch, cli):
    (tmp_path / "v.mp4").write_bytes(b"")
    code, _, err = cli("data", "track", tmp_path, "-o", tmp_path / "fits", "--landmarks", "dense")
    assert code == 2 and "mesh, refined" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("AVITALK_MEDIAPIPE_ENV", str(tmp_path / "no-env"))
    code, _, err = cli("data", "track", tmp_path, "-o", tmp_path / "fits", "--landmarks", "refined")
    assert code == 2 and "--install-refined" in err and len(err.strip().splitlines()) == 1


def test_lip_edge_candidates_lie_on_their_own_lip():
    from avitalk.flame import FlameModel
    from avitalk.track.fit import LOWER_INNER_LIP, UPPER_INNER_LIP, Correspondence, lip_contours

    head = FlameModel.standin()
    lips = head.region("lips")
    up, lo = head.lip_midline()
    # a correspondence with every inner-lip landmark on a midline vertex of its lip
    verts = np.zeros((468, 3), np.int64)
    verts[list(UPPER_INNER_LIP)] = up[0]
    verts[list(LOWER_INNER_LIP)] = lo[0]
    bary = np.tile(np.float32([1, 0, 0]), (468, 1))
    ids, cand = lip_contours(head, Correspondence(verts, bary, "test"), band_mm=1.5)
    assert sorted(ids) == sorted(UPPER_INNER_LIP + LOWER_INNER_LIP)
    jaw = head.lbs_weights.numpy()[:, 2]
    x0 = head.v_template.numpy()[up[0], 0]
    for i, c in zip(ids, cand):
        assert np.isin(c, lips).all() and len(c) > 3
        assert ((jaw[c] > 0.5) == (i in LOWER_INNER_LIP)).all()  # the lower lip moves with the jaw, the upper not
        assert np.abs(head.v_template.numpy()[c, 0] - x0).max() <= 0.0015 + 1e-7


@pytest.fixture(scope="module")
def rendered_open():
    """40 frames of the stand-in: the jaw opens and closes twice while the lips part (AU25) and smile a little."""
    from avitalk.flame import FlameModel
    from tests.conftest import render_talking_standin

    head = FlameModel.standin()
    return (head, *render_talking_standin(head, lips_part=0.8))


@needs_refined
@pytest.mark.slow
def test_refined_fit_recovers_the_lip_gap_in_mm(rendered_open, tmp_path):
    """The refined landmarks with the lips' edges in the fit: the lip gap within a millimetre (the 468-point
    network reads this head's open mouth about a third small: its fit stays further off)."""
    from avitalk.track.fit import FitSettings, correspondence, fit_landmarks
    from avitalk.types import FlameSequence

    head, seq, v, frames = rendered_open
    up, lo = (torch.as_tensor(a) for a in head.lip_midline())
    g = head.lip_gap(torch.as_tensor(v), up, lo).numpy()
    assert g.max() > 8  # the mouth really opens
    with RefinedLandmarker() as lm:
        corr = correspondence(head, lm)
        lm.reset()
        pts = np.stack([lm(f)[0] for f in frames])
    errs = {}
    for contour in (False, True):
        fit = fit_landmarks(head, corr, pts, FitSettings(lip_contour=contour))
        vf = head.sequence_vertices(FlameSequence(fit["expression"], fit["jaw_pose"]), shape=fit["shape"])
        gf = head.lip_gap(torch.as_tensor(vf), up, lo).numpy()
        assert np.corrcoef(g, gf)[0, 1] > 0.95
        errs[contour] = float(np.median(np.abs(gf - g)))
    assert errs[True] < 1.0 and errs[True] < errs[False]


@pytest.mark.skipif(sys.platform == "win32", reason="a shell-script interpreter")
def test_a_fits_folder_keeps_to_one_tracker(tmp_path, monkeypatch):
    import json

    from avitalk.errors import DatasetError
    from avitalk.track.run import REPORT, track_folder

    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "python").symlink_to(_python_with(tmp_path, FAKE_MEDIAPIPE))
    monkeypatch.setenv("AVITALK_MEDIAPIPE_ENV", str(env))
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "a.mp4").write_bytes(b"")
    fits = tmp_path / "fits"
    fits.mkdir()
    (fits / REPORT).write_text(json.dumps({"clips": {"a": {"video": "a.mp4", "skipped": "x"}}}))  # made by mesh
    with pytest.raises(DatasetError, match="made with --landmarks mesh"):
        track_folder(tmp_path / "videos", fits, landmarks="refined", progress=False)
    with pytest.raises(DatasetError, match="unknown landmarks"):
        track_folder(tmp_path / "videos", fits, landmarks="dense", progress=False)
