"""Image-based LSE-D / LSE-C: SyncNet (Chung & Zisserman, "Out of time", 2016) on crops of our rendered frames.

The network is described here layer by layer from the published architecture of the ``syncnet_v2.model`` release
(the one LSE numbers in Wav2Lip, AVI-Talking and most talking-face papers come from), with parameter names that match
that file, so the user's copy loads as it is. The weights are not bundled (licence) and never downloaded: give the file
with ``avitalk eval --syncnet syncnet_v2.model``. It is read with ``torch.load(weights_only=True)``: a plain state dict
of tensors loads, anything that would need unpickling code is refused.

Inputs, as the weights were trained:
- lips: 5 consecutive 224x224 frames, BGR channel order, float 0..255, [B, 3, 5, 224, 224];
- audio: 13 MFCC x 20 frames (0.2 s at 100 Hz) of 16-bit-scaled samples, [B, 1, 13, 20];
- both sides give 1024-d embeddings; the offset search is :func:`eval.lse.lse`.

The crop: syncnet_python scores face tracks cut from each frame around the detected face box (half size ``s``,
centre ``(x, y)``): ``x +- 1.4 s`` horizontally and ``y - s .. y + 1.8 s`` vertically (crop scale 0.4), resized to 224.
We place the same box around the projection of the head model's face region (our renders have a fixed camera, so the
box is computed once per clip). ``crop="mouth"`` instead centres a square of the same size on the lips.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from avitalk.types import SAMPLE_RATE
from torch import nn

from avitalk.errors import CheckpointError, SequenceError

from .lse import WINDOW, SyncResult, lse, mfcc_windows

EMBED_DIM = 1024
CROP_SIZE = 224
CROP_SCALE = 0.4

# (kind, in, out, kernel, stride, padding) per layer; "bn" = batch norm, "relu", "pool" = max pool (kernel, stride,
# padding). Conv + batch norm + ReLU blocks, max pooling between some of them, as in the paper's audio and lip streams.
_AUDIO = [
    ("conv", 1, 64, (3, 3), (1, 1), (1, 1)), ("bn", 64), ("relu",), ("pool", (1, 1), (1, 1), (0, 0)),
    ("conv", 64, 192, (3, 3), (1, 1), (1, 1)), ("bn", 192), ("relu",), ("pool", (3, 3), (1, 2), (0, 0)),
    ("conv", 192, 384, (3, 3), (1, 1), (1, 1)), ("bn", 384), ("relu",),
    ("conv", 384, 256, (3, 3), (1, 1), (1, 1)), ("bn", 256), ("relu",),
    ("conv", 256, 256, (3, 3), (1, 1), (1, 1)), ("bn", 256), ("relu",), ("pool", (3, 3), (2, 2), (0, 0)),
    ("conv", 256, 512, (5, 4), (1, 1), (0, 0)), ("bn", 512), ("relu",),
]
_LIPS = [
    ("conv", 3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)), ("bn", 96), ("relu",), ("pool", (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)), ("bn", 256), ("relu",), ("pool", (1, 3, 3), (1, 2, 2), (0, 1, 1)),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ("bn", 256), ("relu",),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ("bn", 256), ("relu",),
    ("conv", 256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)), ("bn", 256), ("relu",), ("pool", (1, 3, 3), (1, 2, 2), (0, 0, 0)),
    ("conv", 256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)), ("bn", 512), ("relu",),
]


def _stack(spec: list[tuple], dims: int) -> nn.Sequential:
    conv, bn, pool = {2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d), 3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)}[dims]
    layers: list[nn.Module] = []
    for kind, *a in spec:
        if kind == "conv":
            layers.append(conv(a[0], a[1], kernel_size=a[2], stride=a[3], padding=a[4]))
        elif kind == "bn":
            layers.append(bn(a[0]))
        elif kind == "relu":
            layers.append(nn.ReLU())
        else:
            layers.append(pool(kernel_size=a[0], stride=a[1], padding=a[2]))
    return nn.Sequential(*layers)


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    """SyncNet's two streams: MFCC [B, 1, 13, 20] -> [B, 1024]; lips [B, 3, 5, 224, 224] -> [B, 1024]."""

    def __init__(self, dim: int = EMBED_DIM):
        super().__init__()
        self.netcnnaud = _stack(_AUDIO, 2)
        self.netfcaud = _head(dim)
        self.netcnnlip = _stack(_LIPS, 3)
        self.netfclip = _head(dim)

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet(path: str | os.PathLike) -> SyncNet:
    """The user's ``syncnet_v2.model`` (a state dict of tensors; never unpickled beyond tensors)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such SyncNet weights file (syncnet_v2.model from the SyncNet release)")
    import zipfile

    with open(p, "rb") as fh:
        head = fh.read(1)
    if not zipfile.is_zipfile(p) and head != b"\x80":  # neither torch's zip format nor its legacy pickle stream
        raise CheckpointError(f"{p}: not a PyTorch weights file (syncnet_v2.model from the SyncNet release is one)")
    try:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch says, the file is not a plain state dict
        raise CheckpointError(f"{p}: not a SyncNet state dict readable without unpickling code "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{p}: expected a dict of tensors (a SyncNet state dict)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    net = SyncNet()
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(k for k in set(state) - set(own) if not k.endswith("num_batches_tracked"))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        what = "; ".join(s for s in (f"missing {missing[:4]}" if missing else "", f"unexpected {extra[:4]}" if extra else "",
                                     f"wrong shape {wrong[:4]}" if wrong else "") if s)
        raise CheckpointError(f"{p}: not SyncNet's architecture ({what})")
    net.load_state_dict({k: v.float() for k, v in state.items() if k in own}, strict=False)
    return net.eval()


# ------------------------------------------------------------------------------------------------ crops
def project(camera, vertices: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixel coordinates [N, 2] (x right, y down) of world points [N, 3] seen by a renderer camera."""
    v = np.asarray(vertices, np.float64)
    h = np.concatenate([v, np.ones((len(v), 1))], 1) @ (camera.proj(width / height) @ camera.view()).T
    ndc = h[:, :3] / h[:, 3:4]
    return np.stack([(ndc[:, 0] + 1) / 2 * width, (1 - ndc[:, 1]) / 2 * height], 1)


def crop_box(model, camera, size: int | tuple[int, int], crop: str = "face") -> tuple[float, float, float]:
    """(centre x, centre y, half side) in pixels of the square SyncNet crop for renders of ``model``'s template."""
    w, h = (size, size) if isinstance(size, int) else size
    tmpl = model.v_template.detach().cpu().numpy()
    face = project(camera, tmpl[model.region("face")], w, h)
    (x0, y0), (x1, y1) = face.min(0), face.max(0)
    s = max(x1 - x0, y1 - y0) / 2  # the detector box's half size
    half = s * (1 + CROP_SCALE)
    if crop == "face":  # syncnet_python's track crop: y - s .. y + (1 + 2 cs) s around the box centre
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + CROP_SCALE * s
    elif crop == "mouth":
        lips = project(camera, tmpl[model.region("lips")], w, h)
        cx, cy = lips.mean(0)
    else:
        raise ValueError(f"crop must be 'face' or 'mouth', got {crop!r}")
    return float(cx), float(cy), float(half)


def crop_frames(frames: np.ndarray, box: tuple[float, float, float], out: int = CROP_SIZE,
                fill: tuple[int, int, int] | None = None) -> np.ndarray:
    """Cut the square ``box`` out of RGB frames [T, H, W, 3] (padding with ``fill``, default the corner colour) and
    resize it to ``out`` x ``out`` (antialiased bilinear). Returns uint8 [T, out, out, 3]."""
    f = np.asarray(frames)
    if f.ndim != 4 or f.shape[-1] != 3:
        raise SequenceError(f"frames must be [T, H, W, 3], got {f.shape}")
    cx, cy, half = box
    x0, y0, side = int(round(cx - half)), int(round(cy - half)), max(1, int(round(2 * half)))
    H, W = f.shape[1:3]
    colour = np.asarray(f[0, 0, 0] if fill is None else fill, np.uint8)
    canvas = np.empty((len(f), side, side, 3), np.uint8)
    canvas[:] = colour
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, W), min(y0 + side, H)
    if sx1 > sx0 and sy1 > sy0:
        canvas[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = f[:, sy0:sy1, sx0:sx1]
    t = torch.from_numpy(canvas).permute(0, 3, 1, 2).float()
    t = nn.functional.interpolate(t, size=(out, out), mode="bilinear", antialias=True, align_corners=False)
    return t.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


# ------------------------------------------------------------------------------------------------ scoring
class SyncNetScorer:
    """LSE-D / LSE-C of (speech, 224x224 crops) with a SyncNet (or any module with ``forward_lip`` / ``forward_aud``)."""

    def __init__(self, net: nn.Module, batch_size: int = 32, device: str | torch.device = "cpu"):
        self.net = net.eval().to(device)
        self.batch_size = batch_size
        self.device = torch.device(device)

    @torch.no_grad()
    def embeddings(self, samples: np.ndarray, crops: np.ndarray, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, np.ndarray]:
        """Video and audio embeddings, one per 5-frame window (window i: frames i..i+4, MFCC 4i..4i+19)."""
        c = np.asarray(crops)
        if c.ndim != 4 or c.shape[-1] != 3:
            raise SequenceError(f"crops must be [T, H, W, 3] RGB, got {c.shape}")
        # syncnet_python reads wav files as int16: MFCC of 16-bit-scaled samples ([N, 20, 13] windows -> [N, 1, 13, 20])
        audio = torch.from_numpy(mfcc_windows(np.asarray(samples, np.float64) * 32768.0, sample_rate)).transpose(1, 2)
        n = min(len(c) - WINDOW + 1, len(audio))
        if n < 1:
            raise SequenceError("clip shorter than one 0.2 s sync window")
        video = torch.from_numpy(np.ascontiguousarray(c[..., ::-1])).permute(3, 0, 1, 2).float()  # BGR [3, T, H, W]
        v_out, a_out = [], []
        for s in range(0, n, self.batch_size):
            idx = range(s, min(n, s + self.batch_size))
            lips = torch.stack([video[:, i : i + WINDOW] for i in idx]).to(self.device)
            v_out.append(self.net.forward_lip(lips).float().cpu())
            a_out.append(self.net.forward_aud(audio[s : s + len(idx), None].to(self.device)).float().cpu())
        return torch.cat(v_out).numpy(), torch.cat(a_out).numpy()

    def score(self, samples: np.ndarray, crops: np.ndarray, sample_rate: int = SAMPLE_RATE) -> SyncResult:
        v, a = self.embeddings(samples, crops, sample_rate)
        return lse(v, a)


class CropRenderer:
    """SyncNet crops of motions [T, 53]: rendered by our renderer with a camera framed wide enough that the crop box
    lies inside the image (no padding), at the size that makes the crop ``out`` pixels (no rescaling to speak of).

    >>> with CropRenderer(model) as cr:
    ...     crops = cr(motion)  # [T, 224, 224, 3] uint8 RGB
    """

    def __init__(self, model, crop: str = "face", out: int = CROP_SIZE):
        from avitalk.render.renderer import Camera, Renderer

        tmpl = model.v_template.detach().cpu().numpy()
        cam = Camera.frontal(tmpl[model.region("face")], margin=1.12 * 1.9)
        probe = 512
        cx, cy, half = crop_box(model, cam, probe, crop)
        size = int(np.ceil(probe * out / (2 * half)))
        self.box = (cx * size / probe, cy * size / probe, half * size / probe)
        b = self.box
        if b[0] - b[2] < 0 or b[1] - b[2] < 0 or b[0] + b[2] > size or b[1] + b[2] > size:
            raise SequenceError("the SyncNet crop does not fit the rendered frame")  # a model framed unlike a face
        self.model, self.out = model, out
        self.renderer = Renderer(model.faces, model.num_vertices, size=size, camera=cam, vertex_colors=model.vertex_colors)

    def __call__(self, motion: np.ndarray) -> np.ndarray:
        from avitalk.types import FlameSequence

        seq = FlameSequence.from_motion(np.asarray(motion, np.float32))
        return crop_frames(self.renderer.render_frames(self.model.sequence_vertices(seq)), self.box, self.out)

    def close(self) -> None:
        self.renderer.release()

    def __enter__(self) -> "CropRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
