"""Folders and files only the engine's user may read: the data dir and what the engine writes
in it (engine.json, servers.json, engine.lock), and its folder under the system's temp dir
(Ray's session files, with their logs and sockets).

As root, the embedded PostgreSQL runs as the system user `pgserver` (engine/embedded.py),
which must pass through the data dir to its own folder in it: then others may pass through
(mode 0711) but not list it, and every file in it is still 0600 or a 0700 folder.
"""

from __future__ import annotations

import json
import os
import tempfile

from actors.errors import OperatorError

TMP_DIR = os.path.join(tempfile.gettempdir(), f"billing-{os.getuid()}")


def folder(path: str, mode: int = 0o700) -> str:
    """`path`, made (with its parents) or tightened to `mode`; refused if another user owns
    it."""
    path = os.path.abspath(path)
    os.makedirs(path, mode=mode, exist_ok=True)
    st = os.stat(path)
    if st.st_uid != os.geteuid():
        raise OperatorError(f"{path} belongs to another user (uid {st.st_uid}): not used")
    if st.st_mode & 0o777 != mode:
        os.chmod(path, mode)
    return path


def data_dir(path: str) -> str:
    """A data dir: this user's alone, others passing through only where the embedded
    PostgreSQL runs as another user (as root)."""
    return folder(path, 0o711 if os.geteuid() == 0 else 0o700)


def tmp_folder() -> str:
    """This user's folder under the system's temp dir (TMPDIR), shared by the engines this
    user runs, private to them."""
    return folder(TMP_DIR)


def write_json(path: str, value) -> None:
    """Write `value` to `path` (0600) at once: a reader sees the old file or the new one."""
    data_dir(os.path.dirname(path))
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file left by an older run keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    os.replace(path + ".tmp", path)


def open_file(path: str) -> int:
    """A descriptor of `path` for reading and writing, made 0600 if new."""
    data_dir(os.path.dirname(path))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd
