"""The stand-in head: a procedurally generated, deterministic head in FLAME's format.

Real FLAME files are licence-gated; this head makes every part of avitalk work without them. It is built from
code alone (no outside data) and has what a talking face needs:

* a closed surface (~6.7k vertices): skull, face, neck, with a nose, brow ridges, cheekbones, chin and lips;
* a mouth that really opens: the lips are split along a slit (separate upper and lower lip vertices) whose hole
  continues into a closed mouth cavity (lip lining darkening into the throat) holding upper and lower teeth and a
  tongue (open shells, added last so the other vertex ids never moved); the lower face, the lower teeth and the
  tongue are skinned to the jaw joint, so a jaw rotation (positive x) opens the mouth, the lips as a smooth lens;
* eyes: slits with lids that open around an eyeball on FLAME's left/right eye joints (closed sockets behind);
* 5 joints as in FLAME (global, neck, jaw, left eye, right eye) and a J_regressor that places them;
* 10 identity components and 50 expression components, orthonormalised in vertex space.

Expression semantics
--------------------
Component ``k`` is built from the named deformation field ``EXPRESSION_NAMES[k]`` (facial action units, their
left-minus-right variants, then visemes) by Gram-Schmidt in that order: component ``k`` is the part of field ``k``
orthogonal to fields ``0..k-1``, so the first components are the action units themselves and later ones carry
what is new in each field. ``au_to_expression`` ([50 fields, 50 coefficients], upper-triangular in field order)
gives the exact coefficients of each field at full strength: ``exprdirs @ au_to_expression[i] == field_i``, so
data generation builds an expression from action-unit activations ``a`` as ``a @ au_to_expression``.
A coefficient vector with one field at strength 1 is a strong but plausible activation (e.g. blink = eyes shut).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..types import MOTION_FPS

# --------------------------------------------------------------------------------------------------- layout
N_COLS = 72
Y_EYE = 0.0225
Y_MOUTH = -0.045
EYE_X = 0.032  # eye centre, |x|
EYE_HALF_W = 0.0145
MOUTH_HALF_W = 0.025
JAW_Y, NECK_Y = -0.015, -0.105

EXPRESSION_NAMES: tuple[str, ...] = (
    # facial action units (FACS numbering in the name)
    "AU01_inner_brow_raise", "AU02_outer_brow_raise", "AU04_brow_lower", "AU43_eyes_closed",
    "AU05_upper_lid_raise", "AU06_cheek_raise", "AU07_lid_tighten", "AU09_nose_wrinkle",
    "AU10_upper_lip_raise", "AU12_lip_corner_pull", "AU14_dimpler", "AU15_lip_corner_depress",
    "AU16_lower_lip_depress", "AU17_chin_raise", "AU18_lip_pucker", "AU20_lip_stretch",
    "AU22_lip_funneler", "AU23_lip_tighten", "AU24_lip_press", "AU25_lips_part",
    "AU26_jaw_drop_soft", "AU28_lip_suck", "AU34_cheek_puff", "AU38_nostril_dilate",
    "AU11_nasolabial_deepen", "AU13_sharp_lip_pull", "AU27_mouth_stretch",
    # left-minus-right variants (positive = the subject's left side acts more)
    "ASYM_brow_raise", "ASYM_lip_corner_pull", "ASYM_eye_close", "ASYM_brow_lower", "ASYM_cheek_raise",
    "ASYM_upper_lip_raise", "ASYM_lip_corner_depress", "ASYM_lower_lip_depress", "ASYM_nose_wrinkle",
    "MOUTH_shift_left",
    # finer local controls (the lip shapes that visemes combine, and a few more facial motions)
    "LIP_upper_protrude", "ASYM_lid_tighten", "LIP_lower_tuck", "LIP_corner_forward", "LIP_round",
    "CHIN_shift_left", "NOSE_tip_down", "BROW_inner_squeeze", "JAW_clench", "LID_upper_droop_outer",
    "NOSE_wing_raise", "THROAT_raise", "LIP_upper_curl",
)
# Visemes as combinations of the fields above (the jaw rotation that goes with each is set by data generation).
VISEMES: dict[str, dict[str, float]] = {
    "VIS_AA": {"AU25_lips_part": 0.8, "AU27_mouth_stretch": 0.3, "AU26_jaw_drop_soft": 0.5},
    "VIS_EE": {"AU20_lip_stretch": 0.7, "AU12_lip_corner_pull": 0.2, "AU25_lips_part": 0.4},
    "VIS_IH": {"AU25_lips_part": 0.5, "AU20_lip_stretch": 0.3},
    "VIS_OH": {"AU18_lip_pucker": 0.5, "AU22_lip_funneler": 0.4, "AU25_lips_part": 0.6, "LIP_round": 0.5},
    "VIS_OO": {"AU18_lip_pucker": 1.0, "LIP_round": 0.6},
    "VIS_FV": {"LIP_lower_tuck": 1.0, "AU10_upper_lip_raise": 0.3},
    "VIS_MBP": {"AU24_lip_press": 0.8, "AU28_lip_suck": 0.3},
    "VIS_TH": {"AU25_lips_part": 0.4, "LIP_lower_tuck": 0.3},
    "VIS_SZ": {"AU25_lips_part": 0.3, "AU20_lip_stretch": 0.5, "AU10_upper_lip_raise": 0.2},
    "VIS_SH": {"AU22_lip_funneler": 0.8, "LIP_upper_protrude": 0.3, "AU18_lip_pucker": 0.4},
    "VIS_L": {"AU25_lips_part": 0.5, "AU10_upper_lip_raise": 0.2},
    "VIS_WR": {"AU18_lip_pucker": 0.8, "LIP_round": 0.8, "AU23_lip_tighten": 0.3},
}
SHAPE_NAMES: tuple[str, ...] = (
    "head_width", "head_height", "face_depth", "jaw_width", "chin_length",
    "nose_size", "eye_spacing", "mouth_width", "brow_ridge", "cheek_fullness",
)
assert len(EXPRESSION_NAMES) == 50 and len(set(EXPRESSION_NAMES)) == 50
assert all(k in EXPRESSION_NAMES for combo in VISEMES.values() for k in combo)


# ------------------------------------------------------------------------------------------------ helpers
def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _gauss(p: np.ndarray, c: tuple[float, float, float | None], s: tuple[float, float, float | None]) -> np.ndarray:
    """Anisotropic Gaussian weight of points p [N,3] around c (a None z-centre ignores depth)."""
    d = ((p[:, 0] - c[0]) / s[0]) ** 2 + ((p[:, 1] - c[1]) / s[1]) ** 2
    if c[2] is not None and s[2] is not None:
        d = d + ((p[:, 2] - c[2]) / s[2]) ** 2
    return np.exp(-0.5 * d)


def _sym(fn: Callable[[float], np.ndarray]) -> np.ndarray:
    """Sum of a field built for the left side (+1) and the right side (-1)."""
    return fn(1.0) + fn(-1.0)


def _asym(fn: Callable[[float], np.ndarray]) -> np.ndarray:
    """Left minus right."""
    return fn(1.0) - fn(-1.0)


@dataclass
class _Mesh:
    """Growing mesh with per-vertex attributes used to build fields, weights, masks and colours."""

    v: list[np.ndarray] = field(default_factory=list)
    f: list[np.ndarray] = field(default_factory=list)
    attrs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    n: int = 0

    def add(self, pos: np.ndarray, **attrs: np.ndarray | float | str) -> np.ndarray:
        pos = np.asarray(pos, np.float64).reshape(-1, 3)
        k = len(pos)
        idx = np.arange(self.n, self.n + k)
        self.v.append(pos)
        defaults = {"part": "skin", "side": 0.0, "bag_t": 0.0, "bag_u": 0.0, "eye": 0.0}
        defaults.update(attrs)
        for key, val in defaults.items():
            self.attrs.setdefault(key, [])
        for key in self.attrs:
            val = defaults.get(key, 0.0)
            arr = np.full(k, val, dtype=object if isinstance(val, str) else np.float64) if np.ndim(val) == 0 else np.asarray(val)
            self.attrs[key].append(arr)
        self.n += k
        return idx

    def tri(self, t: np.ndarray) -> None:
        self.f.append(np.asarray(t, np.int64).reshape(-1, 3))

    def arrays(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        return (
            np.concatenate(self.v),
            np.concatenate(self.f) if self.f else np.zeros((0, 3), np.int64),
            {k: np.concatenate(v) for k, v in self.attrs.items()},
        )


# ------------------------------------------------------------------------------------------ head surface
_PROFILE_Y = np.array([0.035, 0.010, -0.015, -0.040, -0.060, -0.075, -0.088, -0.100, -0.115, -0.170])
_PROFILE = {  # half width (x), front depth (+z), back depth (-z) of each horizontal cross-section
    "W": np.array([0.074, 0.073, 0.070, 0.064, 0.058, 0.050, 0.045, 0.044, 0.045, 0.050]),
    "Df": np.array([0.088, 0.086, 0.083, 0.080, 0.077, 0.074, 0.062, 0.045, 0.038, 0.040]),
    "Db": np.array([0.100, 0.097, 0.092, 0.082, 0.070, 0.060, 0.055, 0.052, 0.052, 0.055]),
}
_DOME_TOP = 0.09  # crown height above the equator at y = 0.035


def _ring_levels() -> np.ndarray:
    dome_a = np.linspace(0.0, np.arccos((0.0525 + 0.0025 - 0.035) / _DOME_TOP), 12)[1:]
    dome = 0.035 + _DOME_TOP * np.cos(dome_a)  # from near the crown down to just above the face rings
    face = 0.0525 - 0.0025 * np.arange(0, 52)  # 2.5 mm rings from the forehead to below the chin (-0.075)
    neck = np.concatenate([np.linspace(-0.079, -0.111, 9), np.linspace(-0.12, -0.17, 5)])
    y = np.concatenate([dome, face, neck])
    assert np.all(np.diff(y) < 0)
    assert np.any(np.isclose(y, Y_EYE)) and np.any(np.isclose(y, Y_MOUTH))
    return y


def _pchip(x: np.ndarray, y: np.ndarray, xq: np.ndarray) -> np.ndarray:
    """Monotone piecewise-cubic Hermite interpolation (PCHIP: Fritsch-Carlson slopes as a weighted harmonic mean of
    the neighbouring secants, Moler's one-sided end slopes) of increasing knots ``x``, at ``xq`` inside them. In numpy,
    in the same order of operations as SciPy's ``PchipInterpolator`` (the stand-in head is bit for bit what it was
    when SciPy built it: tests/test_standin.py), because importing ``scipy.interpolate`` alone took 0.46 s of a cold
    start that now builds the head for the lip seal."""
    hk = x[1:] - x[:-1]
    mk = (y[1:] - y[:-1]) / hk
    smk = np.sign(mk)
    flat = (smk[1:] != smk[:-1]) | (mk[1:] == 0) | (mk[:-1] == 0)
    w1, w2 = 2 * hk[1:] + hk[:-1], hk[1:] + 2 * hk[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        whmean = (w1 / mk[:-1] + w2 / mk[1:]) / (w1 + w2)
    dk = np.zeros_like(y)
    dk[1:-1][~flat] = 1.0 / whmean[~flat]

    def edge(h0, h1, m0, m1):
        d = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(d) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(d) > abs(3.0 * m0):
            return 3.0 * m0
        return d

    dk[0], dk[-1] = edge(hk[0], hk[1], mk[0], mk[1]), edge(hk[-1], hk[-2], mk[-1], mk[-2])
    t = (dk[:-1] + dk[1:] - 2 * mk) / hk
    coef = (y[:-1], dk[:-1], (mk - dk[:-1]) / hk - t, t / hk)  # power basis in (xq - x_k), lowest order first
    k = np.clip(np.searchsorted(x, xq, side="right") - 1, 0, len(x) - 2)
    s = xq - x[k]
    out, z = np.zeros_like(xq), np.ones_like(xq)
    for c in coef:
        out = out + c[k] * z
        z = z * s
    return out


def _section(y: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for k, vals in _PROFILE.items():
        below = _pchip(_PROFILE_Y[::-1], vals[::-1], np.clip(y, -0.17, 0.035))
        eq = vals[0]
        dome = eq * np.sqrt(np.clip(1 - ((y - 0.035) / _DOME_TOP) ** 2, 0, 1))
        out[k] = np.where(y > 0.035, dome, below)
    return out


def _columns() -> np.ndarray:
    u = -np.pi + 2 * np.pi * np.arange(N_COLS) / N_COLS
    return u - 0.62 * np.sin(u)  # denser at the front (phi = 0), column N_COLS/2 exactly at phi = 0


def _face_relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Forward (+z) relief of the face: nose, brows, eye sockets, cheekbones, lips, chin."""
    p = np.stack([x, y, np.zeros_like(x)], 1)
    g = lambda cx, cy, sx, sy: _gauss(p, (cx, cy, None), (sx, sy, None))  # noqa: E731
    # nose: a ridge growing from the bridge to the tip, then the columella falling back to the lip
    t = np.clip((0.03 - y) / 0.038, 0, 1)  # 0 at the bridge (y=.03), 1 at the tip (y=-.008)
    height = np.where(y > -0.008, 0.004 + 0.020 * t**1.6, 0.024 * np.clip(1 - (-0.008 - y) / 0.013, 0, 1) ** 1.5)
    width = 0.0065 + 0.005 * t
    nose = height * np.exp(-0.5 * (x / width) ** 2) * (y < 0.036)
    wings = 0.008 * (g(0.0125, -0.012, 0.0055, 0.005) + g(-0.0125, -0.012, 0.0055, 0.005))
    rel = nose + wings
    rel += 0.0045 * (g(0.03, 0.047, 0.02, 0.0055) + g(-0.03, 0.047, 0.02, 0.0055))  # brow ridges
    rel -= 0.007 * (g(EYE_X, 0.025, 0.015, 0.010) + g(-EYE_X, 0.025, 0.015, 0.010))  # eye sockets
    rel += 0.005 * (g(0.047, 0.0, 0.014, 0.012) + g(-0.047, 0.0, 0.014, 0.012))  # cheekbones
    rel += 0.004 * g(0.0, -0.046, 0.024, 0.018)  # muzzle
    rel += 0.0052 * g(0.0, Y_MOUTH + 0.0045, 0.016, 0.0035)  # upper lip
    rel += 0.0058 * g(0.0, Y_MOUTH - 0.0055, 0.015, 0.0045)  # lower lip
    rel -= 0.0018 * g(0.0, Y_MOUTH, 0.02, 0.0012)  # the line where the lips meet
    rel -= 0.0015 * g(0.0, -0.0305, 0.0035, 0.006)  # philtrum
    rel -= 0.003 * g(0.0, -0.061, 0.018, 0.004)  # groove under the lower lip
    rel += 0.0075 * g(0.0, -0.074, 0.014, 0.009)  # chin
    return rel


def _build_head(m: _Mesh) -> dict[str, Any]:
    ys = _ring_levels()
    phis = _columns()
    sec = _section(ys)
    R, C = len(ys), N_COLS
    Y = np.repeat(ys[:, None], C, 1)
    PH = np.repeat(phis[None, :], R, 0)
    W = sec["W"][:, None]
    D = np.where(np.cos(PH) > 0, sec["Df"][:, None], sec["Db"][:, None])
    p = np.where(np.cos(PH) > 0, 2.5, 2.2)
    rho = (np.abs(np.sin(PH) / W) ** p + np.abs(np.cos(PH) / D) ** p) ** (-1 / p)
    X = rho * np.sin(PH)
    Z = rho * np.cos(PH)
    front = np.clip(np.cos(PH), 0, 1) ** 1.5 * (Y > -0.1)
    Z = Z + front * _face_relief(X, Y)
    pos = np.stack([X, Y, Z], -1).reshape(-1, 3)
    side = np.sign(np.round(Y.reshape(-1) - Y_MOUTH, 6))
    grid = m.add(pos, part="skin", side=side).reshape(R, C)
    top = m.add(np.array([[0.0, 0.035 + _DOME_TOP, -0.005]]), part="skin", side=1.0)[0]
    bz = (sec["Df"][-1] - sec["Db"][-1]) / 2
    bottom = m.add(np.array([[0.0, ys[-1], bz]]), part="skin", side=-1.0)[0]
    return {"grid": grid, "top": top, "bottom": bottom, "ys": ys, "phis": phis}


def _grid_faces(m: _Mesh, grid: np.ndarray, top: int, bottom: int, lower_copy: dict[tuple[int, int], int]) -> None:
    R, C = grid.shape

    def vid(r: int, c: int, from_below: bool) -> int:
        c %= C
        if from_below and (r, c) in lower_copy:
            return lower_copy[(r, c)]
        return int(grid[r, c])

    tris = []
    for r in range(R - 1):
        for c in range(C):
            a, b = vid(r, c, True), vid(r, c + 1, True)  # ring r seen from the quad below it
            a2, b2 = vid(r + 1, c, False), vid(r + 1, c + 1, False)
            tris.append((a, a2, b))
            tris.append((b, a2, b2))
    for c in range(C):
        tris.append((top, int(grid[0, c]), int(grid[0, (c + 1) % C])))
        tris.append((int(grid[R - 1, (c + 1) % C]), int(grid[R - 1, c]), bottom))
    m.tri(np.array(tris))


def _slit(m: _Mesh, grid: np.ndarray, ring: int, cols: list[int], part_up: str, part_lo: str) -> tuple[list[int], dict]:
    """Split ring ``ring`` between the corner columns cols[0] and cols[-1]; returns the hole loop and the copies."""
    pos, _, _ = m.arrays()
    inner = cols[1:-1]
    lower = m.add(pos[grid[ring, inner]], part=part_lo, side=-1.0)
    lower_copy = {(ring, c): int(i) for c, i in zip(inner, lower)}
    for c in inner:
        m.attrs["part"][0][grid[ring, c]] = part_up
        m.attrs["side"][0][grid[ring, c]] = 1.0
    loop = [int(grid[ring, cols[0]])] + [int(grid[ring, c]) for c in inner] + [int(grid[ring, cols[-1]])]
    loop += [lower_copy[(ring, c)] for c in reversed(inner)]
    return loop, lower_copy


def _bag(m: _Mesh, loop: list[int], rings: list[tuple[float, float, float, float]], part: str, sides: np.ndarray) -> np.ndarray:
    """Extrude the hole loop inward: each ring is (t, shrink_x, open_y, depth); closed by a cap. Returns new ids."""
    pos, _, _ = m.arrays()
    P = pos[loop]
    cx, cy = P[:, 0].mean(), P[:, 1].mean()
    prev = np.asarray(loop)
    made = []
    for t, shrink, open_y, depth in rings:
        q = P.copy()
        q[:, 0] = cx + (P[:, 0] - cx) * shrink
        q[:, 1] = P[:, 1] + sides * open_y
        q[:, 2] = P[:, 2] - depth
        cur = m.add(q, part=part, side=sides, bag_t=t, bag_u=P[:, 0])
        n = len(loop)
        i = np.arange(n)
        j = (i + 1) % n
        m.tri(np.stack([prev[j], prev[i], cur[i]], 1))
        m.tri(np.stack([prev[j], cur[i], cur[j]], 1))
        prev = cur
        made.append(cur)
    last = pos[loop].mean(0)
    cap = m.add(np.array([[cx, cy, last[2] - rings[-1][3] - 0.004]]), part=part, side=0.0, bag_t=1.0, bag_u=0.0)[0]
    n = len(loop)
    i = np.arange(n)
    m.tri(np.stack([prev[(i + 1) % n], prev[i], np.full(n, cap)], 1))
    return np.concatenate(made + [np.array([cap])])


def _surface(m: _Mesh, pts: np.ndarray, outward: np.ndarray, **attrs) -> np.ndarray:
    """A grid surface [R, C, 3] whose triangles face ``outward`` (a direction per point); returns ids [R, C]."""
    R, C, _ = pts.shape
    flat = {k: (np.asarray(v).reshape(-1) if np.ndim(v) else v) for k, v in attrs.items()}
    ids = m.add(pts.reshape(-1, 3), **flat).reshape(R, C)
    tris = []
    for r in range(R - 1):
        for c in range(C - 1):
            a, b, d, e = ids[r, c], ids[r, c + 1], ids[r + 1, c], ids[r + 1, c + 1]
            for t in ((a, d, b), (b, d, e)):
                p = pts.reshape(-1, 3)[np.array(t) - ids[0, 0]]
                n = np.cross(p[1] - p[0], p[2] - p[0])
                if n @ outward.reshape(-1, 3)[t[0] - ids[0, 0]] < 0:
                    t = (t[0], t[2], t[1])
                tris.append(t)
    m.tri(np.array(tris))
    return ids


TOOTH_W = 0.0042  # width of one tooth along the arch (incisors are wider, molars hidden in the dark)


def _teeth(m: _Mesh, lip_front: float) -> None:
    """Upper and lower teeth: two arched bands behind the lips (upper in front of the lower: an overbite), each a front
    face and a biting edge; tooth gaps and the gum line are in the colours (``bag_t`` holds the position along the
    arch in tooth widths, ``bag_u`` 0 at the edge and 1 at the gum)."""
    n = 29
    theta = np.linspace(-1.25, 1.25, n)
    for part, edge_y, height, inset, sign in (("teeth_up", Y_MOUTH - 0.0021, 0.0115, 0.0050, 1.0),
                                              ("teeth_lo", Y_MOUTH - 0.0012, 0.0085, 0.0068, -1.0)):
        rx, rz = 0.0215, 0.017
        x = rx * np.sin(theta)
        z = lip_front - inset - rz * (1 - np.cos(theta))
        out = np.stack([np.sin(theta) * rz / rx, np.zeros(n), np.cos(theta)], 1)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        rows = np.array([0.0, 0.12, 0.55, 1.0])  # edge, just above it, the middle, the gum line
        pts = np.stack([np.stack([x, np.full(n, edge_y + sign * height * r), z], 1) for r in rows])
        pts[0, :, 2] -= 0.0006  # a rounded biting edge
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts[1], axis=0), axis=1))])
        along = (arc - arc[-1] / 2) / TOOTH_W
        _surface(m, pts, np.repeat(out[None], len(rows), 0), part=part, bag_t=np.repeat(along[None], len(rows), 0),
                 bag_u=np.repeat(rows[:, None], n, 1), side=sign)
        # the biting edge seen from above / below: a narrow strip going back 2.5 mm
        back = pts[0] - out * 0.0025
        edge = np.stack([back, pts[0]])
        _surface(m, edge, np.tile([0.0, -sign, 0.0], (2, n, 1)), part=part, bag_t=np.repeat(along[None], 2, 0),
                 bag_u=0.0, side=sign)


def _tongue(m: _Mesh, lip_front: float) -> None:
    """A tongue resting on the floor of the mouth: the top half of a flattened ellipsoid behind the lower teeth."""
    n_lat, n_lon = 7, 17
    centre = np.array([0.0, Y_MOUTH - 0.0115, lip_front - 0.033])
    radii = np.array([0.019, 0.0075, 0.026])
    lat = np.linspace(0.0, np.pi / 2 * 0.98, n_lat)  # 0 at the rim, up to near the top
    lon = np.linspace(-np.pi / 2, np.pi / 2, n_lon)  # the front half (the back is in the dark throat)
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    unit = np.stack([np.cos(LA) * np.sin(LO), np.sin(LA), np.cos(LA) * np.cos(LO)], -1)
    pts = centre + unit * radii
    normals = unit / radii
    _surface(m, pts, normals, part="tongue", bag_t=np.cos(LA) * np.cos(LO), side=-1.0)


def _eyeball(m: _Mesh, center: np.ndarray, radius: float, eye: float) -> np.ndarray:
    n_lat, n_lon = 14, 18
    # latitude measured from the front pole (+z), so the iris sits around the pole
    th = np.pi * (np.arange(1, n_lat) / n_lat)
    ph = 2 * np.pi * np.arange(n_lon) / n_lon
    TH, PH = np.meshgrid(th, ph, indexing="ij")
    pts = np.stack([np.sin(TH) * np.cos(PH), np.sin(TH) * np.sin(PH), np.cos(TH)], -1).reshape(-1, 3)
    pts = np.concatenate([[[0, 0, 1.0]], pts, [[0, 0, -1.0]]])
    ang = np.arccos(np.clip(pts[:, 2], -1, 1))
    ids = m.add(center + radius * pts, part="eyeball", eye=eye, bag_t=ang)
    front, back = ids[0], ids[-1]
    ring = ids[1:-1].reshape(n_lat - 1, n_lon)
    tris = []
    for c in range(n_lon):
        c2 = (c + 1) % n_lon
        tris.append((front, ring[0, c], ring[0, c2]))
        for r in range(n_lat - 2):
            tris.append((ring[r, c], ring[r + 1, c], ring[r, c2]))
            tris.append((ring[r, c2], ring[r + 1, c], ring[r + 1, c2]))
        tris.append((back, ring[-1, c2], ring[-1, c]))
    m.tri(np.array(tris))
    return ids


# ------------------------------------------------------------------------------------------------ building
@dataclass
class _Head:
    v: np.ndarray
    faces: np.ndarray
    a: dict[str, np.ndarray]
    regions: dict[str, np.ndarray]
    joints: np.ndarray
    J_regressor: np.ndarray
    weights: np.ndarray
    colors: np.ndarray
    lid_open: dict[float, dict[str, np.ndarray]]  # per eye: 'up', 'lo' (opening displacements), 'lo_on_up'


def _lid_profile(x: np.ndarray, eye: float, height: float, skew: float) -> np.ndarray:
    u = np.clip((x - eye * EYE_X) / EYE_HALF_W, -1, 1)
    u_in = u * eye  # negative toward the nose
    return height * (1 - u**2) ** 0.7 * (1 + skew * u_in)


def _build() -> _Head:
    m = _Mesh()
    head = _build_head(m)
    grid, ys = head["grid"], head["ys"]
    pos0, _, _ = m.arrays()
    r_eye = int(np.argmin(np.abs(ys - Y_EYE)))
    r_mouth = int(np.argmin(np.abs(ys - Y_MOUTH)))

    def span(ring: int, x0: float, x1: float) -> list[int]:
        xs = pos0[grid[ring], 0]
        zs = pos0[grid[ring], 2]
        cols = [c for c in range(N_COLS) if zs[c] > 0 and x0 <= xs[c] <= x1]
        return sorted(cols, key=lambda c: xs[c])

    lower_copy: dict[tuple[int, int], int] = {}
    # ---- mouth slit + cavity
    mouth_cols = span(r_mouth, -MOUTH_HALF_W - 1e-4, MOUTH_HALF_W + 1e-4)
    mouth_loop, lc = _slit(m, grid, r_mouth, mouth_cols, "lip_up", "lip_lo")
    lower_copy.update(lc)
    # ---- eye slits (before opening the lids)
    eye_loops = {}
    for eye in (1.0, -1.0):
        cols = span(r_eye, eye * EYE_X - EYE_HALF_W - 1e-4, eye * EYE_X + EYE_HALF_W + 1e-4)
        loop, lc = _slit(m, grid, r_eye, cols, "lid_up", "lid_lo")
        lower_copy.update(lc)
        eye_loops[eye] = loop
    _grid_faces(m, grid, head["top"], head["bottom"], lower_copy)

    # ---- open the eyes: lids move apart around the slit, with a fall-off that keeps rings ordered
    pos, _, a = m.arrays()
    lid_open = {}
    for eye in (1.0, -1.0):
        up_h = _lid_profile(pos[:, 0], eye, 0.0052, 0.15)
        lo_h = _lid_profile(pos[:, 0], eye, 0.0030, -0.2)
        near = (np.abs(pos[:, 0] - eye * EYE_X) < EYE_HALF_W + 0.002) & (pos[:, 2] > 0) & (a["part"] != "eyeball")
        dy = pos[:, 1] - Y_EYE
        is_up = (dy > 1e-9) | (a["part"] == "lid_up")
        is_lo = (dy < -1e-9) | (a["part"] == "lid_lo")
        f_up = np.where(near & is_up, np.clip(1 - dy / 0.013, 0, 1), 0.0)
        f_lo = np.where(near & is_lo, np.clip(1 + dy / 0.009, 0, 1), 0.0)
        lid_open[eye] = {"up": up_h * f_up, "lo": lo_h * f_lo, "lo_on_up": lo_h * f_up}
    pos_all = np.concatenate(m.v)
    for eye in (1.0, -1.0):
        lid = lid_open[eye]
        pos_all[:, 1] += lid["up"] - lid["lo"]
        pos_all[:, 2] += 0.0015 * lid["up"] / 0.0052  # the upper lid bulges a little over the eyeball
    m.v = [pos_all]

    # ---- cavities behind the slits
    mouth_sides = np.concatenate(m.attrs["side"])[mouth_loop]
    mouth_sides[0] = mouth_sides[len(mouth_cols) - 1] = 0.0
    _bag(
        m, mouth_loop,
        [(0.2, 0.97, 0.003, 0.003), (0.45, 0.93, 0.0085, 0.008), (0.7, 0.82, 0.012, 0.019), (1.0, 0.6, 0.011, 0.034)],
        "mouth", mouth_sides,
    )
    eye_centres = {}
    for eye, loop in eye_loops.items():
        sides = np.concatenate(m.attrs["side"])[loop]
        n_up = (len(loop) + 2) // 2
        sides[0] = sides[n_up - 1] = 0.0
        _bag(m, loop, [(0.5, 0.85, 0.0015, 0.004), (1.0, 0.5, 0.0, 0.014)], "socket", sides)
        lp = np.concatenate(m.v)[loop]
        r_ball = 0.0118
        front_z = lp[:, 2].mean() - 0.0008
        centre = np.array([lp[:, 0].mean(), lp[:, 1].mean() + 0.0008, front_z - r_ball])
        eye_centres[eye] = (centre, _eyeball(m, centre, r_ball, eye))

    lip_front = float(np.concatenate(m.v)[mouth_loop][:, 2].max())
    _teeth(m, lip_front)
    _tongue(m, lip_front)

    v, faces, a = m.arrays()
    V = len(v)
    part = a["part"]
    for lid in lid_open.values():  # vertices added after the lids opened (cavities, eyeballs) do not move with them
        for k in lid:
            lid[k] = np.concatenate([lid[k], np.zeros(V - len(lid[k]))])
    # ---- joints and regressor: pairs of symmetric vertices whose midpoint is the joint
    def ring_pair(y: float) -> tuple[int, int]:
        r = int(np.argmin(np.abs(ys - y)))
        xs = v[grid[r], 0]
        return int(grid[r, int(np.argmax(xs))]), int(grid[r, int(np.argmin(xs))])

    J_reg = np.zeros((5, V))
    for j, y in ((0, ys[-1]), (1, NECK_Y), (2, JAW_Y)):
        i1, i2 = ring_pair(y)
        J_reg[j, [i1, i2]] = 0.5
    for j, eye in ((3, 1.0), (4, -1.0)):
        ids = eye_centres[eye][1]
        J_reg[j, ids] = 1.0 / len(ids)
    joints = J_reg @ v

    # ---- skinning weights
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    zj = joints[2, 2]
    z_front = MOUTH_HALF_W + 0.06
    y_b = Y_MOUTH + (JAW_Y - Y_MOUTH) * np.clip((z_front - z) / (z_front - zj), 0, 1)
    width = 0.0012 + 0.018 * np.clip((np.abs(x) - MOUTH_HALF_W) / 0.035, 0, 1)
    w_jaw = _smoothstep(-1.0, 1.0, (y_b - y) / width)
    w_jaw *= _smoothstep(zj - 0.01, zj + 0.025, z) * _smoothstep(-0.14, -0.10, y)
    # the lips and their lining open as a smooth lens: from the corners (half with the jaw) to the middle (upper lip
    # with the head, lower lip with the jaw), and the skin next to the lip line follows the same taper
    taper = _smoothstep(MOUTH_HALF_W * 1.02, MOUTH_HALF_W * 0.45, np.abs(np.where(part == "mouth", a["bag_u"], x)))
    lens = np.where(a["side"] > 0, 0.5 - 0.5 * taper, np.where(a["side"] < 0, 0.5 + 0.5 * taper, 0.5))
    near_line = np.exp(-0.5 * ((y - Y_MOUTH) / 0.003) ** 2) * (np.abs(x) < MOUTH_HALF_W * 1.02) * (part == "skin") * (z > 0.05)
    skin_lens = np.where(y > Y_MOUTH, 0.5 - 0.5 * taper, 0.5 + 0.5 * taper)
    w_jaw = w_jaw * (1 - near_line) + skin_lens * near_line
    bag = part == "mouth"
    w_jaw = np.where(np.isin(part, ["lip_up", "lip_lo"]) | bag, lens, w_jaw)
    corner = np.isin(np.arange(V), [mouth_loop[0], mouth_loop[len(mouth_cols) - 1]])
    w_jaw = np.where(corner, 0.5, w_jaw)
    w_jaw = np.where(part == "teeth_up", 0.0, np.where(np.isin(part, ["teeth_lo", "tongue"]), 1.0, w_jaw))
    w_global = _smoothstep(-0.125, -0.165, y) * (part == "skin")
    w_jaw = np.minimum(w_jaw, 1 - w_global)
    weights = np.zeros((V, 5))
    weights[:, 0] = w_global
    weights[:, 2] = w_jaw
    eyeball = part == "eyeball"
    weights[eyeball] = 0.0
    weights[eyeball & (a["eye"] > 0), 3] = 1.0
    weights[eyeball & (a["eye"] < 0), 4] = 1.0
    weights[:, 1] = 1.0 - weights.sum(1)

    # ---- regions
    inner = np.isin(part, ["teeth_up", "teeth_lo", "tongue"])  # inside the mouth: in mouth_interior, not lips or face
    frontal = (z > 0.02) & ~eyeball & ~inner
    lips = ((np.abs(x) < MOUTH_HALF_W + 0.004) & (np.abs(y - Y_MOUTH) < 0.011) & frontal) | (bag & (a["bag_t"] <= 0.2))
    eye_reg = lambda e: (  # noqa: E731
        (np.abs(x - e * EYE_X) < 0.024) & (y > Y_EYE - 0.014) & (y < Y_EYE + 0.02) & frontal
    ) | (eyeball & (a["eye"] == e)) | ((part == "socket") & (np.sign(x) == e))
    forehead = (y > 0.04) & (y < 0.1) & (np.abs(x) < 0.055) & (z > 0.03) & ~eyeball
    face = (y > -0.095) & (y < 0.09) & (np.abs(np.arctan2(x, z)) < np.deg2rad(70)) & ~eyeball & (z > 0) & ~inner
    nose = (np.abs(x) < 0.02) & (y > -0.022) & (y < 0.035) & (z > 0.07)
    regions = {
        "lips": np.flatnonzero(lips),
        "eye_region": np.flatnonzero(eye_reg(1.0) | eye_reg(-1.0)),
        "left_eye_region": np.flatnonzero(eye_reg(1.0)),
        "right_eye_region": np.flatnonzero(eye_reg(-1.0)),
        "forehead": np.flatnonzero(forehead),
        "face": np.flatnonzero(face | lips | bag),
        "nose": np.flatnonzero(nose),
        "left_eyeball": np.flatnonzero(eyeball & (a["eye"] > 0)),
        "right_eyeball": np.flatnonzero(eyeball & (a["eye"] < 0)),
        "mouth_interior": np.flatnonzero(bag | np.isin(part, ["teeth_up", "teeth_lo", "tongue"])),
        "teeth": np.flatnonzero(np.isin(part, ["teeth_up", "teeth_lo"])),
        "tongue": np.flatnonzero(part == "tongue"),
        "neck": np.flatnonzero((y < -0.1) & ~face),
        "scalp": np.flatnonzero((y > 0.075) | ((y > 0.0) & (z < -0.02))),
    }

    colors = _colors(v, a, part)
    return _Head(v, faces, a, regions, joints, J_reg, weights, colors, lid_open)


def _colors(v: np.ndarray, a: dict[str, np.ndarray], part: np.ndarray) -> np.ndarray:
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    skin = np.array([0.86, 0.68, 0.58])
    col = np.tile(skin, (len(v), 1))
    # hair cap on the skull
    phi = np.arctan2(x, z)
    hairline = 0.072 + 0.03 * np.clip((np.abs(phi) - 0.6) / 1.0, 0, 1) - 0.06 * np.clip((np.abs(phi) - 1.7) / 0.6, 0, 1)
    hair = _smoothstep(-0.008, 0.008, y - hairline) * (part == "skin")
    col = col * (1 - hair[:, None]) + np.array([0.30, 0.21, 0.15]) * hair[:, None]
    # eyebrows: arcs above the eyes
    for e in (1.0, -1.0):
        u = (x - e * (EYE_X - 0.002)) / 0.021
        arc_y = 0.0445 + 0.004 * (1 - u**2)
        brow = np.exp(-0.5 * ((y - arc_y) / 0.0038) ** 2) * (z > 0.05) * (part == "skin")
        brow *= np.clip(1.2 - np.abs(u), 0, 1) ** 0.5 * (np.abs(u) < 1.2)
        col = col * (1 - 0.9 * brow[:, None]) + 0.9 * brow[:, None] * np.array([0.30, 0.21, 0.15])
    # lips (vermilion)
    d_up = (y - Y_MOUTH) / 0.0075
    d_lo = (Y_MOUTH - y) / 0.0095
    u = x / (MOUTH_HALF_W + 0.002)
    lip = np.where(y >= Y_MOUTH, np.clip(1 - d_up**2 - u**4, 0, 1), np.clip(1 - d_lo**2 - u**4, 0, 1))
    lip = _smoothstep(0.0, 0.25, lip) * (z > 0.05) * np.isin(part, ["skin", "lip_up", "lip_lo"])
    col = col * (1 - lip[:, None]) + lip[:, None] * np.array([0.74, 0.40, 0.40])
    # nostrils
    for e in (1.0, -1.0):
        n = np.exp(-0.5 * (((x - e * 0.0065) / 0.0018) ** 2 + ((y + 0.018) / 0.0012) ** 2)) * (z > 0.085)
        col = col * (1 - 0.7 * n[:, None]) + 0.7 * n[:, None] * np.array([0.45, 0.27, 0.24])
    # mouth interior: the lining darkens with depth into the throat
    bag = part == "mouth"
    t = a["bag_t"]
    lining = np.array([0.62, 0.30, 0.32])
    throat = np.array([0.12, 0.03, 0.04])
    k = np.clip((t - 0.2) / 0.6, 0, 1)[:, None]
    col[bag] = (lining * (1 - k) + throat * k)[bag]
    # teeth: ivory, a little darker at the gaps between teeth and toward the sides of the arch, pink at the gum line
    teeth = np.isin(part, ["teeth_up", "teeth_lo"])
    along, up = a["bag_t"], a["bag_u"]
    gap = np.abs(np.cos(np.pi * along))  # 1 at a tooth's centre... 0 at a gap (the arch starts on a gap)
    shade = (0.80 + 0.2 * gap ** 0.5) * np.clip(1.15 - 0.09 * np.abs(along), 0.35, 1)
    tooth = np.array([0.95, 0.93, 0.86])[None] * shade[:, None]
    gum = np.array([0.80, 0.42, 0.44]) * np.clip(1.15 - 0.09 * np.abs(along), 0.35, 1)[:, None]
    g = _smoothstep(0.6, 0.95, up)[:, None]
    col[teeth] = (tooth * (1 - g) + gum * g)[teeth]
    # tongue: pink at the tip and edges, darker toward the back
    tongue = part == "tongue"
    col[tongue] = (np.array([0.42, 0.14, 0.16])[None] * (1 - a["bag_t"][:, None] ** 2)
                   + np.array([0.80, 0.43, 0.45])[None] * a["bag_t"][:, None] ** 2)[tongue]
    col[part == "socket"] = np.array([0.25, 0.15, 0.15])
    # eyeballs: sclera, iris, pupil (bag_t holds the angle from the front pole)
    ball = part == "eyeball"
    ang = a["bag_t"]
    col[ball] = np.array([0.94, 0.93, 0.9])
    col[ball & (ang < 0.42)] = np.array([0.32, 0.45, 0.58])
    col[ball & (ang < 0.2)] = np.array([0.04, 0.04, 0.05])
    return np.clip(col, 0, 1)


# ------------------------------------------------------------------------------------------- deformations
def _fields(h: _Head) -> np.ndarray:
    """The 50 named expression deformation fields [50, V, 3] (full-strength activations)."""
    v, a = h.v, h.a
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    part = a["part"]
    V = len(v)
    skin = ~np.isin(part, ["eyeball", "teeth_up", "teeth_lo", "tongue"])  # teeth and tongue move with the jaw only
    front = (z > 0.0) & skin
    side = a["side"]  # +1 above the mouth line (upper lip), -1 below (lower lip and jaw)
    upper = (side > 0) | ((side == 0) & (y > Y_MOUTH))
    lower = ~upper
    in_bag = part == "mouth"
    bag_fade = np.where(in_bag, np.clip(1 - a["bag_t"] * 1.5, 0, 1), 1.0)  # lip lining follows the lips

    def vec(dx=0.0, dy=0.0, dz=0.0) -> np.ndarray:
        return np.stack([np.broadcast_to(dx, (V,)), np.broadcast_to(dy, (V,)), np.broadcast_to(dz, (V,))], 1).astype(float)

    def g(cx, cy, sx, sy, cz=None, sz=None) -> np.ndarray:
        return _gauss(v, (cx, cy, cz), (sx, sy, sz)) * front

    lip_w = lambda sx=0.02: g(0.0, Y_MOUTH, sx, 0.011) * bag_fade  # noqa: E731
    up_lip = lambda sx=0.02: lip_w(sx) * upper  # noqa: E731
    lo_lip = lambda sx=0.02: lip_w(sx) * lower  # noqa: E731
    corner = lambda s, sx=0.011, sy=0.011: g(s * MOUTH_HALF_W, Y_MOUTH, sx, sy) * bag_fade  # noqa: E731

    def brow(e: float, cx: float, sx: float = 0.012) -> np.ndarray:
        return g(e * cx, 0.05, sx, 0.016) * (y > Y_EYE + 0.004)

    def upper_lid(e: float) -> np.ndarray:  # 1 at the upper lid margin, fading up to the brow
        return h.lid_open[e]["up"] / 0.0052

    def lower_lid(e: float) -> np.ndarray:
        return h.lid_open[e]["lo"] / 0.0030

    def eye_close(e: float) -> np.ndarray:
        # the upper lid comes down, the lower lid rises half its opening: they meet below the old slit line
        lid = h.lid_open[e]
        return np.stack([np.zeros(V), -(lid["up"] + 0.5 * lid["lo_on_up"]) + 0.5 * lid["lo"], np.zeros(V)], 1)

    F: dict[str, np.ndarray] = {}
    F["AU01_inner_brow_raise"] = _sym(lambda e: vec(0, 0.006, 0) * brow(e, 0.013)[:, None])
    F["AU02_outer_brow_raise"] = _sym(lambda e: vec(0, 0.006, 0) * brow(e, 0.046)[:, None])
    F["AU04_brow_lower"] = _sym(
        lambda e: (vec(-e * 0.0025, -0.0045, 0.0012)) * brow(e, 0.026, 0.02)[:, None]
    )
    F["AU05_upper_lid_raise"] = _sym(  # the lid fold retracts up and back: more white above the iris
        lambda e: vec(0, 0.0022, -0.0012) * (upper_lid(e) ** 0.5 * (1 - 0.5 * upper_lid(e)))[:, None]
    )
    F["AU06_cheek_raise"] = _sym(
        lambda e: vec(0, 0.0035, 0.0018) * g(e * 0.038, -0.004, 0.014, 0.012)[:, None]
        + vec(0, 0.0015, 0) * lower_lid(e)[:, None]
    )
    F["AU07_lid_tighten"] = _sym(lambda e: vec(0, 0.0024, 0.0004) * lower_lid(e)[:, None])
    F["AU09_nose_wrinkle"] = _sym(
        lambda e: vec(0, 0.003, 0.0008) * g(e * 0.011, 0.008, 0.006, 0.01)[:, None]
    ) + vec(0, 0.0012, 0) * up_lip(0.012)[:, None]
    F["AU10_upper_lip_raise"] = vec(0, 0.0035, 0.0006) * up_lip(0.018)[:, None]
    F["AU12_lip_corner_pull"] = _sym(lambda e: vec(e * 0.004, 0.0055, -0.003) * corner(e, 0.012, 0.012)[:, None])
    F["AU14_dimpler"] = _sym(lambda e: vec(-e * 0.0015, 0.0005, -0.0035) * corner(e, 0.008, 0.009)[:, None])
    F["AU15_lip_corner_depress"] = _sym(lambda e: vec(e * 0.001, -0.005, 0) * corner(e, 0.011, 0.013)[:, None])
    F["AU16_lower_lip_depress"] = vec(0, -0.004, 0.0012) * lo_lip(0.014)[:, None]
    F["AU17_chin_raise"] = vec(0, 0.0035, 0.0015) * (g(0.0, -0.068, 0.018, 0.014) * lower)[:, None]
    F["AU18_lip_pucker"] = (vec(0, 0, 0.006) - np.stack([x * 0.3, np.zeros(V), np.zeros(V)], 1)) * lip_w(0.02)[:, None]
    F["AU20_lip_stretch"] = _sym(lambda e: vec(e * 0.005, -0.001, -0.001) * corner(e, 0.013, 0.01)[:, None])
    margin = np.exp(-0.5 * ((y - Y_MOUTH) / 0.004) ** 2)  # 1 on the lip margins, fading over the vermilion
    F["AU22_lip_funneler"] = (vec(0, 0, 0.0045) * (lip_w(0.016) * margin)[:, None]) + _sym(
        lambda e: vec(-e * 0.0015, 0, 0.001) * corner(e, 0.006, 0.006)[:, None]
    )
    # the vermilion thins: the outer lip borders move toward the lip line, the lips press back a little
    F["AU23_lip_tighten"] = vec(0, -0.0018, -0.0008) * (up_lip(0.022) * (1 - margin))[:, None] + vec(
        0, 0.0018, -0.0008
    ) * (lo_lip(0.022) * (1 - margin))[:, None]
    F["AU24_lip_press"] = (
        vec(0, -0.0016, 0) * (up_lip(0.02) * margin)[:, None]
        + vec(0, 0.0016, 0) * (lo_lip(0.02) * margin)[:, None]
        + vec(0, 0, 0.0012) * (g(0.0, Y_MOUTH, 0.02, 0.012) * (1 - margin))[:, None]
    )
    F["AU25_lips_part"] = vec(0, 0.0022, 0) * (up_lip(0.013) * margin)[:, None] + vec(0, -0.0028, 0) * (
        lo_lip(0.013) * margin
    )[:, None]
    F["AU26_jaw_drop_soft"] = vec(0, -0.003, -0.0005) * (g(0.0, -0.07, 0.03, 0.025) * lower)[:, None]
    F["AU28_lip_suck"] = vec(0, 0, -0.0045) * (lip_w(0.018) * margin**0.5)[:, None]
    F["AU43_eyes_closed"] = _sym(eye_close)
    F["AU34_cheek_puff"] = _sym(lambda e: vec(e * 0.005, 0, 0.002) * g(e * 0.045, -0.04, 0.016, 0.018)[:, None])
    F["AU38_nostril_dilate"] = _sym(lambda e: vec(e * 0.0022, 0, 0) * g(e * 0.0125, -0.013, 0.005, 0.005)[:, None])
    F["AU11_nasolabial_deepen"] = _sym(
        lambda e: vec(0, 0.0015, -0.002) * g(e * 0.021, -0.026, 0.006, 0.01)[:, None]
    )
    F["AU13_sharp_lip_pull"] = _sym(lambda e: vec(e * 0.001, 0.004, 0.001) * corner(e, 0.006, 0.006)[:, None])
    F["AU27_mouth_stretch"] = vec(0, -0.005, 0) * (lo_lip(0.02) + g(0.0, -0.075, 0.025, 0.02) * lower)[:, None] + vec(
        0, 0.0015, 0
    ) * up_lip(0.02)[:, None]
    F["ASYM_brow_raise"] = _asym(lambda e: vec(0, 0.006, 0) * (brow(e, 0.013) + brow(e, 0.046))[:, None] * 0.7)
    F["ASYM_lip_corner_pull"] = _asym(lambda e: vec(e * 0.004, 0.0055, -0.003) * corner(e, 0.012, 0.012)[:, None])
    F["ASYM_eye_close"] = _asym(eye_close)
    F["ASYM_brow_lower"] = _asym(lambda e: vec(-e * 0.0025, -0.0045, 0.0012) * brow(e, 0.026, 0.02)[:, None])
    F["ASYM_cheek_raise"] = _asym(lambda e: vec(0, 0.0035, 0.0018) * g(e * 0.038, -0.004, 0.014, 0.012)[:, None])
    F["ASYM_upper_lip_raise"] = _asym(lambda e: vec(0, 0.0035, 0.0006) * (up_lip(0.012) * g(e * 0.012, Y_MOUTH, 0.01, 0.02))[:, None])
    F["ASYM_lip_corner_depress"] = _asym(lambda e: vec(e * 0.001, -0.005, 0) * corner(e, 0.011, 0.013)[:, None])
    F["ASYM_lower_lip_depress"] = _asym(
        lambda e: vec(0, -0.004, 0.0012) * (lo_lip(0.012) * g(e * 0.012, Y_MOUTH, 0.01, 0.02))[:, None]
    )
    F["ASYM_nose_wrinkle"] = _asym(lambda e: vec(0, 0.003, 0.0008) * g(e * 0.011, 0.008, 0.006, 0.01)[:, None])
    F["MOUTH_shift_left"] = vec(0.004, 0, 0) * g(0.0, Y_MOUTH, 0.028, 0.016)[:, None] * bag_fade[:, None]
    # finer local controls
    F["LIP_upper_protrude"] = vec(0, 0.0005, 0.0035) * up_lip(0.016)[:, None]
    F["ASYM_lid_tighten"] = _asym(lambda e: vec(0, 0.0024, 0.0004) * lower_lid(e)[:, None])
    F["LIP_lower_tuck"] = vec(0, 0.0025, -0.0035) * (lo_lip(0.016) * margin)[:, None]
    F["LIP_corner_forward"] = _sym(lambda e: vec(0, 0, 0.003) * corner(e, 0.007, 0.007)[:, None])
    F["LIP_round"] = np.stack([-x * 0.3, np.zeros(V), np.zeros(V)], 1) * lip_w(0.02)[:, None]
    F["CHIN_shift_left"] = vec(0.003, 0, 0) * (g(0.0, -0.07, 0.02, 0.02) * lower)[:, None]
    F["NOSE_tip_down"] = vec(0, -0.002, -0.0005) * g(0.0, -0.01, 0.006, 0.006)[:, None] * (z > 0.09)[:, None]
    F["BROW_inner_squeeze"] = _sym(lambda e: vec(-e * 0.003, 0, 0.0005) * brow(e, 0.01, 0.008)[:, None])
    F["JAW_clench"] = _sym(lambda e: vec(e * 0.003, 0, 0) * _gauss(v, (e * 0.058, -0.06, None), (0.008, 0.015, None))[:, None])
    F["LID_upper_droop_outer"] = _sym(
        lambda e: vec(0, -0.0025, 0) * (upper_lid(e) * np.clip((e * (x - e * EYE_X)) / EYE_HALF_W + 0.3, 0, 1))[:, None]
    )
    F["NOSE_wing_raise"] = _sym(lambda e: vec(0, 0.002, 0.0005) * g(e * 0.0125, -0.013, 0.005, 0.005)[:, None])
    F["LIP_upper_curl"] = vec(0, 0.0015, 0.002) * (up_lip(0.014) * margin)[:, None] - vec(0, 0, 0.001) * (
        up_lip(0.014) * (1 - margin)
    )[:, None]
    F["THROAT_raise"] = vec(0, 0.003, 0) * (_gauss(v, (0.0, -0.1, None), (0.025, 0.012, None)) * (z > 0.02) * lower)[:, None]
    out = np.stack([F[n] for n in EXPRESSION_NAMES])
    out[:, part == "eyeball"] = 0.0
    return out


def _shape_fields(h: _Head) -> np.ndarray:
    v = h.v
    x, y, z = v[:, 0], v[:, 1], v[:, 2]
    V = len(v)
    zeros = np.zeros(V)
    front = np.clip(z / 0.09, 0, 1)
    face = _gauss(v, (0.0, -0.01, None), (0.05, 0.06, None)) * (z > 0)
    lowf = _smoothstep(0.0, -0.08, y) * (z > -0.02)
    F = [
        np.stack([x * 0.08, zeros, zeros], 1),
        np.stack([zeros, (y - 0.0) * 0.06, zeros], 1),
        np.stack([zeros, zeros, z * 0.06 * front], 1),
        np.stack([x * 0.12 * lowf, zeros, zeros], 1),
        np.stack([zeros, 0.006 * _gauss(v, (0.0, -0.08, None), (0.03, 0.02, None)) * -1, zeros], 1),
        np.stack([zeros, zeros, 0.005 * _gauss(v, (0.0, -0.005, None), (0.01, 0.02, None)) * (z > 0.05)], 1),
        np.stack([np.sign(x) * 0.003 * _gauss(v, (0.0, Y_EYE, None), (0.05, 0.015, None)) * (z > 0), zeros, zeros], 1),
        np.stack([x * 0.15 * _gauss(v, (0.0, Y_MOUTH, None), (0.03, 0.015, None)) * (z > 0), zeros, zeros], 1),
        np.stack([zeros, zeros, 0.004 * _gauss(v, (0.0, 0.047, None), (0.04, 0.008, None)) * (z > 0)], 1),
        np.stack([np.sign(x) * 0.004 * _gauss(v, (0.045, -0.02, None), (0.03, 0.03, None)) * (np.abs(x) > 0) + np.sign(x) * 0.004 * _gauss(v, (-0.045, -0.02, None), (0.03, 0.03, None)), zeros, 0.002 * face], 1),
    ]
    return np.stack(F)


def _orthonormalise(fields: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gram-Schmidt (QR) in vertex space. Returns dirs [V,3,K] (= Q * scale), mapping M [K fields, K coeffs]
    with fields[i] == dirs @ M[i], and the relative residual norms R_kk / ||field_k||."""
    K = fields.shape[0]
    A = fields.reshape(K, -1).T  # [3V, K]
    Q, R = np.linalg.qr(A)
    sgn = np.sign(np.diag(R))
    sgn[sgn == 0] = 1
    Q, R = Q * sgn, R * sgn[:, None]
    rel = np.abs(np.diag(R)) / np.maximum(np.linalg.norm(A, axis=0), 1e-12)
    dirs = (Q * scale).T.reshape(K, -1, 3).transpose(1, 2, 0)
    M = (R / scale).T
    return dirs, M, rel


EXPRESSION_SCALE = 0.02  # vertex-space norm (metres) of one unit of each expression coefficient
SHAPE_SCALE = 0.05


@functools.lru_cache(maxsize=1)
def standin_arrays() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and meta of the stand-in head in our FLAME format (cached; treat as read-only)."""
    h = _build()
    exprdirs, M, rel = _orthonormalise(_fields(h), EXPRESSION_SCALE)
    shapedirs, _, _ = _orthonormalise(_shape_fields(h), SHAPE_SCALE)
    vis = np.zeros((len(VISEMES), len(EXPRESSION_NAMES)))
    for i, combo in enumerate(VISEMES.values()):
        for name, act in combo.items():
            vis[i, EXPRESSION_NAMES.index(name)] = act
    M = np.concatenate([M, vis @ M])  # rows: the 50 fields, then the visemes
    V = len(h.v)
    arrays: dict[str, np.ndarray] = {
        "v_template": h.v.astype(np.float32),
        "faces": h.faces.astype(np.int32),
        "shapedirs": shapedirs.astype(np.float32),
        "exprdirs": exprdirs.astype(np.float32),
        "posedirs": np.zeros((V, 3, 36), np.float32),
        "J_regressor": h.J_regressor.astype(np.float32),
        "lbs_weights": h.weights.astype(np.float32),
        "parents": np.array([-1, 0, 1, 1, 1], np.int64),
        "vertex_colors": h.colors.astype(np.float32),
        "au_to_expression": M.astype(np.float32),
    }
    arrays.update({f"mask__{k}": v.astype(np.int64) for k, v in h.regions.items()})
    meta = {
        "name": "avitalk-standin",
        "source": "procedurally generated by avitalk.flame.standin (no outside data)",
        "n_shape": len(SHAPE_NAMES),
        "n_exp": len(EXPRESSION_NAMES),
        "shape_names": list(SHAPE_NAMES),
        "expression_names": list(EXPRESSION_NAMES),
        "au_names": list(EXPRESSION_NAMES) + list(VISEMES),
        "visemes": VISEMES,
        "expression_residual": [round(float(r), 4) for r in rel],
        "expression_scale_m": EXPRESSION_SCALE,
    }
    return arrays, meta


AU_NAMES: tuple[str, ...] = EXPRESSION_NAMES + tuple(VISEMES)


def expression_from_activations(activations: dict[str, float] | np.ndarray) -> np.ndarray:
    """Expression coefficients [50] (or [T, 50]) from named activations of fields and visemes (``AU_NAMES``),
    given as a dict or as an array [..., len(AU_NAMES)]."""
    M = standin_arrays()[0]["au_to_expression"]
    if isinstance(activations, dict):
        a = np.zeros(len(AU_NAMES), np.float32)
        for k, val in activations.items():
            if k not in AU_NAMES:
                raise KeyError(f"unknown action unit / viseme {k!r}")
            a[AU_NAMES.index(k)] = val
        return a @ M
    return np.asarray(activations, np.float32) @ M


def demo_sequence(seconds: float = 4.0, fps: float = MOTION_FPS):
    """A hand-made clip on the stand-in head: the jaw opens and closes (syllable rhythm, about 4 Hz) for the first
    half, then a smile grows with a blink in the middle. Used by the demo and the render tests."""
    from ..types import FlameSequence

    T = max(2, int(round(seconds * fps)))
    t = np.arange(T) / fps
    half = seconds / 2
    talk = t < half
    jaw = np.where(talk, 0.16 * np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 0.8, 0.0)
    smile = _smoothstep(half, half + 0.6, t)
    blink = np.exp(-0.5 * ((t - (half + 0.9)) / 0.06) ** 2)
    acts = np.zeros((T, len(AU_NAMES)), np.float32)
    acts[:, AU_NAMES.index("AU25_lips_part")] = jaw / 0.16 * 0.5
    acts[:, AU_NAMES.index("AU12_lip_corner_pull")] = smile
    acts[:, AU_NAMES.index("AU06_cheek_raise")] = 0.8 * smile
    acts[:, AU_NAMES.index("AU43_eyes_closed")] = blink
    expression = expression_from_activations(acts)
    jaw_pose = np.zeros((T, 3), np.float32)
    jaw_pose[:, 0] = jaw
    return FlameSequence(expression, jaw_pose, fps=fps, meta={"source": "avitalk.flame.standin.demo_sequence"})
