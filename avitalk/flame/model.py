"""FLAME layer: our ``.npz`` model format and a batched, differentiable forward pass (LBS via ``smplx.lbs``).

The file format (``FORMAT``, version 1) holds plain numpy arrays only, so loading never unpickles:

==================  =================  ================================================================
key                 shape / dtype      meaning
==================  =================  ================================================================
v_template          [V, 3] float32     neutral mesh (metres, y up, face looking down +z)
faces               [F, 3] int32       triangles
shapedirs           [V, 3, S] float32  identity blendshapes
exprdirs            [V, 3, E] float32  expression blendshapes
posedirs            [V, 3, P] float32  pose-corrective blendshapes (P = 9 * (J - 1))
J_regressor         [J, V] float32     joint regressor (J = 5: global, neck, jaw, left eye, right eye)
lbs_weights         [V, J] float32     skinning weights
parents             [J] int64          kinematic tree (parents[0] = -1)
mask__<name>        [K] int64          vertex indices of a region (lips, eye_region, forehead, face, ...)
vertex_colors       [V, 3] float32     optional albedo used by the renderer
au_to_expression    [A, E] float32     optional: expression coefficients of each named action unit / viseme
meta                JSON string        format, version, name, source, expression/AU names, ...
==================  =================  ================================================================
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..errors import FlameModelError
from ..io import atomic_save_npz

FORMAT = "avitalk-flame"
FORMAT_VERSION = 1
JOINT_NAMES = ("global", "neck", "jaw", "left_eye", "right_eye")
REQUIRED_KEYS = ("v_template", "faces", "shapedirs", "exprdirs", "posedirs", "J_regressor", "lbs_weights", "parents")


def validate_arrays(arrays: Mapping[str, np.ndarray], name: str = "model") -> None:
    """Check the shapes and values of a model's arrays; raise FlameModelError naming the first problem."""
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise FlameModelError(f"{name}: missing array(s) {', '.join(missing)}")
    v = np.asarray(arrays["v_template"])
    if v.ndim != 2 or v.shape[1] != 3 or v.shape[0] < 3:
        raise FlameModelError(f"{name}: v_template must be [V, 3], got {v.shape}")
    V = v.shape[0]
    f = np.asarray(arrays["faces"])
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise FlameModelError(f"{name}: faces must be integer [F, 3], got {f.dtype} {f.shape}")
    if f.size and (f.min() < 0 or f.max() >= V):
        raise FlameModelError(f"{name}: faces index vertices outside [0, {V})")
    parents = np.asarray(arrays["parents"])
    J = parents.shape[0]
    if parents.ndim != 1 or J < 1 or parents[0] != -1 or np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, J)):
        raise FlameModelError(f"{name}: parents must be a kinematic tree with parents[0] = -1, got {parents.tolist()}")
    for key, shape in (
        ("shapedirs", (V, 3, None)),
        ("exprdirs", (V, 3, None)),
        ("posedirs", (V, 3, 9 * (J - 1))),
        ("J_regressor", (J, V)),
        ("lbs_weights", (V, J)),
    ):
        a = np.asarray(arrays[key])
        want = tuple(a.shape[i] if s is None else s for i, s in enumerate(shape)) if a.ndim == len(shape) else shape
        if a.shape != want:
            raise FlameModelError(f"{name}: {key} must have shape {tuple('*' if s is None else s for s in shape)}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise FlameModelError(f"{name}: {key} contains NaN or infinite values")
    if "vertex_colors" in arrays and np.asarray(arrays["vertex_colors"]).shape != (V, 3):
        raise FlameModelError(f"{name}: vertex_colors must be [V, 3]")
    for k in arrays:
        if k.startswith("mask__"):
            m = np.asarray(arrays[k])
            if m.ndim != 1 or (m.size and (m.min() < 0 or m.max() >= V)):
                raise FlameModelError(f"{name}: region {k[6:]!r} has indices outside [0, {V})")


def save_model_npz(path: str | os.PathLike, arrays: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
    """Validate and write a model file atomically in our format."""
    out = {k: np.asarray(v) for k, v in arrays.items()}
    validate_arrays(out, str(path))
    out["faces"] = out["faces"].astype(np.int32)
    out["parents"] = out["parents"].astype(np.int64)
    for k in list(out):
        if out[k].dtype == np.float64:
            out[k] = out[k].astype(np.float32)
    m = dict(meta)
    m.setdefault("format", FORMAT)
    m.setdefault("version", FORMAT_VERSION)
    out["meta"] = np.asarray(json.dumps(m, sort_keys=True))
    return atomic_save_npz(path, **out)


class FlameModel(nn.Module):
    """A FLAME-format head model. ``forward`` maps parameters to vertices [B, V, 3] (batched, differentiable)."""

    def __init__(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None, name: str = "model"):
        super().__init__()
        validate_arrays(arrays, name)
        self.meta: dict[str, Any] = dict(meta or {})
        self.name = str(self.meta.get("name", name))
        f32 = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
        V = np.asarray(arrays["v_template"]).shape[0]
        self.register_buffer("v_template", f32(arrays["v_template"]))
        self.register_buffer("shapedirs", f32(arrays["shapedirs"]))
        self.register_buffer("exprdirs", f32(arrays["exprdirs"]))
        posedirs = np.asarray(arrays["posedirs"], np.float32)
        # smplx.lbs expects [P, V*3]
        self.register_buffer("posedirs", torch.as_tensor(posedirs.reshape(V * 3, -1).T.copy()))
        self.register_buffer("J_regressor", f32(arrays["J_regressor"]))
        self.register_buffer("lbs_weights", f32(arrays["lbs_weights"]))
        self.register_buffer("parents", torch.as_tensor(np.asarray(arrays["parents"], np.int64)))
        self.faces: np.ndarray = np.asarray(arrays["faces"], np.int32)
        self.vertex_colors: np.ndarray | None = (
            np.asarray(arrays["vertex_colors"], np.float32) if "vertex_colors" in arrays else None
        )
        self._regions: dict[str, np.ndarray] = {
            k[6:]: np.asarray(v, np.int64) for k, v in arrays.items() if k.startswith("mask__")
        }
        self.au_to_expression: np.ndarray | None = (
            np.asarray(arrays["au_to_expression"], np.float32) if "au_to_expression" in arrays else None
        )

    # ---------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | os.PathLike) -> "FlameModel":
        """Load a model file in our ``.npz`` format (``avitalk flame convert`` makes one from official FLAME)."""
        p = Path(path)
        if not p.is_file():
            raise FlameModelError(f"{p}: no such file")
        if p.suffix.lower() == ".pkl":
            raise FlameModelError(f"{p}: official FLAME .pkl files must be converted first: avitalk flame convert {p} out.npz")
        try:
            with np.load(p, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise FlameModelError(f"{p}: not a readable model .npz ({e})") from e
        meta: dict[str, Any] = {}
        if "meta" in arrays:
            try:
                meta = json.loads(str(arrays.pop("meta")))
            except json.JSONDecodeError as e:
                raise FlameModelError(f"{p}: meta is not valid JSON ({e})") from e
        if meta.get("format", FORMAT) != FORMAT or int(meta.get("version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise FlameModelError(f"{p}: unsupported model format {meta.get('format')!r} v{meta.get('version')}")
        return cls(arrays, meta, name=str(p))

    @classmethod
    def standin(cls) -> "FlameModel":
        """The procedurally generated stand-in head (deterministic; built once per process)."""
        from .standin import standin_arrays

        arrays, meta = standin_arrays()
        return cls(arrays, meta, name="standin")

    @classmethod
    def from_spec(cls, spec: str | os.PathLike | None) -> "FlameModel":
        """``None`` or ``"standin"`` -> the stand-in head; anything else is a path to a model ``.npz``."""
        if spec is None or str(spec) == "standin":
            return cls.standin()
        return cls.load(spec)

    def save(self, path: str | os.PathLike) -> Path:
        V = self.num_vertices
        arrays: dict[str, Any] = {
            "v_template": self.v_template.numpy(),
            "faces": self.faces,
            "shapedirs": self.shapedirs.numpy(),
            "exprdirs": self.exprdirs.numpy(),
            "posedirs": self.posedirs.numpy().T.reshape(V, 3, -1),
            "J_regressor": self.J_regressor.numpy(),
            "lbs_weights": self.lbs_weights.numpy(),
            "parents": self.parents.numpy(),
        }
        arrays.update({f"mask__{k}": v for k, v in self._regions.items()})
        if self.vertex_colors is not None:
            arrays["vertex_colors"] = self.vertex_colors
        if self.au_to_expression is not None:
            arrays["au_to_expression"] = self.au_to_expression
        return save_model_npz(path, arrays, self.meta)

    # ---------------------------------------------------------------- properties
    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.shapedirs.shape[-1])

    @property
    def n_exp(self) -> int:
        return int(self.exprdirs.shape[-1])

    @property
    def num_joints(self) -> int:
        return int(self.parents.shape[0])

    @property
    def regions(self) -> list[str]:
        return sorted(self._regions)

    def region(self, name: str) -> np.ndarray:
        """Vertex indices of a named region (lips, eye_region, forehead, face, ...)."""
        if name not in self._regions:
            raise FlameModelError(f"{self.name}: no region {name!r}; available: {', '.join(self.regions) or 'none'}")
        return self._regions[name]

    def lip_midline(self, midline_fraction: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
        """Vertex indices of the upper and lower lip on the front of the lips near the midline: the lip gap (lowest
        upper minus highest lower, vertically) is how open the mouth looks. The lower lip is what is skinned to the jaw
        (joint 2), which also separates the two copies of a vertex on the lips' slit."""
        lips = self.region("lips")
        v = self.v_template.detach().cpu().numpy()[lips]
        x, z = v[:, 0], v[:, 2]
        front = z >= z.max() - 0.4 * (z.max() - z.min())
        mid = (np.abs(x - np.median(x)) <= midline_fraction * (x.max() - x.min()) / 2) & front
        jaw = self.lbs_weights.detach().cpu().numpy()[lips, 2]
        upper, lower = lips[mid & (jaw <= 0.5)], lips[mid & (jaw > 0.5)]
        if not len(upper) or not len(lower):
            raise FlameModelError(f"{self.name}: cannot find upper and lower lip vertices near the midline")
        return upper, lower

    @staticmethod
    def lip_gap(vertices: torch.Tensor, upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        """Lip gap in mm per frame of vertices [T, V, 3] (metres): lowest ``upper`` minus highest ``lower`` vertex,
        vertically, 0 when the lips touch (indices as from :meth:`lip_midline`, into the vertices given)."""
        return (vertices[:, upper, 1].amin(1) - vertices[:, lower, 1].amax(1)).clamp_min(0) * 1000

    # ---------------------------------------------------------------- forward
    def _param(self, x: torch.Tensor | np.ndarray | None, B: int, n: int, what: str) -> torch.Tensor:
        dev, dt = self.v_template.device, self.v_template.dtype
        if x is None:
            return torch.zeros(B, n, device=dev, dtype=dt)
        t = torch.as_tensor(x, device=dev, dtype=dt)
        if t.ndim == 1:
            t = t.unsqueeze(0)
        if t.ndim != 2:
            raise FlameModelError(f"{what}: expected [B, {n}], got shape {tuple(t.shape)}")
        if t.shape[1] > n:
            raise FlameModelError(f"{what}: has {t.shape[1]} values but the model {self.name} has {n}")
        if t.shape[1] < n:  # fewer coefficients than the model: the rest are zero (FLAME's usual truncation)
            t = torch.cat([t, torch.zeros(t.shape[0], n - t.shape[1], device=dev, dtype=dt)], dim=1)
        if t.shape[0] == 1 and B > 1:
            t = t.expand(B, n)
        if t.shape[0] != B:
            raise FlameModelError(f"{what}: batch size {t.shape[0]} does not match {B}")
        return t

    def forward(
        self,
        shape: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        jaw_pose: torch.Tensor | None = None,
        global_pose: torch.Tensor | None = None,
        neck_pose: torch.Tensor | None = None,
        eye_pose: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Vertices [B, V, 3]. Poses are axis-angle (radians); ``eye_pose`` is [B, 6] (left eye, right eye)."""
        from smplx.lbs import lbs

        given = [t for t in (shape, expression, jaw_pose, global_pose, neck_pose, eye_pose) if t is not None]
        B = max([t.shape[0] if len(t.shape) == 2 else 1 for t in given] or [1])
        betas = torch.cat(
            [self._param(shape, B, self.n_shape, "shape"), self._param(expression, B, self.n_exp, "expression")], dim=1
        )
        n_eye = 3 * max(0, self.num_joints - 3)
        pose = torch.cat(
            [
                self._param(global_pose, B, 3, "global_pose"),
                self._param(neck_pose, B, 3, "neck_pose"),
                self._param(jaw_pose, B, 3, "jaw_pose"),
                self._param(eye_pose, B, n_eye, "eye_pose"),
            ],
            dim=1,
        )[:, : 3 * self.num_joints]
        dirs = torch.cat([self.shapedirs, self.exprdirs], dim=-1)
        verts, _ = lbs(
            betas, pose, self.v_template, dirs, self.posedirs, self.J_regressor, self.parents, self.lbs_weights,
            pose2rot=True,
        )
        return verts

    def subset(self, vertex_ids: np.ndarray) -> "VertexSubset":
        """A differentiable forward pass for a few vertices only (exact LBS; for losses on lips / face)."""
        return VertexSubset(self, vertex_ids)

    @torch.no_grad()
    def sequence_vertices(self, seq: Any, batch_size: int = 256, shape: np.ndarray | None = None) -> np.ndarray:
        """Vertices [T, V, 3] (float32 numpy) of a :class:`~avitalk.types.FlameSequence`, in batches."""
        T = seq.num_frames
        shp = shape if shape is not None else seq.shape
        out = np.empty((T, self.num_vertices, 3), np.float32)
        for s in range(0, T, batch_size):
            e = min(T, s + batch_size)
            out[s:e] = self.forward(
                shape=None if shp is None else torch.as_tensor(shp).reshape(1, -1).expand(e - s, -1),
                expression=torch.as_tensor(seq.expression[s:e]),
                jaw_pose=torch.as_tensor(seq.jaw_pose[s:e]),
                global_pose=None if seq.global_pose is None else torch.as_tensor(seq.global_pose[s:e]),
            ).numpy()
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.meta.get("source"),
            "vertices": self.num_vertices,
            "faces": int(self.faces.shape[0]),
            "n_shape": self.n_shape,
            "n_exp": self.n_exp,
            "joints": list(JOINT_NAMES[: self.num_joints]) if self.num_joints <= len(JOINT_NAMES) else self.num_joints,
            "regions": {k: int(len(v)) for k, v in sorted(self._regions.items())},
            "vertex_colors": self.vertex_colors is not None,
            "action_units": len(self.meta.get("au_names", [])) if self.au_to_expression is not None else 0,
        }


class VertexSubset(nn.Module):
    """Exact LBS for a subset of vertices: joints come from the full mesh (they are linear in the blendshape
    coefficients, so ``J = J_regressor @ v_template + (J_regressor @ dirs) . beta`` is precomputed), and only the
    chosen vertices are blended and skinned. Matches ``FlameModel.forward(...)[:, ids]`` (tested)."""

    def __init__(self, model: FlameModel, vertex_ids: np.ndarray):
        super().__init__()
        ids = torch.as_tensor(np.asarray(vertex_ids, np.int64))
        self.register_buffer("ids", ids)
        dirs = torch.cat([model.shapedirs, model.exprdirs], dim=-1)  # [V, 3, K]
        self.n_shape, self.n_exp = model.n_shape, model.n_exp
        self.register_buffer("v_template", model.v_template[ids].clone())
        self.register_buffer("dirs", dirs[ids].clone())
        self.register_buffer("J_template", model.J_regressor @ model.v_template)  # [J, 3]
        self.register_buffer("J_dirs", torch.einsum("jv,vck->jck", model.J_regressor, dirs))  # [J, 3, K]
        P = model.posedirs.shape[0]
        self.register_buffer("posedirs", model.posedirs.view(P, -1, 3)[:, ids].reshape(P, -1).clone())
        self.register_buffer("weights", model.lbs_weights[ids].clone())
        self.register_buffer("parents", model.parents.clone())
        self.num_joints = model.num_joints

    def forward(self, expression: torch.Tensor, jaw_pose: torch.Tensor, shape: torch.Tensor | None = None,
                global_pose: torch.Tensor | None = None) -> torch.Tensor:
        """Vertices [B, len(ids), 3] from expression [B, <=E] and jaw pose [B, 3] (other joints at rest)."""
        from smplx.lbs import batch_rigid_transform, batch_rodrigues

        B = expression.shape[0]
        dev, dt = expression.device, expression.dtype
        beta = torch.zeros(B, self.n_shape + self.n_exp, device=dev, dtype=dt)
        if shape is not None:
            beta[:, : shape.shape[1]] = shape
        beta[:, self.n_shape : self.n_shape + expression.shape[1]] = expression
        V = self.v_template.shape[0]
        v = self.v_template + (beta @ self.dirs.reshape(V * 3, -1).T).view(B, V, 3)
        J = self.J_template + (beta @ self.J_dirs.reshape(-1, beta.shape[1]).T).view(B, -1, 3)
        pose = torch.zeros(B, self.num_joints, 3, device=dev, dtype=dt)
        if global_pose is not None:
            pose[:, 0] = global_pose
        pose[:, 2] = jaw_pose
        rot = batch_rodrigues(pose.reshape(-1, 3)).view(B, self.num_joints, 3, 3)
        eye = torch.eye(3, device=dev, dtype=dt)
        pose_feature = (rot[:, 1:] - eye).reshape(B, -1)
        v = v + (pose_feature @ self.posedirs).view(B, -1, 3)
        _, A = batch_rigid_transform(rot, J, self.parents, dtype=dt)
        T = (self.weights @ A.reshape(B, self.num_joints, 16)).view(B, V, 4, 4)  # blended transforms
        return (T[..., :3, :3] @ v.unsqueeze(-1)).squeeze(-1) + T[..., :3, 3]
