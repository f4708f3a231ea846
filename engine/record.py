"""The data dir's record of the engine `up` runs there (`engine.json`, 0600): its Ray address
and namespace, for another process to attach to; its process, for `billing-engine stop`; and
what a client may need without Ray (the embedded database's URL). Written once the engine is
up, removed when it stops. No Ray here."""

from __future__ import annotations

import contextlib
import json
import os

import psutil

from engine import private

NAME = "engine.json"


def path(data_dir: str) -> str:
    return os.path.join(data_dir, NAME)


def write(data_dir: str, **fields) -> str:
    """Record this process as the engine of `data_dir`, with `fields`."""
    me = {"pid": os.getpid(), "started": psutil.Process().create_time()}  # a pid may be reused
    private.write_json(path(data_dir), me | fields)
    return path(data_dir)


def read(data_dir: str) -> dict | None:
    """What is recorded in `data_dir`, None if nothing readable is."""
    try:
        with open(path(data_dir)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def remove(data_dir: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path(data_dir))
