"""``avitalk data track``: a folder of talking-face videos -> per-clip FLAME fits and a report.

Each clip becomes ``FITS/<stem>.npz``: expression [T, 50], jaw_pose [T, 3], global_pose [T, 3] (axis-angle), fps
(25), meta (JSON: source video, head model, quality), and what the fit rests on: scale [T] (pixels per metre) and
translation [T, 3] (weak perspective), shape [n_shape], landmarks [T, 468, 3] (float16, image pixels), face [T]
(whether the tracker saw the face in that frame) and residual_mm [T]. ``track_report.json`` holds one record per
clip: frames, frames with a face, dropped frames, fit residual, or the reason a clip was skipped. Finished clips are
kept on a second run (resumable); clips are spread over worker processes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AvitalkError, DatasetError
from ..io import atomic_save_npz, atomic_write_json
from ..types import MOTION_FPS, resample_frames

VIDEO_SUFFIXES = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm", ".m4v")
MIN_FACE_SHARE = 0.5  # a clip whose face is seen in fewer frames than this is skipped
REPORT = "track_report.json"
LANDMARKERS = ("mesh", "refined")  # the 468-point network under ai-edge-litert; MediaPipe's refined mesh (refined.py)


def find_videos(root: str | os.PathLike) -> list[Path]:
    """Video files under ``root`` (a folder, searched recursively, or one file)."""
    p = Path(root)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DatasetError(f"{p}: no such file or folder")
    return sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_SUFFIXES and q.is_file())


def read_frames(path: str | os.PathLike) -> tuple[list[np.ndarray], float]:
    """RGB frames of a video's first video stream and its frame rate."""
    import av

    try:
        with av.open(str(path)) as c:
            vs = next((s for s in c.streams if s.type == "video"), None)
            if vs is None:
                raise DatasetError("no video stream")
            fps = float(vs.average_rate or vs.guessed_rate or MOTION_FPS)
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(vs)]
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported, the run goes on
        raise DatasetError(f"unreadable video ({type(e).__name__}: {str(e)[:120]})") from e
    if not frames:
        raise DatasetError("no frames")
    return frames, fps


class Tracker:
    """The tracker, the head model and its correspondence, ready to fit clips (one per worker process)."""

    def __init__(self, head: str | None = None, cache: str | os.PathLike | None = None, settings=None,
                 landmarks: str = "mesh"):
        from ..flame import FlameModel
        from .fit import correspondence_for
        from .models import tracker_dir

        from .fit import FitSettings

        self.model = FlameModel.from_spec(head)
        self.landmarker = make_landmarker(landmarks)
        self.corr = correspondence_for(self.model, self.landmarker, cache or tracker_dir())
        # the refined landmarks sit on the lips' edges as seen: the fit takes the edges as such (docs/real-faces.md)
        self.settings = settings or FitSettings(lip_contour=landmarks == "refined")

    def landmarks(self, frames: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, int]:
        """[T, 468, 3] landmarks (NaN where no face), [T] face seen, and the most faces the detector saw."""
        self.landmarker.reset()
        pts = np.full((len(frames), 468, 3), np.nan, np.float32)
        seen = np.zeros(len(frames), bool)
        faces = 0
        for i, f in enumerate(frames):
            p, _, n = self.landmarker(f)
            faces = max(faces, n)
            if p is not None:
                pts[i], seen[i] = p, True
        return pts, seen, faces

    def clip(self, video: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Fit one video: the arrays of its ``.npz`` and its report record. DatasetError: why it is skipped."""
        from .fit import fit_landmarks

        t0 = time.perf_counter()
        frames, fps = read_frames(video)
        pts, seen, faces = self.landmarks(frames)
        if faces > 1:
            raise DatasetError(f"{faces} faces in view (the tracker follows one face per clip)")
        if seen.mean() < MIN_FACE_SHARE:
            raise DatasetError(f"a face in {seen.sum()} of {len(frames)} frames only")
        idx = np.flatnonzero(seen)
        filled = pts.copy()
        for j in range(468 * 3):  # frames without a face: interpolated from their neighbours
            a, c = divmod(j, 3)
            filled[:, a, c] = np.interp(np.arange(len(frames)), idx, pts[idx, a, c])
        filled = resample_frames(filled, fps)
        face25 = resample_frames(seen.astype(np.float32), fps) > 0.5
        out = fit_landmarks(self.model, self.corr, filled, self.settings)
        arrays = {
            "expression": out["expression"], "jaw_pose": out["jaw_pose"], "global_pose": out["global_pose"],
            "fps": np.asarray(MOTION_FPS, np.float32), "scale": out["scale"], "translation": out["translation"],
            "shape": out["shape"], "landmarks": filled.astype(np.float16), "face": face25,
            "residual_mm": out["residual_mm"],
        }
        rec = {
            "video": str(video), "frames": len(frames), "video_fps": round(fps, 3), "frames_25fps": len(filled),
            "frames_with_face": int(seen.sum()), "dropped_frames": int((~seen).sum()),
            "residual_mm_median": round(float(np.median(out["residual_mm"])), 3),
            "residual_mm_max": round(float(out["residual_mm"].max()), 3),
            "seconds": round(time.perf_counter() - t0, 2), "frame_size": list(frames[0].shape[1::-1]),
        }
        arrays["meta"] = np.asarray(json.dumps({"source": "avitalk data track", "head": self.corr.head,
                                                "landmarks": getattr(self.landmarker, "name", "mesh"), **rec}))
        return arrays, rec


def make_landmarker(kind: str = "mesh"):
    """The landmarker named ``kind`` (:data:`LANDMARKERS`)."""
    if kind == "mesh":
        from .landmarker import Landmarker

        return Landmarker()
    if kind == "refined":
        from .refined import RefinedLandmarker

        return RefinedLandmarker()
    raise DatasetError(f"unknown landmarks {kind!r}: one of {', '.join(LANDMARKERS)}")


_WORKER: dict[str, Any] = {}


def _init(head: str | None, cache: str | None, landmarks: str = "mesh") -> None:
    import torch

    torch.set_num_threads(1)  # a worker process per core
    _WORKER["tracker"] = Tracker(head, cache, landmarks=landmarks)


def _one(job: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    video, dest = Path(job[0]), Path(job[1])
    try:
        arrays, rec = _WORKER["tracker"].clip(video)
    except AvitalkError as e:
        return video.stem, {"video": str(video), "skipped": str(e)}
    except Exception as e:  # noqa: BLE001 - one bad clip never stops the run
        return video.stem, {"video": str(video), "skipped": f"{type(e).__name__}: {str(e)[:200]}"}
    atomic_save_npz(dest, **arrays)
    return video.stem, rec


def track_folder(videos: str | os.PathLike, out: str | os.PathLike, head: str | None = None, workers: int = 1,
                 progress: bool = True, landmarks: str = "mesh") -> dict[str, Any]:
    """Track and fit every video under ``videos`` into ``out`` (see the module's text) with the landmarker named
    ``landmarks``; returns the report. A folder holds the fits of one landmarker."""
    from tqdm import tqdm

    from .models import model_paths

    if landmarks not in LANDMARKERS:
        raise DatasetError(f"unknown landmarks {landmarks!r}: one of {', '.join(LANDMARKERS)}")
    if landmarks == "mesh":
        model_paths()  # fail now, with the fix, if the tracker is not installed
    else:
        from .refined import env_python

        env_python()
    files = find_videos(videos)
    if not files:
        raise DatasetError(f"{videos}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DatasetError(f"two videos named {f.stem}: {stems[f.stem]} and {f}; fits are named by the file name")
        stems[f.stem] = f
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    report_path = root / REPORT
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    if report.get("clips") and report.get("landmarks", "mesh") != landmarks:
        raise DatasetError(f"{root}: its fits were made with --landmarks {report.get('landmarks', 'mesh')}; "
                           f"give another folder for --landmarks {landmarks}")
    clips: dict[str, Any] = report.get("clips", {})
    # done before: fitted (its file is there) or skipped (its reason is in the report; delete the entry to retry)
    todo = [(str(f), str(root / f"{s}.npz")) for s, f in stems.items()
            if not (s in clips and ("skipped" in clips[s] or (root / f"{s}.npz").is_file()))]
    t0 = time.perf_counter()
    cache = str(root)

    def save() -> None:
        mine = [clips[s] for s in stems if s in clips]  # this folder's videos (the report may hold others too)
        done = [r for r in mine if "skipped" not in r]
        atomic_write_json(report_path, {
            "videos": len(files), "fitted": len(done), "skipped": len(mine) - len(done),
            "head": main.corr.head, "landmarks": landmarks,
            "frames": sum(r["frames"] for r in done),
            "residual_mm_median": round(float(np.median([r["residual_mm_median"] for r in done])), 3) if done else None,
            "clips": dict(sorted(clips.items())),
        })

    main = Tracker(head, cache, landmarks=landmarks)  # places the landmarks on the head once, before workers start
    bar = tqdm(total=len(todo), unit="clip", desc="track", disable=not progress or None)
    frames = 0
    pool = None
    try:
        if workers <= 1 or len(todo) <= 1:
            _WORKER["tracker"] = main
            it = map(_one, todo)
        else:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(head, cache, landmarks))
            it = pool.imap_unordered(_one, todo)
        for i, (stem, rec) in enumerate(it):
            clips[stem] = rec
            frames += rec.get("frames", 0)
            bar.update(1)
            bar.set_postfix(fps=f"{frames / max(time.perf_counter() - t0, 1e-9):.0f}")
            if i % 20 == 0:
                save()
    finally:
        if pool is not None:
            pool.terminate()
        if hasattr(main.landmarker, "close"):  # the refined tracker's process
            main.landmarker.close()
        bar.close()
        save()
    rep = json.loads(report_path.read_text())
    rep["new_clips"] = len(todo)
    rep["new_frames_per_second"] = round(frames / max(time.perf_counter() - t0, 1e-9), 1) if frames else None
    return rep
