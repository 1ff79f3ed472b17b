"""Atomic file writes and small JSON helpers.

Every output of the pipeline is written to a temporary file in the same directory and
renamed into place, so a crash or kill never leaves a half-written output behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path


class OutputDirError(OSError):
    """An output directory that cannot be created or written; the message names it."""


def _unwritable(path: Path, directory: Path, e: OSError) -> OutputDirError:
    return OutputDirError(
        f"cannot write {path}: directory {directory} is not writable ({e.strerror or e}). Fix its permissions "
        f"(`chmod u+w {directory}`), free the path if a file sits where a directory should be, or point the "
        "output option (--out, or the results/ directory) somewhere writable.")


def check_writable(path: str | Path, is_dir: bool = False) -> None:
    """Create the directory that will hold `path` (or `path` itself if `is_dir`) and check a file can be
    written there; raise OutputDirError naming it otherwise. Call before hours of work, not after."""
    path = Path(path)
    directory = path if is_dir else path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise _unwritable(path, directory, e) from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _unwritable(path, path.parent, e) from None
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600, and some writers (safetensors) replace the file with a new 0600 one:
        # set the mode a plain open() would give, so outputs are readable like any file.
        _follow_umask(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    """The process umask. Linux reports it in /proc; setting it to read it (the fallback) would
    briefly give files created by another thread (the MLflow one) mode 0666."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _follow_umask(path: Path) -> None:
    """Give `path` (and, for a directory, everything under it) the mode open() / mkdir() would give."""
    umask = _umask()

    def fix(p: Path) -> None:
        m = p.lstat().st_mode
        if stat.S_ISLNK(m):
            return
        full = 0o777 if stat.S_ISDIR(m) or m & 0o111 else 0o666
        os.chmod(p, full & ~umask)

    fix(path)
    if path.is_dir():
        for p in path.rglob("*"):
            fix(p)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to `path`; on success replace `path` with it.

    Its mode, and that of the files written into it, follows the umask like any `mkdir` / `open`
    (mkdtemp creates 0700 and safetensors writes 0600 files, which would hide checkpoints and
    latents from a shared cluster group). On an error nothing is left behind
    and an existing `path` is untouched."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise _unwritable(path, path.parent, e) from None
    try:
        yield tmp
        _follow_umask(tmp)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path):
    with open(path) as f:
        return json.load(f)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_npy(path: Path, mmap: bool, error: type[Exception], rebuild: str):
    """A .npy array (memory-mapped if `mmap`), or `error` naming the file and `rebuild` (how to remake it)."""
    import numpy as np

    if not path.is_file():
        raise error(f"{path} not found: {rebuild}")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise error(f"{path} is unreadable ({e}): the file is truncated or corrupted; {rebuild}") from None
