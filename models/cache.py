"""Where the locally built stand-in models live, and building each of them exactly once.

Two processes of one launch (`accelerate launch --num_processes 2`) may both find a stand-in missing and build it
at the same moment: each builds into its own temporary folder and renames it into place atomically; the loser
throws its copy away and uses the winner's (the builds are deterministic, so both are identical).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "CLIPABLATE_CACHE"
DEFAULT_CACHE = Path("~/.cache/clipablate")
BUILD_STAMP = "clipablate_build.json"  # what was built; a folder whose stamp differs is stale and rebuilt

log = logging.getLogger(__name__)


def resolve_cache_dir(cache_dir: Path | str | None = None) -> Path:
    """The `cache_dir` argument, else $CLIPABLATE_CACHE, else ~/.cache/clipablate."""
    chosen = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()


def build_once(target: Path, build: Callable[[Path], None], stamp: dict) -> Path:
    """Returns `target`, first filling it with `build(folder)` unless it already holds a build with this stamp."""
    stamp = json.loads(json.dumps(stamp))  # compare as read back from disk (tuples become lists)
    if _read_stamp(target) == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        build(tmp)
        (tmp / BUILD_STAMP).write_text(json.dumps(stamp, indent=1, sort_keys=True))
        if target.exists() and _read_stamp(target) != stamp:
            log.warning("rebuilding %s: it was built from a different recipe", target)
            _move_aside(target)
        try:
            os.rename(tmp, target)
        except OSError:  # another process renamed its build into place first
            if _read_stamp(target) != stamp:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / BUILD_STAMP).read_text())
    except (OSError, ValueError):
        return None


def _move_aside(folder: Path) -> None:
    trash = folder.parent / f".{folder.name}.stale-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(folder, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)
