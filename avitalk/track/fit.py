"""Fit the head model in use to tracked landmarks: per-frame expression (50), jaw pose (3) and head pose.

**Correspondence** (once per head model): the head is rendered with the renderer's frontal camera, at rest and with
the jaw opened in steps, and the tracker reads each picture; each of the 468 landmarks gets the skin triangle
(mouth interior, teeth, tongue and eyeballs excluded; an inner-lip landmark only on its own lip) and barycentric
weights whose projection follows it through all the pictures (least squares). The landmark then moves with the mesh
whatever the coefficients. The head is its own ground truth here, so the same code serves the stand-in and a user's
converted FLAME.

**Fit** (per clip, all frames at once): landmarks ``L`` (x right, y up, pixels) are modelled as a scaled rotation of
the head's landmark points plus a shift, ``s_t R_t X(beta, psi_t, theta_t) + t_t`` (weak perspective), where
``beta`` is one identity for the clip and ``psi_t``, ``theta_t`` the frame's expression and jaw pose. Least squares
in millimetres in the image plane (the network's depth does not place the head's: it is left out), the inner lip
line weighted most (it says how open the mouth is; the outer contour also carries the talker's lip shape), the face
oval least (where it falls on the mesh depends on the head's turn); L2 priors on expression, jaw and identity and a
penalty on frame-to-frame change; Adam from a closed-form pose (Procrustes, in the image plane) on the head at rest.
With ``FitSettings.lip_contour`` (the refined tracker's fits) an inner-lip landmark is not a fixed skin point but the
lip's edge as seen: the lowest point of the upper lip (the highest of the lower lip) in a narrow strip around it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import TrackerMissing
from ..io import atomic_save_npz

N_LANDMARKS = 468
# MediaPipe's face oval (the silhouette): where a landmark sits on the mesh depends on the head's turn, so these
# steer the pose only lightly
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
             149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)
UPPER_INNER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_INNER_LIP = (95, 88, 178, 87, 14, 317, 402, 318, 324)
JAW_SWEEP = (0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.25)  # radians: the renders the correspondence is fitted over
NOT_SKIN = ("mouth_interior", "teeth", "tongue", "left_eyeball", "right_eyeball")


@dataclass
class FitSettings:
    """Weights of the fit (chosen on rendered SynthTalk, where the true coefficients are known; docs/real-faces.md)."""

    steps: int = 100
    lr: float = 0.05
    depth_weight: float = 0.0  # z residuals count this much of x and y (the network's depth misplaces the head's)
    oval_weight: float = 0.2  # the face-oval landmarks' weight
    # the inner lip line is what says how open the mouth is, whoever the talker: the outer lip contour also carries
    # their lip shape, which the head's identity space may not have (measured on GRID: docs/real-faces.md)
    inner_lip_weight: float = 30.0
    expression_prior: float = 0.2  # per unit coefficient, squared, in mm^2 of mean landmark residual
    jaw_prior: float = 0.001  # per radian squared (opening) x 1000; the jaw's sideways turns 100x more
    shape_prior: float = 0.05
    smooth: float = 0.05  # frame-to-frame change of expression and jaw, squared
    # the inner lip line is where the lip's surface turns away from the camera: seen as the lowest point of the upper
    # lip (highest of the lower) within lip_contour_band_mm of the landmark, not as one fixed point of the skin
    # (on for the refined landmarks, which read the lips' edges where they are; docs/real-faces.md)
    lip_contour: bool = False
    lip_contour_band_mm: float = 1.5  # half-width, across the mouth, of the lip strip a landmark's edge is taken from
    lip_contour_softness_mm: float = 0.3  # the lowest / highest point as a soft minimum / maximum over the strip


@dataclass
class Correspondence:
    """Where each of the 468 landmarks sits on the head: vertex ids [468, 3] and barycentric weights [468, 3]."""

    vertices: np.ndarray
    bary: np.ndarray
    head: str

    def save(self, path: str | Path) -> Path:
        return atomic_save_npz(path, vertices=self.vertices, bary=self.bary, head=np.asarray(self.head))

    @classmethod
    def load(cls, path: str | Path) -> "Correspondence":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["vertices"], z["bary"], str(z["head"]))


def head_key(model) -> str:
    """A short fingerprint of a head model's rest shape and triangles (the correspondence depends on nothing else)."""
    h = hashlib.sha1(model.v_template.numpy().astype(np.float32).tobytes())
    h.update(np.asarray(model.faces, np.int32).tobytes())
    return f"{model.name}-{h.hexdigest()[:10]}"


def _project(v: np.ndarray, renderer) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions [V, 2] (x right, y down) and camera depth [V] of vertices [V, 3] in ``renderer``'s view."""
    v = np.asarray(v, np.float64)
    cam = renderer.camera
    vh = np.c_[v, np.ones(len(v))] @ cam.view().T
    clip = vh @ cam.proj(renderer.width / renderer.height).T
    ndc = clip[:, :2] / clip[:, 3:4]
    px = np.c_[(ndc[:, 0] + 1) / 2 * renderer.width, (1 - ndc[:, 1]) / 2 * renderer.height]
    return px, -vh[:, 2]


def _track_still(landmarker, frame: np.ndarray) -> np.ndarray | None:
    landmarker.reset()
    pts = None
    for _ in range(3):  # later passes start from the previous pass's crop, as in a video
        pts, _, _ = landmarker(frame)
    landmarker.reset()
    return pts


def correspondence(model, landmarker, size: int = 512, sweep: tuple[float, ...] = JAW_SWEEP) -> Correspondence:
    """Where each landmark sits on the head's skin: the triangle and barycentric weights whose projection follows
    the landmark the tracker finds, in the least-squares sense, over renders of the head at rest and with the jaw
    opened through ``sweep`` (radians). Candidates are skin triangles (no mouth interior, teeth, tongue or eyeball)
    facing the camera near the landmark; an inner-lip landmark only takes triangles of its own lip."""
    from ..render.renderer import renderer_for_model

    with torch.no_grad():
        posed = model(jaw_pose=torch.tensor([[j, 0.0, 0.0] for j in sweep], dtype=torch.float32)).numpy()
    with renderer_for_model(model, size=size) as r:
        frames = r.render_frames(posed)
        px = np.stack([_project(v, r)[0] for v in posed])  # [K, V, 2]
    found = [_track_still(landmarker, f) for f in frames]
    if any(p is None for p in found):
        raise TrackerMissing(f"{model.name}: the tracker finds no face on the rendered head; cannot place landmarks")
    L = np.stack(found)[:, :, :2].astype(np.float64)  # [K, 468, 2]
    skip = np.zeros(model.num_vertices, bool)
    for name in NOT_SKIN:
        if name in model.regions:
            skip[model.region(name)] = True
    faces = np.asarray(model.faces, np.int64)
    faces = faces[~skip[faces].any(1)]
    a, b, c = (px[0, faces[:, j]] for j in range(3))
    faces = faces[((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0]) < 0]  # facing the camera (y down)
    on_jaw = model.lbs_weights.numpy()[faces, 2].mean(1) > 0.5
    P = px[:, faces]  # [K, F, 3, 2]
    centroid = P[0].mean(1)
    radius = 0.06 * size
    verts = np.zeros((N_LANDMARKS, 3), np.int64)
    bary = np.zeros((N_LANDMARKS, 3), np.float32)
    for i in range(N_LANDMARKS):
        allowed = ~on_jaw if i in UPPER_INNER_LIP else on_jaw if i in LOWER_INNER_LIP else np.ones(len(faces), bool)
        k = np.flatnonzero(allowed & (np.linalg.norm(centroid - L[0, i], axis=1) < radius))
        if not len(k):
            k = np.flatnonzero(allowed)
            k = k[np.argsort(np.linalg.norm(centroid[k] - L[0, i], axis=1))[:20]]
        # w = (1 - u - v, u, v): the projection is p0 + u (p1 - p0) + v (p2 - p0) in every render, linear in (u, v)
        p0 = P[:, k, 0]  # [K, n, 2]
        A = np.stack([P[:, k, 1] - p0, P[:, k, 2] - p0], -1)  # [K, n, 2, 2]
        y = L[:, i][:, None] - p0  # [K, n, 2]
        AtA = np.einsum("knra,knrb->nab", A, A) + 1e-6 * np.eye(2)
        Aty = np.einsum("knra,knr->na", A, y)
        uv = np.linalg.solve(AtA, Aty[..., None])[..., 0]
        w = np.clip(np.c_[1 - uv.sum(1), uv], 0, None)
        w = w / np.maximum(w.sum(1, keepdims=True), 1e-9)
        proj = np.einsum("knjr,nj->knr", P[:, k], w)
        e = np.sqrt(((proj - L[:, i][:, None]) ** 2).sum(-1).mean(0))
        best = int(np.argmin(e))
        verts[i], bary[i] = faces[k[best]], w[best]
    return Correspondence(verts, bary, head_key(model))


def correspondence_for(model, landmarker, folder: str | Path) -> Correspondence:
    """The head's correspondence, read from ``folder`` when computed before (one file per head model)."""
    path = Path(folder) / f"correspondence-{head_key(model)}.npz"
    if path.is_file():
        return Correspondence.load(path)
    corr = correspondence(model, landmarker)
    corr.save(path)
    return corr


def landmark_weights(settings: FitSettings) -> np.ndarray:
    """[468]: how much each landmark counts in the fit (see the module's text)."""
    w = np.ones(N_LANDMARKS, np.float32)
    w[list(FACE_OVAL)] = settings.oval_weight
    w[list(UPPER_INNER_LIP + LOWER_INNER_LIP)] = settings.inner_lip_weight
    return w


def _procrustes(X: np.ndarray, Y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Weighted similarity transform with ``s R X + t ~ Y`` (Umeyama)."""
    w = w / w.sum()
    mx, my = w @ X, w @ Y
    Xc, Yc = X - mx, Y - my
    S = (Yc * w[:, None]).T @ Xc
    U, D, Vt = np.linalg.svd(S)
    E = np.eye(3)
    E[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ E @ Vt
    s = float(np.trace(np.diag(D) @ E) / (w @ (Xc ** 2).sum(1)))
    return s, R, my - s * R @ mx


def _axis_angle(R: np.ndarray) -> np.ndarray:
    c = np.clip((np.trace(R) - 1) / 2, -1, 1)
    ang = np.arccos(c)
    if ang < 1e-6:
        return np.zeros(3)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / (2 * np.sin(ang))
    return v * ang


def lip_contours(model, corr: Correspondence, band_mm: float) -> tuple[list[int], list[np.ndarray]]:
    """The inner-lip landmarks and, for each, the vertices of its own lip (``lips`` region; jaw-skinned for the lower
    lip) within ``band_mm`` across the mouth (x, at rest) of its point on the head: the candidates for the lip's
    edge."""
    if "lips" not in model.regions:
        return [], []
    v = model.v_template.numpy()
    lips = model.region("lips")
    lower = model.lbs_weights.numpy()[lips, 2] > 0.5
    pts = (v[corr.vertices] * corr.bary[..., None]).sum(1)
    ids, cand = [], []
    for i in UPPER_INNER_LIP + LOWER_INNER_LIP:
        own = lips[lower] if i in LOWER_INNER_LIP else lips[~lower]
        c = own[np.abs(v[own, 0] - pts[i, 0]) <= band_mm / 1000.0]
        if len(c):
            ids.append(i)
            cand.append(c)
    return ids, cand


def fit_landmarks(model, corr: Correspondence, points: np.ndarray, settings: FitSettings | None = None) -> dict:
    """Per-frame FLAME coefficients from landmarks ``points`` [T, 468, 3] (image pixels, y down, z: the network's
    depth; frames without a face already filled in). Returns expression [T, n_exp], jaw_pose [T, 3], global_pose
    [T, 3] (axis-angle), scale [T] (pixels per metre), translation [T, 3], shape [n_shape] and the per-frame
    residual in mm (mean distance over the 468 landmarks, in the image plane)."""
    from smplx.lbs import batch_rodrigues

    st = settings or FitSettings()
    T = len(points)
    obs = torch.as_tensor(np.asarray(points, np.float64) * np.array([1.0, -1.0, -1.0]), dtype=torch.float32)
    edge_ids, cand = lip_contours(model, corr, st.lip_contour_band_mm) if st.lip_contour else ([], [])
    uniq, inv = np.unique(np.concatenate([corr.vertices.reshape(-1), *cand]), return_inverse=True)
    sub = model.subset(uniq)
    split = np.cumsum([N_LANDMARKS * 3] + [len(c) for c in cand])
    edge_vs = [torch.as_tensor(x) for x in np.split(inv, split)[1:-1]]  # each edge landmark's candidates, in sub
    inv = torch.as_tensor(inv[: N_LANDMARKS * 3].reshape(N_LANDMARKS, 3))
    # model y is up: the upper lip's edge is its lowest candidate (softmax of -y), the lower lip's its highest
    edge_sign = [(-1.0 if i in UPPER_INNER_LIP else 1.0) / (st.lip_contour_softness_mm / 1000.0) for i in edge_ids]
    bary = torch.as_tensor(corr.bary)
    weights = landmark_weights(st)
    w = torch.as_tensor(weights)
    axis_w = torch.tensor([1.0, 1.0, st.depth_weight])

    def landmarks_of(exp, jaw, shape, R=None):
        """The head's 468 landmark points [T, 468, 3], turned by R [T, 3, 3] when given (the lips' edges are found
        as seen, so after the turn)."""
        v = sub(exp, jaw, shape)  # [T, U, 3]
        if R is not None:
            v = torch.einsum("tij,tuj->tui", R, v)
        X = (v[:, inv] * bary[None, :, :, None]).sum(2)  # [T, 468, 3]
        if edge_ids:
            edges = []
            for vs, sgn in zip(edge_vs, edge_sign):
                c = v[:, vs]  # [T, n, 3]
                edges.append((torch.softmax(sgn * c[..., 1], dim=1)[..., None] * c).sum(1))
            X = X.clone()
            X[:, edge_ids] = torch.stack(edges, 1)
        return X

    with torch.no_grad():
        rest = landmarks_of(torch.zeros(1, model.n_exp), torch.zeros(1, 3), None)[0].numpy().astype(np.float64)
    # start: the head at rest, turned only in the image plane (x and y only: the network's depth is its least sure
    # axis), then everything is refined together
    init = [_procrustes(np.c_[rest[:, :2], np.zeros(len(rest))], np.c_[o[:, :2], np.zeros(len(o))],
                        weights.astype(np.float64)) for o in obs.numpy().astype(np.float64)]
    log_s = torch.tensor([np.log(s) for s, _, _ in init], dtype=torch.float32).unsqueeze(1).requires_grad_()
    rot = torch.tensor(np.stack([_axis_angle(R) for _, R, _ in init]), dtype=torch.float32).requires_grad_()
    trans = torch.tensor(np.stack([t * np.array([1.0, 1.0, 0.0]) for _, _, t in init]),
                         dtype=torch.float32).requires_grad_()
    exp = torch.zeros(T, model.n_exp, requires_grad=True)
    jaw = torch.zeros(T, 3, requires_grad=True)
    shape = torch.zeros(1, model.n_shape, requires_grad=True)
    opt = torch.optim.Adam([log_s, rot, trans, exp, jaw, shape], lr=st.lr)
    jaw_scale = torch.tensor([st.jaw_prior, 100 * st.jaw_prior, 100 * st.jaw_prior])
    wsum = w.sum()

    def residual_mm():
        P = log_s.exp()[:, :, None] * landmarks_of(exp, jaw, shape.expand(T, -1), batch_rodrigues(rot)) + trans[:, None]
        return (P - obs) / log_s.exp()[:, :, None] * 1000.0  # [T, 468, 3] mm

    for _ in range(st.steps):
        opt.zero_grad()
        r = residual_mm()
        data = ((r ** 2 * axis_w).sum(-1) * w).sum(1) / wsum
        loss = data.mean() + st.expression_prior * (exp ** 2).sum(1).mean() + (jaw ** 2 * jaw_scale).sum(1).mean() \
            * 1000.0 + st.shape_prior * (shape ** 2).sum()
        if T > 1:
            loss = loss + st.smooth * (((exp[1:] - exp[:-1]) ** 2).sum(1).mean()
                                       + 1000.0 * ((jaw[1:] - jaw[:-1]) ** 2).sum(1).mean())
        loss.backward()
        opt.step()
    with torch.no_grad():
        r = residual_mm()
        res = (r[..., :2] ** 2).sum(-1).sqrt().mean(1)
    return {
        "expression": exp.detach().numpy().astype(np.float32),
        "jaw_pose": jaw.detach().numpy().astype(np.float32),
        "global_pose": rot.detach().numpy().astype(np.float32),
        "scale": log_s.detach().exp().numpy().reshape(-1).astype(np.float32),
        "translation": trans.detach().numpy().astype(np.float32),
        "shape": shape.detach().numpy().reshape(-1).astype(np.float32),
        "residual_mm": res.numpy().astype(np.float32),
    }
