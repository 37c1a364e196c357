"""Offscreen mesh rendering with moderngl through EGL (headless: Mesa llvmpipe on CPUs, NVIDIA drivers on GPUs).

One OpenGL context, program, buffers and framebuffer per :class:`Renderer`; frames are rendered in batches by
rewriting the vertex buffers only. Smooth (Gouraud) shading uses per-vertex normals computed for a whole batch at once with a
sparse vertex-face incidence matrix; multisampling is off by default (it costs 2x on llvmpipe).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp

from ..errors import RenderError

log = logging.getLogger(__name__)

DEFAULT_SIZE = 512
SKIN = (0.86, 0.68, 0.58)

# Lighting is evaluated per vertex (the meshes are dense, thousands of vertices on the face) so the fragment stage, which
# dominates on a software rasteriser, only interpolates a colour.
_VERT = """
#version 330
uniform mat4 u_view;
uniform mat4 u_proj;
uniform vec3 u_key;    // light directions in view space (towards the light)
uniform vec3 u_fill;
uniform vec3 u_rim;
in vec3 in_pos;
in vec3 in_nrm;
in vec3 in_col;
out vec3 v_col;
void main() {
    vec4 p = u_view * vec4(in_pos, 1.0);
    vec3 n = normalize(mat3(u_view) * in_nrm);
    vec3 v = normalize(-p.xyz);
    float key = max(dot(n, u_key), 0.0);
    float fill = max(dot(n, u_fill), 0.0);
    float rim = pow(1.0 - max(dot(n, v), 0.0), 3.0) * max(dot(n, u_rim), 0.0);
    float spec = pow(max(dot(n, normalize(u_key + v)), 0.0), 40.0) * 0.12;
    vec3 c = in_col * (0.22 + 0.78 * key + 0.22 * fill) + vec3(spec) + 0.15 * rim;
    v_col = pow(clamp(c, 0.0, 1.0), vec3(1.0 / 1.1));
    gl_Position = u_proj * p;
}
"""

_FRAG = """
#version 330
in vec3 v_col;
out vec4 f_color;
void main() {
    f_color = vec4(v_col, 1.0);
}
"""


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    f = _normalize(np.asarray(target, float) - np.asarray(eye, float))
    s = _normalize(np.cross(f, up))
    u = np.cross(s, f)
    m = np.eye(4)
    m[0, :3], m[1, :3], m[2, :3] = s, u, -f
    m[:3, 3] = -m[:3, :3] @ np.asarray(eye, float)
    return m


def perspective(fovy_deg: float, aspect: float, near: float, far: float) -> np.ndarray:
    f = 1.0 / np.tan(np.deg2rad(fovy_deg) / 2)
    m = np.zeros((4, 4))
    m[0, 0], m[1, 1] = f / aspect, f
    m[2, 2], m[2, 3] = (far + near) / (near - far), 2 * far * near / (near - far)
    m[3, 2] = -1.0
    return m


@dataclass
class Camera:
    """A pinhole camera: ``view`` and ``proj`` are 4x4 OpenGL matrices (column vectors)."""

    eye: np.ndarray
    target: np.ndarray
    fovy: float = 18.0
    near: float = 0.05
    far: float = 5.0

    def view(self) -> np.ndarray:
        return look_at(self.eye, self.target)

    def proj(self, aspect: float) -> np.ndarray:
        return perspective(self.fovy, aspect, self.near, self.far)

    @classmethod
    def frontal(cls, vertices: np.ndarray, fovy: float = 18.0, margin: float = 1.12, yaw_deg: float = 0.0) -> "Camera":
        """Fixed frontal camera framed on ``vertices`` (e.g. the face region of the template), looking down -z."""
        v = np.asarray(vertices, float)
        lo, hi = v.min(0), v.max(0)
        centre = (lo + hi) / 2
        half = max(hi[1] - lo[1], hi[0] - lo[0]) / 2 * margin
        dist = half / np.tan(np.deg2rad(fovy) / 2) + (hi[2] - centre[2])
        yaw = np.deg2rad(yaw_deg)
        eye = centre + dist * np.array([np.sin(yaw), 0.0, np.cos(yaw)])
        return cls(eye=eye, target=centre, fovy=fovy, near=max(0.01, dist * 0.2), far=dist * 4)


def vertex_normals_fn(faces: np.ndarray, num_vertices: int):
    """Return ``f(vertices [T,V,3]) -> normals [T,V,3]`` (area-weighted, smooth) for a fixed triangle list."""
    faces = np.asarray(faces, np.int64)
    F = len(faces)
    rows = faces.reshape(-1)
    cols = np.repeat(np.arange(F), 3)
    A = sp.csr_matrix((np.ones(3 * F, np.float32), (rows, cols)), shape=(num_vertices, F))

    f0, f1, f2 = faces[:, 0], faces[:, 1], faces[:, 2]

    def normals(verts: np.ndarray) -> np.ndarray:
        v = np.asarray(verts, np.float32)
        squeeze = v.ndim == 2
        if squeeze:
            v = v[None]
        v = np.ascontiguousarray(v.transpose(1, 2, 0))  # [V, 3, T]: gathers and the sparse product stay contiguous
        a = v[f0]
        e1, e2 = v[f1] - a, v[f2] - a  # [F, 3, T]
        fn = np.empty_like(e1)  # cross product, length = 2 * area (area weighting)
        fn[:, 0] = e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1]
        fn[:, 1] = e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2]
        fn[:, 2] = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        vn = (A @ fn.reshape(F, -1)).reshape(num_vertices, 3, -1)
        vn /= np.maximum(np.sqrt((vn * vn).sum(1, keepdims=True)), 1e-12)
        vn = np.ascontiguousarray(vn.transpose(2, 0, 1), dtype=np.float32)
        return vn[0] if squeeze else vn

    return normals


def create_context():
    """A standalone OpenGL 3.3 context through EGL, with a clear error when no driver is available."""
    try:
        import moderngl
    except ImportError as e:  # pragma: no cover - moderngl is a hard dependency
        raise RenderError("moderngl is not installed (run `make setup`)") from e
    errors = []
    for kwargs in ({"backend": "egl"}, {}):
        try:
            return moderngl.create_context(standalone=True, require=330, **kwargs)
        except Exception as e:  # noqa: BLE001 - moderngl raises plain Exceptions
            errors.append(f"{kwargs or 'default'}: {e}")
    raise RenderError(
        "no OpenGL 3.3 context could be created (" + "; ".join(errors) + "). On a headless machine install an EGL "
        "driver, e.g. `apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` (Mesa llvmpipe)"
    )


class Renderer:
    """Render meshes with a fixed topology to RGB images.

    >>> r = Renderer(model.faces, vertex_colors=model.vertex_colors, camera=Camera.frontal(face_vertices))
    >>> frames = r.render_frames(vertices)  # [T, H, W, 3] uint8
    """

    def __init__(
        self,
        faces: np.ndarray,
        num_vertices: int,
        size: int | tuple[int, int] = DEFAULT_SIZE,
        camera: Camera | None = None,
        vertex_colors: np.ndarray | None = None,
        background: tuple[float, float, float] = (0.93, 0.94, 0.96),
        samples: int = 0,
        cull_back_faces: bool = True,
    ):
        self.width, self.height = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise RenderError(f"image size must be within 16..4096 pixels, got {self.width}x{self.height}")
        self.faces = np.ascontiguousarray(faces, np.int32)
        self.V = int(num_vertices)
        if self.faces.size and self.faces.max() >= self.V:
            raise RenderError("faces index vertices beyond num_vertices")
        self.camera = camera
        self.background = background
        self._normals = vertex_normals_fn(self.faces, self.V)
        colors = np.tile(np.asarray(SKIN, np.float32), (self.V, 1)) if vertex_colors is None else vertex_colors
        colors = np.ascontiguousarray(colors, np.float32)
        if colors.shape != (self.V, 3):
            raise RenderError(f"vertex_colors must be [{self.V}, 3], got {colors.shape}")

        self.ctx = create_context()
        ctx = self.ctx
        self.prog = ctx.program(vertex_shader=_VERT, fragment_shader=_FRAG)
        self.vbo_pos = ctx.buffer(reserve=self.V * 12, dynamic=True)
        self.vbo_nrm = ctx.buffer(reserve=self.V * 12, dynamic=True)
        self.vbo_col = ctx.buffer(colors.tobytes())
        self.ibo = ctx.buffer(self.faces.tobytes())
        self.vao = ctx.vertex_array(
            self.prog,
            [(self.vbo_pos, "3f", "in_pos"), (self.vbo_nrm, "3f", "in_nrm"), (self.vbo_col, "3f", "in_col")],
            index_buffer=self.ibo,
            index_element_size=4,
        )
        size_wh = (self.width, self.height)
        self.samples = int(samples) if samples and samples > 1 else 0
        if self.samples:
            self.fbo_ms = ctx.framebuffer(
                color_attachments=[ctx.renderbuffer(size_wh, 4, samples=self.samples)],
                depth_attachment=ctx.depth_renderbuffer(size_wh, samples=self.samples),
            )
        self.fbo = ctx.framebuffer(
            color_attachments=[ctx.renderbuffer(size_wh, 4)], depth_attachment=ctx.depth_renderbuffer(size_wh)
        )
        key = _normalize(np.array([-0.45, 0.55, 0.75]))
        fill = _normalize(np.array([0.6, 0.1, 0.6]))
        rim = _normalize(np.array([0.0, 0.6, -0.4]))
        self.prog["u_key"].value = tuple(key)
        self.prog["u_fill"].value = tuple(fill)
        self.prog["u_rim"].value = tuple(rim)
        self._camera_set: Camera | None = None
        # a closed, consistently oriented mesh never shows a back face; open meshes can turn culling off
        self.cull_back_faces = cull_back_faces
        self._readbuf = bytearray(self.width * self.height * 3)

    # ------------------------------------------------------------------ setup
    def set_camera(self, camera: Camera) -> None:
        self.camera = camera
        self.prog["u_view"].write(camera.view().T.astype(np.float32).tobytes())
        self.prog["u_proj"].write(camera.proj(self.width / self.height).T.astype(np.float32).tobytes())
        self._camera_set = camera

    def _check(self, verts: np.ndarray) -> np.ndarray:
        v = np.asarray(verts)
        if v.ndim != 3 or v.shape[1:] != (self.V, 3):
            raise RenderError(f"vertices must be [T, {self.V}, 3], got {tuple(v.shape)}")
        if not np.all(np.isfinite(v)):
            raise RenderError("vertices contain NaN or infinite values")
        return np.ascontiguousarray(v, np.float32)

    # ------------------------------------------------------------------ rendering
    def _draw(self, pos: np.ndarray, nrm: np.ndarray) -> np.ndarray:
        import moderngl

        self.vbo_pos.write(pos.tobytes())
        self.vbo_nrm.write(nrm.tobytes())
        target = self.fbo_ms if self.samples else self.fbo
        target.use()
        target.clear(*self.background, 1.0, depth=1.0)
        self.ctx.enable(moderngl.DEPTH_TEST)
        if self.cull_back_faces:
            self.ctx.enable(moderngl.CULL_FACE)
        else:
            self.ctx.disable(moderngl.CULL_FACE)
        self.vao.render(moderngl.TRIANGLES)
        if self.samples:
            self.ctx.copy_framebuffer(self.fbo, self.fbo_ms)
        self.fbo.read_into(self._readbuf, components=3, alignment=1)
        img = np.frombuffer(self._readbuf, np.uint8).reshape(self.height, self.width, 3)
        return img[::-1]

    def iter_frames(self, vertices: np.ndarray, batch_size: int = 64) -> Iterator[np.ndarray]:
        """Yield one [H, W, 3] uint8 image per frame of ``vertices`` [T, V, 3]."""
        v = self._check(vertices)
        if self.camera is None:
            self.set_camera(Camera.frontal(v[0]))
        elif self._camera_set is not self.camera:
            self.set_camera(self.camera)
        for s in range(0, len(v), batch_size):
            chunk = v[s : s + batch_size]
            normals = self._normals(chunk)
            for pos, nrm in zip(chunk, normals):
                yield self._draw(pos, nrm).copy()

    def render_frames(self, vertices: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """[T, H, W, 3] uint8 images of ``vertices`` [T, V, 3]."""
        v = self._check(vertices)
        out = np.empty((len(v), self.height, self.width, 3), np.uint8)
        for i, img in enumerate(self.iter_frames(v, batch_size)):
            out[i] = img
        return out

    def render(self, vertices: np.ndarray) -> np.ndarray:
        """One [H, W, 3] image of one mesh [V, 3]."""
        return self.render_frames(np.asarray(vertices)[None])[0]

    def release(self) -> None:
        for obj in ("vao", "vbo_pos", "vbo_nrm", "vbo_col", "ibo", "fbo", "fbo_ms", "prog"):
            o = getattr(self, obj, None)
            if o is not None:
                o.release()
        self.ctx.release()

    def __enter__(self) -> "Renderer":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def renderer_for_model(model, size: int | tuple[int, int] = DEFAULT_SIZE, **kwargs) -> Renderer:
    """A renderer for a :class:`~avitalk.flame.FlameModel`: its faces and colours, a camera framed on its face."""
    region = "face" if "face" in model.regions else None
    tmpl = model.v_template.numpy()
    frame_on = tmpl[model.region(region)] if region else tmpl
    cam = Camera.frontal(frame_on)
    return Renderer(model.faces, model.num_vertices, size=size, camera=cam, vertex_colors=model.vertex_colors, **kwargs)
