"""Atomic file writes: write to a temporary file in the target's folder, then rename over the target.

A crash or Ctrl-C mid-write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error remove it.

    ``suffix`` defaults to the target's own suffix, so tools that guess formats from the extension still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=(target.suffix if suffix is None else suffix) + ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp creates 0600; give the file the permissions a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (whole), on error it is removed.

    For writers that fill a folder (``save_pretrained``): a crash never leaves a half-written folder under the name.
    """
    import shutil

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the finished folder gets the usual permissions
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """``np.savez_compressed`` to ``path`` atomically (the file name is kept exactly, no ``.npz`` appended)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


class OutputFolder:
    """A results folder that never loses a file it did not write.

    ``OutputFolder(out, overwrite).staging`` is a hidden folder inside ``out`` (created now, so an unwritable or
    uncreatable ``out`` fails before any work); the writer fills it, then :meth:`commit` moves each file into ``out``
    with an atomic rename (``run.json`` last) and deletes only the outputs that the previous run's ``run.json``
    listed and this run did not write again. Files avitalk did not write are kept, with or without ``overwrite``, and
    an output that would replace one is refused (:meth:`check`); without ``overwrite`` a non-empty ``out`` is refused.
    :meth:`discard` (on failure) removes the staging folder, and ``out`` too when this object created it and it is
    still empty.
    """

    MANIFEST = "run.json"

    def __init__(self, out: str | os.PathLike, overwrite: bool = False):
        from .errors import OutputError

        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise OutputError(f"{self.out}: exists and is not a folder")
        self.created = not self.out.exists()
        if not self.created and not overwrite and any(self.out.iterdir()):
            raise OutputError(f"{self.out}: already exists and is not empty (use --overwrite to replace avitalk's "
                              "outputs there; other files are kept)")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            self.staging = Path(tempfile.mkdtemp(prefix=".avitalk-", suffix=".tmp", dir=self.out))
        except OSError as e:
            raise OutputError(f"{self.out}: cannot write there ({e.strerror or e})") from e

    def previous_outputs(self) -> list[str]:
        """The files the previous run in ``out`` wrote (from its run.json), as plain names inside ``out``."""
        try:
            info = json.loads((self.out / self.MANIFEST).read_text())
            names = [n for v in info.get("outputs", {}).values() for n in ([v] if isinstance(v, str) else v)]
        except (OSError, ValueError, AttributeError, TypeError):
            return []
        return [n for n in names if isinstance(n, str) and n and Path(n).name == n and not n.startswith(".")]

    def check(self, names) -> None:
        """Refuse (OutputError naming it) when an output about to be written would replace a file in ``out`` that the
        previous run's ``run.json`` did not list: a file of the user's, even with ``overwrite``."""
        from .errors import OutputError

        ours = set(self.previous_outputs())
        if ours:
            ours.add(self.MANIFEST)  # a run.json that lists outputs is avitalk's own
        for name in names:
            p = self.out / name
            if not (p.exists() or p.is_symlink()) or name in ours:
                continue
            raise OutputError(f"{p}: a file avitalk did not write is in the way (the previous run.json does not list "
                              "it); move it, or choose another OUT")

    def kept(self) -> list[str]:
        """Files in ``out`` that are not avitalk's (neither written now nor by the previous run)."""
        ours = set(self.previous_outputs()) | {p.name for p in self.staging.iterdir()} | {self.MANIFEST}
        return sorted(p.name for p in self.out.iterdir() if p.name not in ours and p != self.staging)

    def commit(self) -> list[str]:
        """Move the staged files into ``out``; returns the names of the files kept there that avitalk did not write."""
        import shutil

        from .errors import OutputError

        new = sorted(p.name for p in self.staging.iterdir())
        self.check(new)
        stale = [n for n in self.previous_outputs() if n not in new]
        kept = self.kept()
        try:
            (self.out / self.MANIFEST).unlink(missing_ok=True)  # a half-moved folder never carries a run.json
            for name in [n for n in new if n != self.MANIFEST] + [n for n in new if n == self.MANIFEST]:
                dst = self.out / name
                if dst.is_dir() and not dst.is_symlink():
                    raise OutputError(f"{dst}: is a folder in the way of an output file (move it, or choose another OUT)")
                os.replace(self.staging / name, dst)
            for name in stale:
                p = self.out / name
                if p.is_file() or p.is_symlink():
                    p.unlink()
        except OSError as e:
            raise OutputError(f"{self.out}: cannot write there ({e.strerror or e})") from e
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
        return kept

    def discard(self) -> None:
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)
        if self.created:
            with contextlib.suppress(OSError):
                self.out.rmdir()
