"""The refined tracker: MediaPipe's face mesh with refined lips (``--landmarks refined``), run by MediaPipe itself.

The 468-point landmark network that the default tracker runs under ``ai-edge-litert`` reads a real talker's inner
lips where they are, but reads the stand-in head's open mouth about a third too small (docs/real-faces.md). MediaPipe's
478-point model with attention refines the lips and eyes; it needs MediaPipe's own operators, so it runs only inside
MediaPipe, whose 0.10.21 release pins numpy < 2 and protobuf < 5 and pulls jax and OpenCV (about 1 GB). It lives in
an environment of its own, made once by :func:`install` (``avitalk data track --install-refined``, ``make
tracker-refined``) in :func:`env_dir`; avitalk talks to it through a pipe (:mod:`avitalk.track.mediapipe_worker`),
one process per tracking worker. Its first 468 points are the face mesh's, with the lips and eyes refined, so the
fit, the correspondence and the fits' format are the default tracker's.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import TrackerMissing
from .models import tracker_dir

PACKAGE = "mediapipe==0.10.21"
WORKER = Path(__file__).with_name("mediapipe_worker.py")
N_POINTS = 478


def env_dir() -> Path:
    """``$AVITALK_MEDIAPIPE_ENV`` or ``<tracker dir>/mediapipe-env``."""
    env = os.environ.get("AVITALK_MEDIAPIPE_ENV")
    return Path(env) if env else tracker_dir() / "mediapipe-env"


def env_python(env: str | os.PathLike | None = None) -> Path:
    """The environment's Python; :class:`TrackerMissing` naming the fix when it is not there."""
    d = Path(env) if env else env_dir()
    py = d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not py.is_file():
        raise TrackerMissing(f"the refined tracker's environment is not installed in {d}: run `avitalk data track "
                             "--install-refined` (or `make tracker-refined`; about 1 GB)")
    return py


def install(env: str | os.PathLike | None = None, python: str | None = None, progress: bool = True) -> Path:
    """Make the environment (``python -m venv``, then pip installs mediapipe 0.10.21 and what it pulls) and check
    that the worker starts in it. Idempotent. ``python``: the interpreter to base it on (default: this one;
    mediapipe 0.10.21 has wheels for CPython 3.9-3.12)."""
    d = Path(env) if env else env_dir()
    py = d / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    quiet = [] if progress else ["--quiet"]
    if not py.is_file():
        r = subprocess.run([python or sys.executable, "-m", "venv", str(d)], capture_output=True, text=True)
        if r.returncode:
            raise TrackerMissing(f"could not make an environment in {d}: {_last_line(r.stderr or r.stdout)}")
    try:
        _check(py)
        return d
    except TrackerMissing:
        pass
    r = subprocess.run([str(py), "-m", "pip", "install", "--disable-pip-version-check", *quiet, PACKAGE],
                       stdout=None if progress else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if r.returncode:
        raise TrackerMissing(f"pip could not install {PACKAGE} into {d}: {_last_line(r.stderr)} (mediapipe 0.10.21 "
                             "has wheels for CPython 3.9-3.12 on Linux x86-64, macOS and Windows)")
    _check(py)
    return d


def _last_line(text: str) -> str:
    lines = [x.strip() for x in (text or "").splitlines() if x.strip() and not x.startswith("W0000")]
    return lines[-1] if lines else "no message"


def _check(py: Path) -> str:
    """The mediapipe version the worker reports when started with ``py``."""
    lm = RefinedLandmarker(python=py)
    try:
        return lm.version
    finally:
        lm.close()


class RefinedLandmarker:
    """The default landmarker's interface (``reset()``, ``lm(frame) -> (points [468, 3] or None, presence,
    faces seen)``) over MediaPipe's refined face mesh in its own process. ``points_478`` after a call holds all 478
    points (the 468 plus the irises). As with the default landmarker, the faces are counted when the face is found
    (the first frame, or after it was lost), 0 while it is followed: MediaPipe looks for a second face on every frame,
    and one stray look in a clip is not a second person."""

    name = "refined"

    def __init__(self, env: str | os.PathLike | None = None, python: str | os.PathLike | None = None):
        py = Path(python) if python else env_python(env)
        self._err = tempfile.TemporaryFile()  # MediaPipe logs to stderr; a pipe nobody reads could fill and block
        env_vars = {**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1"}
        env_vars.pop("PYTHONPATH", None)  # this environment's packages must not leak into that one
        try:
            self.proc = subprocess.Popen([str(py), "-u", str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._err, env=env_vars)
        except OSError as e:
            raise TrackerMissing(f"cannot start the refined tracker ({py}): {e}") from e
        line = self.proc.stdout.readline().decode(errors="replace").strip()
        if not line.startswith("READY"):
            try:
                self.proc.wait(timeout=10)  # its last words are on stderr
            except subprocess.TimeoutExpired:
                pass
            why = self._stderr_tail() or line or "no output"
            self.close()
            raise TrackerMissing(f"the refined tracker did not start ({py}): {why}; run `avitalk data track "
                                 "--install-refined` again")
        self.version = line.split(maxsplit=1)[1] if " " in line else "?"
        self.points_478: np.ndarray | None = None
        self._following = False

    def _stderr_tail(self) -> str:
        try:
            self._err.seek(0)
            return _last_line(self._err.read().decode(errors="replace"))
        except (OSError, ValueError):
            return ""

    def _fail(self, e: Exception) -> TrackerMissing:
        return TrackerMissing(f"the refined tracker stopped: {self._stderr_tail() or e}")

    def reset(self) -> None:
        """Forget the tracked face (a new video)."""
        self._following = False
        try:
            self.proc.stdin.write(b"R")
            self.proc.stdin.flush()
        except OSError as e:
            raise self._fail(e) from e

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray | None, float, int]:
        f = np.ascontiguousarray(frame, np.uint8)
        if f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"frames must be RGB [H, W, 3], got {f.shape}")
        h, w = f.shape[:2]
        try:
            self.proc.stdin.write(b"F" + struct.pack("<II", h, w) + f.tobytes())
            self.proc.stdin.flush()
            reply = self.proc.stdout.read(4 + N_POINTS * 3 * 4)
        except OSError as e:
            raise self._fail(e) from e
        if len(reply) != 4 + N_POINTS * 3 * 4:
            raise self._fail(EOFError("no reply"))
        faces = struct.unpack("<i", reply[:4])[0]
        pts = np.frombuffer(reply[4:], "<f4").reshape(N_POINTS, 3).astype(np.float32)
        if not faces:
            self.points_478, self._following = None, False
            return None, 0.0, 0
        found, self._following = not self._following, True
        self.points_478 = pts
        return pts[:468].copy(), 1.0, faces if found else 0

    def close(self) -> None:
        p = getattr(self, "proc", None)
        if p is not None and p.poll() is None:
            try:
                p.stdin.write(b"Q")
                p.stdin.close()
            except OSError:
                pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self._err.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __enter__(self) -> "RefinedLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
