"""Loaded at start-up by every Python process of the paper-path rehearsal (test_rehearsal.py puts this
directory on PYTHONPATH). In a torchrun worker (RANK set) it records, through an audit hook, each file
the process creates, replaces, links or deletes under $MAETOK_AUDIT_ROOT: one JSON line
{"rank", "command", "event", "path"} appended to $MAETOK_AUDIT_LOG. The test reads it to check that
only rank 0 writes outputs. Files written by native code appear through the Python-side steps around
them (the temporary file opened, then renamed into place: maetok/utils/io.py, atomic_path)."""

import json
import os
import sys

_ROOT = os.environ.get("MAETOK_AUDIT_ROOT")
_LOG = os.environ.get("MAETOK_AUDIT_LOG")
_RANK = os.environ.get("RANK")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _target(event, args):
    """The path `event` modifies, or None for events that do not write."""
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & _WRITE_FLAGS)
        return path if writes and isinstance(path, (str, bytes, os.PathLike)) else None
    if event in ("os.rename", "os.link", "os.symlink"):
        return args[1]
    if event in ("os.remove", "os.rmdir", "shutil.rmtree"):
        return args[0]
    return None


def _hook(event, args):
    path = _target(event, args)
    if path is None:
        return
    path = os.path.abspath(os.fsdecode(path))
    if not path.startswith(_ROOT + os.sep):
        return
    line = json.dumps({"rank": int(_RANK), "command": sys.argv[1] if len(sys.argv) > 1 else "", "event": event,
                       "path": os.path.relpath(path, _ROOT)}) + "\n"
    fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)  # outside _ROOT: not recorded itself
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


if _ROOT and _LOG and _RANK is not None:
    _ROOT = os.path.abspath(_ROOT)
    sys.addaudithook(_hook)
