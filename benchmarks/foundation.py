"""Foundation benchmarks: offscreen rendering frames/s (ours vs pyrender, same mesh and size) and FLAME forward time.

Each measurement runs in its own process (``python -m benchmarks.foundation NAME``) so the two OpenGL users never
share a process; ``benchmarks.run`` collects them.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import numpy as np

from avitalk.types import MOTION_FPS, SAMPLE_RATE

N_FRAMES = 200
SIZE = 512
REPEATS = 3


def _demo_vertices(n: int = N_FRAMES):
    from avitalk.flame import FlameModel
    from avitalk.flame.standin import demo_sequence

    m = FlameModel.standin()
    seq = demo_sequence(n / MOTION_FPS)
    return m, m.sequence_vertices(seq)


def bench_moderngl() -> dict:
    from avitalk.render import renderer_for_model

    m, verts = _demo_vertices()
    times = []
    with renderer_for_model(m, size=SIZE) as r:
        r.render_frames(verts[:8])  # warm-up (shader compile, first allocations)
        for _ in range(REPEATS):
            t = time.perf_counter()
            r.render_frames(verts)
            times.append(time.perf_counter() - t)
        renderer = r.ctx.info["GL_RENDERER"]
        # the whole `avitalk render` path: render + H.264/AAC encode into an mp4
        import tempfile

        from avitalk.render.video import write_video
        from avitalk.types import Audio

        speech = Audio(np.zeros(int(len(verts) / MOTION_FPS * SAMPLE_RATE), np.float32))
        enc = []
        with tempfile.TemporaryDirectory() as d:
            for _ in range(REPEATS):
                t = time.perf_counter()
                write_video(os.path.join(d, "v.mp4"), r.iter_frames(verts), fps=25, audio=speech)
                enc.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {
        "name": "moderngl (ours)",
        "fps": len(verts) / med,
        "seconds": med,
        "frames": len(verts),
        "gl": renderer,
        "render_and_encode_fps": len(verts) / statistics.median(enc),
    }


def bench_pyrender(mode: str = "animated") -> dict:
    """pyrender on the same mesh, size and camera. ``animated``: a new mesh per frame with smooth shading (how the
    field's render scripts animate); ``animated_flat``: the same with flat normals; ``static_flat``: one mesh drawn
    again and again with the FLAT flag, no animation at all: pyrender's upper bound."""
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import pyrender
    import trimesh

    from avitalk.render.renderer import Camera

    m, verts = _demo_vertices()
    faces = m.faces
    colors = (np.c_[m.vertex_colors, np.ones(len(m.vertex_colors))] * 255).astype(np.uint8)
    cam = Camera.frontal(m.v_template.numpy()[m.region("face")])
    scene = pyrender.Scene(ambient_light=[0.3, 0.3, 0.3], bg_color=[0.93, 0.94, 0.96, 1.0])
    pose = np.linalg.inv(cam.view())
    scene.add(pyrender.PerspectiveCamera(yfov=np.deg2rad(cam.fovy), znear=cam.near, zfar=cam.far), pose=pose)
    scene.add(pyrender.DirectionalLight(intensity=3.0), pose=pose)
    r = pyrender.OffscreenRenderer(SIZE, SIZE)
    smooth = mode == "animated"

    def mesh(v):
        return pyrender.Mesh.from_trimesh(trimesh.Trimesh(v, faces, vertex_colors=colors, process=False), smooth=smooth)

    if mode == "static_flat":
        scene.add(mesh(verts[0]))

        def render_all(vs):
            for _ in vs:
                r.render(scene, flags=pyrender.RenderFlags.FLAT)

    else:

        def render_all(vs):
            node = None
            for v in vs:
                if node is not None:
                    scene.remove_node(node)
                node = scene.add(mesh(v))
                r.render(scene)

    render_all(verts[:8])
    times = []
    for _ in range(REPEATS):
        t = time.perf_counter()
        render_all(verts)
        times.append(time.perf_counter() - t)
    r.delete()
    med = statistics.median(times)
    return {"name": f"pyrender ({mode})", "fps": len(verts) / med, "seconds": med, "frames": len(verts)}


def bench_flame_forward() -> dict:
    import torch

    from avitalk.flame import FlameModel
    from avitalk.types import FlameSequence

    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    out = {}
    models = {"standin": FlameModel.standin()}
    # a model of real FLAME's size (5023 vertices, 300 shape + 100 expression components), random weights
    V = 5023
    st = models["standin"]
    arrays = {
        "v_template": rng.normal(0, 0.05, (V, 3)),
        "faces": rng.integers(0, V, (9976, 3)),
        "shapedirs": rng.normal(0, 1e-3, (V, 3, 300)),
        "exprdirs": rng.normal(0, 1e-3, (V, 3, 100)),
        "posedirs": rng.normal(0, 1e-3, (V, 3, 36)),
        "J_regressor": np.full((5, V), 1.0 / V),
        "lbs_weights": np.full((V, 5), 0.2),
        "parents": np.array([-1, 0, 1, 1, 1]),
    }
    models["flame-size (5023 v, 400 comps)"] = FlameModel(arrays, {"name": "random"})
    seq = FlameSequence(rng.normal(0, 1, (1000, 50)), rng.normal(0, 0.05, (1000, 3)))
    for name, m in models.items():
        m.sequence_vertices(seq, batch_size=250)
        times = []
        for _ in range(REPEATS):
            t = time.perf_counter()
            m.sequence_vertices(seq, batch_size=250)
            times.append(time.perf_counter() - t)
        out[name] = statistics.median(times)
    return {"name": "flame_forward_1000_frames", "seconds": out, "threads": torch.get_num_threads()}


BENCHES = {
    "moderngl": bench_moderngl,
    "pyrender": bench_pyrender,
    "pyrender_flat": lambda: bench_pyrender("animated_flat"),
    "pyrender_static": lambda: bench_pyrender("static_flat"),
    "flame": bench_flame_forward,
}

if __name__ == "__main__":
    print(json.dumps(BENCHES[sys.argv[1]]()))
