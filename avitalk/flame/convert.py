"""Convert official FLAME model files (FLAME 2020 / 2023 / 2023 Open ``.pkl``) into our ``.npz`` format, safely.

The official files are Python-2 pickles that reference ``chumpy`` objects and ``scipy.sparse`` matrices.
We never run ``pickle.load`` with the default class lookup: :class:`RestrictedUnpickler` resolves only

* numpy array / dtype / scalar reconstruction (and ``_codecs.encode``, which such pickles use for bytes),
* ``copyreg._reconstructor`` with ``object`` (how Python-2 pickles rebuild plain instances),
* the builtin containers ``set``, ``frozenset``, ``list``, ``dict``, ``tuple``, ``collections.OrderedDict``,
* ``scipy.sparse`` csc/csr/coo matrices (rebuilt from their stored arrays by us, not by scipy's unpickling),
* any ``chumpy.*`` class, turned into a placeholder whose stored array (``x``) becomes a numpy array, so chumpy
  itself need not be installed.

Every other class (``os.system``, ``builtins.eval``, ...) is refused with a :class:`FlameModelError` before it is
ever looked up, so a malicious file cannot run code.
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import importlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FlameModelError
from .model import save_model_npz


class _ChumpyPlaceholder:
    """Stands in for any chumpy object; keeps the pickled state so the stored array can be read."""

    chumpy_class = "Ch"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_array(self) -> np.ndarray:
        state = getattr(self, "state", None)
        if isinstance(state, dict) and "x" in state:
            return _to_array(state["x"])
        raise FlameModelError(
            f"a chumpy object of class {self.chumpy_class} holds no stored array (a derived expression); "
            "re-save the model with numpy arrays"
        )


class _SparsePlaceholder:
    """Stands in for a scipy.sparse matrix; rebuilt from its stored arrays after loading."""

    sparse_format = "csc"

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def to_array(self) -> np.ndarray:
        import scipy.sparse as sp

        st = getattr(self, "state", None)
        if not isinstance(st, dict):
            raise FlameModelError("a pickled sparse matrix has no readable state")
        shape = tuple(int(s) for s in (st.get("_shape") or st.get("shape") or ()))
        try:
            if self.sparse_format in ("csc", "csr"):
                cls = sp.csc_matrix if self.sparse_format == "csc" else sp.csr_matrix
                m = cls((np.asarray(st["data"]), np.asarray(st["indices"]), np.asarray(st["indptr"])), shape=shape)
            else:
                m = sp.coo_matrix((np.asarray(st["data"]), (np.asarray(st["row"]), np.asarray(st["col"]))), shape=shape)
        except (KeyError, ValueError, TypeError) as e:
            raise FlameModelError(f"a pickled {self.sparse_format} matrix is malformed ({e})") from e
        return np.asarray(m.toarray())


def _make_placeholder(base: type, attr: str, value: str) -> type:
    return type(f"{base.__name__}_{value}", (base,), {attr: value})


_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}
_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only build numpy arrays, plain containers, sparse matrices and chumpy stand-ins."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: C901 - a flat allow-list reads best
        if (module, name) in _NUMPY_ALLOWED:
            # numpy 2 moved numpy.core to numpy._core (old pickles name the former, new ones the latter)
            real = module.replace("numpy.core", "numpy._core") if hasattr(np, "_core") else module.replace("numpy._core", "numpy.core")
            return getattr(importlib.import_module(real), name)
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return copyreg._reconstructor
        if module in ("__builtin__", "builtins") and name in _BUILTINS:
            return _BUILTINS[name]
        if module == "_codecs" and name == "encode":  # how protocol-2 pickles written by Python 3 store bytes
            return codecs.encode
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module.startswith("scipy.sparse") and name in ("csc_matrix", "csr_matrix", "coo_matrix"):
            return _make_placeholder(_SparsePlaceholder, "sparse_format", name[:3])
        if module == "chumpy" or module.startswith("chumpy."):
            return _make_placeholder(_ChumpyPlaceholder, "chumpy_class", name)
        raise FlameModelError(f"refusing to unpickle {module}.{name}: not a class a FLAME model file may contain")


def safe_load_pickle(path: str | os.PathLike) -> Any:
    """Load a FLAME-style pickle through :class:`RestrictedUnpickler` and turn placeholders into numpy arrays."""
    p = Path(path)
    if not p.is_file():
        raise FlameModelError(f"{p}: no such file")
    data = p.read_bytes()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except FlameModelError as e:
        raise FlameModelError(f"{p}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as e:
        raise FlameModelError(f"{p}: not a readable FLAME pickle ({type(e).__name__}: {e})") from e
    try:
        return _resolve(obj)
    except FlameModelError as e:
        raise FlameModelError(f"{p}: {e}") from None


def _to_array(x: Any) -> np.ndarray:
    if isinstance(x, (_ChumpyPlaceholder, _SparsePlaceholder)):
        return x.to_array()
    return np.asarray(x)


def _resolve(obj: Any) -> Any:
    if isinstance(obj, (_ChumpyPlaceholder, _SparsePlaceholder)):
        return obj.to_array()
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): _resolve(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


# ------------------------------------------------------------------------------------------------ conversion
SMPLX_SHAPE_DIM = 300  # FLAME's shapedirs stack 300 identity components before the expression ones


def flame_dict_to_arrays(d: dict[str, Any], n_shape: int | None = None) -> dict[str, np.ndarray]:
    """Map the keys of an official FLAME dict to our arrays (shapes checked by the model validator)."""
    need = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table")
    missing = [k for k in need if k not in d]
    if missing:
        raise FlameModelError(f"not a FLAME model: missing {', '.join(missing)} (keys: {', '.join(sorted(map(str, d)))})")
    v = np.asarray(d["v_template"], np.float64)
    V = v.shape[0]
    sd = np.asarray(d["shapedirs"], np.float64)
    if sd.ndim == 2:
        sd = sd[:, :, None] if sd.shape == (V, 3) else sd.reshape(V, 3, -1)
    K = sd.shape[-1]
    if n_shape is None:
        # the rule smplx uses: 300 identity components when there are at least 400, else 10 + 10
        n_shape = SMPLX_SHAPE_DIM if K >= 400 else min(10, K)
    if not 0 <= n_shape <= K:
        raise FlameModelError(f"n_shape={n_shape} outside [0, {K}]")
    posedirs = np.asarray(d["posedirs"], np.float64)
    if posedirs.ndim == 2:
        posedirs = posedirs.reshape(V, 3, -1)
    parents = np.asarray(d["kintree_table"]).astype(np.int64)[0].copy()
    parents[0] = -1
    return {
        "v_template": v.astype(np.float32),
        "faces": np.asarray(d["f"]).astype(np.int32),
        "shapedirs": sd[:, :, :n_shape].astype(np.float32),
        "exprdirs": sd[:, :, n_shape:].astype(np.float32),
        "posedirs": posedirs.astype(np.float32),
        "J_regressor": np.asarray(d["J_regressor"], np.float32),
        "lbs_weights": np.asarray(d["weights"], np.float32),
        "parents": parents,
    }


def convert_flame_pkl(
    pkl_path: str | os.PathLike,
    out_path: str | os.PathLike,
    masks_path: str | os.PathLike | None = None,
    n_shape: int | None = None,
    name: str | None = None,
) -> Path:
    """Convert an official FLAME ``.pkl`` (and optionally ``FLAME_masks.pkl``) into our ``.npz`` format."""
    d = safe_load_pickle(pkl_path)
    if not isinstance(d, dict):
        raise FlameModelError(f"{pkl_path}: expected a dict of arrays, got {type(d).__name__}")
    try:
        arrays = flame_dict_to_arrays(d, n_shape)
    except FlameModelError as e:
        raise FlameModelError(f"{pkl_path}: {e}") from None
    if masks_path is not None:
        masks = safe_load_pickle(masks_path)
        if not isinstance(masks, dict):
            raise FlameModelError(f"{masks_path}: expected a dict of vertex-index arrays")
        for k, idx in masks.items():
            arrays[f"mask__{k}"] = np.asarray(idx).astype(np.int64).reshape(-1)
    meta = {
        "name": name or Path(pkl_path).stem,
        "source": f"converted from {Path(pkl_path).name}" + (f" + {Path(masks_path).name}" if masks_path else ""),
        "n_shape": int(arrays["shapedirs"].shape[-1]),
        "n_exp": int(arrays["exprdirs"].shape[-1]),
    }
    return save_model_npz(out_path, arrays, meta)
