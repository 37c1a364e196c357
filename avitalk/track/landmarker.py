"""Face landmarks from video frames: MediaPipe's face detector and 468-point landmark network under ai-edge-litert.

Per frame: the landmark network reads a 192x192 crop, rotated so the eyes are level, around the face; the crop comes
from the previous frame's landmarks, or from the detector on the first frame and whenever the network says the face
is lost. Only the two networks are MediaPipe's; the pre- and post-processing here is written from their published
input/output conventions (detector: 128x128 RGB in [-1, 1], letterboxed, 896 anchors at strides 8 and 16, box and six
keypoints as offsets / 128 from the anchor centre; landmarks: RGB in [0, 1], 468 x (x, y, z) in crop pixels and a
face-presence logit).
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import TrackerMissing
from .models import model_paths

DET_SIZE, LMK_SIZE = 128, 192
MIN_DET_SCORE = 0.5  # a detection counts as a face from this score
MIN_PRESENCE = 0.5  # the landmark network's face flag below this: the face is lost, detect again
ROI_SCALE = 1.5  # the crop is this many times the face box (the network was trained so)
EYE_CORNERS = (33, 263)  # the subject's right and left outer eye corners among the 468 landmarks


def _anchors() -> np.ndarray:
    """[896, 2] anchor centres in [0, 1]: 16x16 cells x 2 anchors (stride 8), then 8x8 cells x 6 (stride 16)."""
    out = []
    for grid, per in ((16, 2), (8, 6)):
        ys, xs = np.meshgrid((np.arange(grid) + 0.5) / grid, (np.arange(grid) + 0.5) / grid, indexing="ij")
        out.append(np.repeat(np.stack([xs.ravel(), ys.ravel()], 1), per, axis=0))
    return np.concatenate(out).astype(np.float32)


@dataclass
class Detection:
    score: float
    box: np.ndarray  # [4]: x0, y0, x1, y1 in image pixels
    eyes: np.ndarray  # [2, 2]: the subject's right eye, left eye (x, y) in image pixels


@dataclass
class Roi:
    """A square crop: centre (x, y), side in pixels, and the crop's x axis as an angle in the image (radians)."""

    cx: float
    cy: float
    size: float
    angle: float

    def axes(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        return np.array([c, s]), np.array([-s, c])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-np.clip(np.asarray(x, np.float64), -50, 50)))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@contextlib.contextmanager
def _quiet_stderr():
    """The runtime's C++ logger announces its CPU delegate on file descriptor 2 for every network: hush it."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (a notebook): nothing to hush
        yield
        return
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _interpreter(path, threads: int):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as e:
        raise TrackerMissing("the TFLite runtime is not installed: pip install ai-edge-litert (or `make setup`)") from e
    with _quiet_stderr():
        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
    return it


class Landmarker:
    """468 face landmarks per frame of one video, tracked from frame to frame.

    >>> lm = Landmarker()
    >>> for frame in frames: points, presence = lm(frame)   # [468, 3] image pixels (z: depth, same scale), 0..1
    """

    name = "mesh"

    def __init__(self, folder: str | os.PathLike | None = None, threads: int = 1):
        paths = model_paths(folder)
        self.det = _interpreter(paths["detector"], threads)
        self.lmk = _interpreter(paths["landmarks"], threads)
        self._det_in = self.det.get_input_details()[0]["index"]
        outs = {d["name"]: d["index"] for d in self.det.get_output_details()}
        self._det_box, self._det_score = outs["regressors"], outs["classificators"]
        self._lmk_in = self.lmk.get_input_details()[0]["index"]
        outs = {tuple(d["shape"])[-1]: d["index"] for d in self.lmk.get_output_details()}
        self._lmk_pts, self._lmk_flag = outs[1404], outs[1]
        self.anchors = _anchors()
        self.roi: Roi | None = None

    def reset(self) -> None:
        """Forget the tracked face (a new video)."""
        self.roi = None

    # ---------------------------------------------------------------- detector
    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 frame [H, W, 3], best first, overlapping ones merged (IoU > 0.3)."""
        H, W = frame.shape[:2]
        scale = DET_SIZE / max(H, W)
        w, h = max(1, round(W * scale)), max(1, round(H * scale))
        img = np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR), np.float32)
        pad = np.full((DET_SIZE, DET_SIZE, 3), 0.0, np.float32)
        ox, oy = (DET_SIZE - w) // 2, (DET_SIZE - h) // 2
        pad[oy:oy + h, ox:ox + w] = img / 127.5 - 1.0
        self.det.set_tensor(self._det_in, pad[None])
        self.det.invoke()
        raw = self.det.get_tensor(self._det_box)[0]
        score = _sigmoid(self.det.get_tensor(self._det_score)[0, :, 0])
        keep = np.flatnonzero(score >= MIN_DET_SCORE)
        if not len(keep):
            return []
        a = self.anchors[keep]
        r = raw[keep] / DET_SIZE
        cx, cy, bw, bh = r[:, 0] + a[:, 0], r[:, 1] + a[:, 1], r[:, 2], r[:, 3]
        to_px = lambda x, o: (x * DET_SIZE - o) / scale  # noqa: E731 - [0, 1] of the letterboxed input -> image pixels
        boxes = np.stack([to_px(cx - bw / 2, ox), to_px(cy - bh / 2, oy), to_px(cx + bw / 2, ox),
                          to_px(cy + bh / 2, oy)], 1)
        eyes = np.stack([np.stack([to_px(r[:, 4 + 2 * k] + a[:, 0], ox), to_px(r[:, 5 + 2 * k] + a[:, 1], oy)], 1)
                         for k in (0, 1)], 1)
        dets: list[Detection] = []
        for i in np.argsort(-score[keep]):
            if all(_iou(boxes[i], d.box) <= 0.3 for d in dets):
                dets.append(Detection(float(score[keep][i]), boxes[i], eyes[i]))
        return dets

    @staticmethod
    def roi_from_detection(d: Detection) -> Roi:
        (x0, y0, x1, y1), (re, le) = d.box, d.eyes
        return Roi((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * ROI_SCALE,
                   float(np.arctan2(le[1] - re[1], le[0] - re[0])))

    @staticmethod
    def roi_from_landmarks(pts: np.ndarray) -> Roi:
        re, le = pts[EYE_CORNERS[0], :2], pts[EYE_CORNERS[1], :2]
        angle = float(np.arctan2(le[1] - re[1], le[0] - re[0]))
        ex, ey = Roi(0, 0, 1, angle).axes()
        u, v = pts[:, :2] @ ex, pts[:, :2] @ ey  # the landmarks in the rotated frame
        cu, cv = (u.min() + u.max()) / 2, (v.min() + v.max()) / 2
        c = cu * ex + cv * ey
        return Roi(float(c[0]), float(c[1]), float(max(u.max() - u.min(), v.max() - v.min()) * ROI_SCALE), angle)

    # ---------------------------------------------------------------- landmarks
    def landmarks(self, frame: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """468 x (x, y, z) in image pixels from the crop ``roi`` of ``frame``, and the face-presence probability."""
        ex, ey = roi.axes()
        k = roi.size / LMK_SIZE
        origin = np.array([roi.cx, roi.cy]) - (ex + ey) * roi.size / 2
        # PIL's affine map takes an output (crop) pixel to its input (image) position
        coeffs = (ex[0] * k, ey[0] * k, origin[0], ex[1] * k, ey[1] * k, origin[1])
        crop = Image.fromarray(frame).transform((LMK_SIZE, LMK_SIZE), Image.AFFINE, coeffs, Image.BILINEAR)
        self.lmk.set_tensor(self._lmk_in, (np.asarray(crop, np.float32) / 255.0)[None])
        self.lmk.invoke()
        raw = self.lmk.get_tensor(self._lmk_pts).reshape(468, 3).astype(np.float64)
        flag = float(_sigmoid(self.lmk.get_tensor(self._lmk_flag).reshape(-1)[0]))
        xy = origin + np.outer(raw[:, 0] * k, ex) + np.outer(raw[:, 1] * k, ey)
        return np.concatenate([xy, raw[:, 2:3] * k], 1).astype(np.float32), flag

    def __call__(self, frame: np.ndarray) -> tuple[np.ndarray | None, float, int]:
        """Landmarks of the tracked face in ``frame`` (None when no face), the presence, and how many faces the
        detector saw (0 when it did not run: the face was tracked from the previous frame)."""
        faces = 0
        for attempt in range(2):
            if self.roi is None:
                dets = self.detect(frame)
                faces = len(dets)
                if not dets:
                    return None, 0.0, 0
                self.roi = self.roi_from_detection(dets[0])
            pts, flag = self.landmarks(frame, self.roi)
            if flag >= MIN_PRESENCE:
                self.roi = self.roi_from_landmarks(pts)
                return pts, flag, faces
            self.roi = None  # lost: detect again (once)
            if attempt == 1 or faces:
                break
        return None, 0.0, faces
