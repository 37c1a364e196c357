"""glTF 2.0 binary (.glb) export of a FlameSequence: the head mesh with morph targets and a 25 fps weight animation.

Two layouts:
- ``morph`` (the default when it is accurate): one morph target per expression component (the model's expression
  blend shapes, named after them) plus six jaw targets (for each rotation axis, the per-vertex linear and quadratic
  terms of the jaw's displacement, weights = angle and angle squared in radians), and the sequence as a LINEAR
  morph-weight animation. Small and
  editable in Blender, three.js or the Gradio 3D viewer. A jaw rotation is not linear, so the exporter checks the
  layout against the exact FLAME forward pass and reports the largest vertex error.
- ``baked``: one morph target per frame holding that frame's exact vertices (minus the neutral head), animated with
  one-hot weights; exact for any motion, larger. ``layout="auto"`` bakes when the morph layout would be off by more
  than ``tolerance_mm``.

Looks like the render: the vertex colours the renderer uses (skin, hair, brows, lips, eyes, teeth, mouth inside)
go in ``COLOR_0`` (converted to linear light, as glTF defines vertex colours), and the mesh is split into one
primitive per region (skin, lips, eyes, teeth and tongue, mouth lining) sharing the same vertices and morph targets,
each with its own PBR material (non-metallic; glossier eyes and teeth, a matte mouth inside). A model without vertex
colours gets the renderer's skin colour as its material's base colour.

Written by hand from the glTF 2.0 specification (no extra dependency): a JSON chunk and a BIN chunk, each 4-byte
aligned; POSITION accessors carry min / max as the specification requires; target names go in ``mesh.extras``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import SequenceError
from ..io import atomic_path
from ..types import FlameSequence
from .renderer import SKIN

JAW_REF = (0.15, 0.08, 0.08)  # rotations (rad) about x (open), y, z from which the jaw targets are fitted
FLOAT, UINT32 = 5126, 5125
# region -> (material name, roughness); faces go to the first region that holds all three of their vertices
MATERIALS = (("eyes", ("left_eyeball", "right_eyeball"), 0.15), ("teeth", ("teeth", "tongue"), 0.35),
             ("lips", ("lips",), 0.45), ("mouth", ("mouth_interior",), 0.85))
SKIN_ROUGHNESS = 0.6
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


@dataclass
class GltfInfo:
    path: Path
    layout: str
    frames: int
    targets: int
    max_error_mm: float  # largest vertex error of the written animation against the exact FLAME forward pass
    bytes: int


def _normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.zeros_like(v)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class _Builder:
    def __init__(self):
        self.bin = bytearray()
        self.views: list[dict] = []
        self.accessors: list[dict] = []

    def add(self, arr: np.ndarray, ctype: int, atype: str, target: int | None = None, minmax: bool = False) -> int:
        data = np.ascontiguousarray(arr).tobytes()
        while len(self.bin) % 4:
            self.bin.append(0)
        view = {"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        self.bin += data
        self.views.append(view)
        acc = {"bufferView": len(self.views) - 1, "componentType": ctype, "count": int(arr.shape[0]), "type": atype}
        if minmax:
            a = np.asarray(arr, np.float64).reshape(arr.shape[0], -1)
            acc["min"], acc["max"] = a.min(0).tolist(), a.max(0).tolist()
        self.accessors.append(acc)
        return len(self.accessors) - 1


def export_glb(seq: FlameSequence, path: str | os.PathLike, model=None, layout: str = "auto",
               tolerance_mm: float = 1.0, audio_file: str | None = None) -> GltfInfo:
    """Write ``seq`` as a .glb (atomically). ``model``: a FlameModel (default: the stand-in head)."""
    from ..flame import FlameModel

    if layout not in ("auto", "morph", "baked"):
        raise ValueError(f"layout must be auto, morph or baked, got {layout!r}")
    model = model or FlameModel.standin()
    T = seq.num_frames
    if T < 1:
        raise SequenceError("the sequence has no frames")
    if seq.expression.shape[1] > model.n_exp:
        raise SequenceError(f"the sequence has {seq.expression.shape[1]} expression coefficients, the model "
                            f"{model.name} {model.n_exp}")
    shape = None if seq.shape is None else torch.as_tensor(seq.shape)[None]
    with torch.no_grad():
        base = model(shape=shape)[0].numpy().astype(np.float32)
        exact = model.sequence_vertices(seq, shape=seq.shape)  # [T, V, 3]
        n_exp = seq.expression.shape[1]
        eye = torch.eye(n_exp)
        exp_t = (model(shape=shape, expression=eye) - torch.as_tensor(base)).numpy()  # [n_exp, V, 3]
        # jaw: per-vertex linear and quadratic terms in each angle, from rotations by a and 2a (d = L t + Q t^2)
        a = torch.as_tensor(JAW_REF)
        jaw = torch.cat([torch.diag(a), torch.diag(2 * a)])
        d = (model(shape=shape, jaw_pose=jaw) - torch.as_tensor(base)).numpy().astype(np.float64)  # [6, V, 3]
        a = a.numpy().astype(np.float64)[:, None, None]
        quad = (d[3:] - 2 * d[:3]) / (2 * a**2)
        lin = (d[:3] - quad * a**2) / a
    targets = np.concatenate([exp_t, lin, quad]).astype(np.float32)
    jp = seq.jaw_pose.astype(np.float32)
    weights = np.concatenate([seq.expression, jp, jp**2], 1).astype(np.float32)
    approx = base[None] + np.einsum("tk,kvc->tvc", weights, targets)
    morph_err = float(np.abs(np.linalg.norm(approx - exact, axis=-1)).max() * 1000)
    if layout == "auto":
        layout = "morph" if morph_err <= tolerance_mm else "baked"
    names = [f"expression_{k:02d}" for k in range(n_exp)]
    if "standin" in model.name:  # the stand-in's components have meanings (action units, lip controls)
        from ..flame.standin import EXPRESSION_NAMES

        names = list(EXPRESSION_NAMES[:n_exp]) + names[len(EXPRESSION_NAMES):]
    names += ["jaw_x", "jaw_y", "jaw_z", "jaw_x_squared", "jaw_y_squared", "jaw_z_squared"]
    err = morph_err
    if layout == "baked":
        targets = (exact - base[None]).astype(np.float32)
        weights = np.eye(T, dtype=np.float32)
        names = [f"frame_{t:05d}" for t in range(T)]
        err = float(np.linalg.norm(base[None] + targets - exact, axis=-1).max() * 1000)

    b = _Builder()
    faces = model.faces.numpy() if hasattr(model.faces, "numpy") else np.asarray(model.faces)
    faces = faces.astype(np.uint32)
    pos = b.add(base, FLOAT, "VEC3", ARRAY_BUFFER, minmax=True)
    nrm = b.add(_normals(base, faces.astype(np.int64)), FLOAT, "VEC3", ARRAY_BUFFER)
    attributes = {"POSITION": pos, "NORMAL": nrm}
    if model.vertex_colors is not None:
        attributes["COLOR_0"] = b.add(srgb_to_linear(model.vertex_colors), FLOAT, "VEC3", ARRAY_BUFFER)
    tgt = [{"POSITION": b.add(t, FLOAT, "VEC3", ARRAY_BUFFER, minmax=True)} for t in targets]
    materials, primitives = [], []
    for name, faces_k, rough in _split_faces(model, faces):
        base_color = [1.0, 1.0, 1.0, 1.0] if model.vertex_colors is not None else [*srgb_to_linear(SKIN).tolist(), 1.0]
        materials.append({"name": name, "pbrMetallicRoughness": {"baseColorFactor": base_color, "metallicFactor": 0.0,
                                                                 "roughnessFactor": rough}})
        primitives.append({"attributes": attributes, "indices": b.add(faces_k.reshape(-1), UINT32, "SCALAR",
                                                                      ELEMENT_ARRAY_BUFFER),
                           "targets": tgt, "mode": 4, "material": len(materials) - 1})
    times = b.add((np.arange(T, dtype=np.float32) / float(seq.fps))[:, None], FLOAT, "SCALAR", minmax=True)
    wts = b.add(weights.reshape(-1, 1), FLOAT, "SCALAR")
    samplers = [{"input": times, "output": wts, "interpolation": "LINEAR" if layout == "morph" else "STEP"}]
    channels = [{"sampler": 0, "target": {"node": 0, "path": "weights"}}]
    if seq.global_pose is not None and np.abs(seq.global_pose).max() > 0:
        rot = b.add(_axis_angle_to_quat(seq.global_pose), FLOAT, "VEC4")
        samplers.append({"input": times, "output": rot, "interpolation": "LINEAR"})
        channels.append({"sampler": 1, "target": {"node": 0, "path": "rotation"}})

    extras = {"generator": "avitalk", "layout": layout, "fps": float(seq.fps), "max_error_mm": err,
              "jaw_reference_angles_rad": list(JAW_REF)}
    if audio_file:
        extras["audio"] = audio_file
    doc = {
        "asset": {"version": "2.0", "generator": "avitalk"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "head"}],
        "meshes": [{"name": "head", "primitives": primitives, "weights": [0.0] * len(tgt),
                    "extras": {"targetNames": names}}],
        "materials": materials,
        "animations": [{"name": "speech", "samplers": samplers, "channels": channels}],
        "buffers": [{"byteLength": 0}],
        "bufferViews": b.views,
        "accessors": b.accessors,
        "extras": extras,
    }
    while len(b.bin) % 4:
        b.bin.append(0)
    doc["buffers"][0]["byteLength"] = len(b.bin)
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * (-len(js) % 4)
    total = 12 + 8 + len(js) + 8 + len(b.bin)
    blob = b"".join([struct.pack("<4sII", b"glTF", 2, total), struct.pack("<I4s", len(js), b"JSON"), js,
                     struct.pack("<I4s", len(b.bin), b"BIN\x00"), bytes(b.bin)])
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob)
    return GltfInfo(path, layout, T, len(tgt), err, len(blob))


def srgb_to_linear(c) -> np.ndarray:
    """sRGB-encoded colours in 0..1 (what the renderer shows) -> linear light (what glTF's COLOR_0 and base colour
    factors hold)."""
    c = np.clip(np.asarray(c, np.float64), 0, 1)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _split_faces(model, faces: np.ndarray) -> list[tuple[str, np.ndarray, float]]:
    """(material name, faces, roughness) per region the model has (``MATERIALS``), the rest as skin."""
    left = np.ones(len(faces), bool)
    out = []
    for name, regions, rough in MATERIALS:
        have = [r for r in regions if r in model.regions]
        if not have:
            continue
        mask = np.zeros(model.num_vertices, bool)
        for r in have:
            mask[model.region(r)] = True
        take = left & mask[faces].all(1)
        if take.any():
            out.append((name, faces[take], rough))
            left &= ~take
    return [("skin", faces[left], SKIN_ROUGHNESS)] + out


def _axis_angle_to_quat(aa: np.ndarray) -> np.ndarray:
    aa = np.asarray(aa, np.float64)
    ang = np.linalg.norm(aa, axis=1, keepdims=True)
    axis = np.where(ang > 1e-12, aa / np.maximum(ang, 1e-12), [[1.0, 0.0, 0.0]])
    return np.concatenate([axis * np.sin(ang / 2), np.cos(ang / 2)], 1).astype(np.float32)  # glTF: x, y, z, w


def read_glb(path: str | os.PathLike) -> tuple[dict, bytes]:
    """The JSON document and the binary chunk of a .glb (for checks and tests)."""
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<4sII", data, 0)
    if magic != b"glTF" or version != 2 or total != len(data):
        raise SequenceError(f"{path}: not a glTF 2.0 binary file")
    jlen, jtype = struct.unpack_from("<I4s", data, 12)
    doc = json.loads(data[20 : 20 + jlen])
    blen, btype = struct.unpack_from("<I4s", data, 20 + jlen)
    if jtype != b"JSON" or btype != b"BIN\x00":
        raise SequenceError(f"{path}: unexpected glb chunks")
    return doc, data[28 + jlen : 28 + jlen + blen]


def accessor_array(doc: dict, blob: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = {FLOAT: np.float32, UINT32: np.uint32}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc["type"]]
    arr = np.frombuffer(blob, dtype, acc["count"] * width, view["byteOffset"] + acc.get("byteOffset", 0))
    return arr.reshape(acc["count"], width) if width > 1 else arr
