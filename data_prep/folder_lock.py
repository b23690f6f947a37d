"""One writer per output folder: a run folder, a shard folder, an eval output folder.

    with FolderLock(Path("runs/clip_neg"), "finetune"):
        ...   # a second writer of the same folder stops at once with FolderBusy, before writing anything

The lock is an exclusive POSIX record lock (`lockf`) on `<parent>/.<name>.lock`, a file beside the folder (so a
start that fails leaves nothing inside the folder), holding the holder's host, pid, command and start time for the
message. A record lock belongs to its process alone: forked children (data loader workers, shard-writing pools)
do not hold it, so a killed trainer's lingering workers never block its restart, and the kernel drops it when the
process dies, so a lock left by a killed process is taken over at once (the note says whose it was). On a file
system that refuses locks the lock is skipped with a warning.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path


class FolderBusy(RuntimeError):
    """Another process writes this folder; the message names it (host, pid, command, since when)."""


class FolderLock:
    def __init__(self, folder: Path | str, what: str):
        self.folder = Path(folder)
        self.what = what
        self.path = self.folder.parent / f".{self.folder.name}.lock"
        self._handle = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EACCES, errno.EAGAIN):  # no locks on this file system
                print(
                    f"warning: cannot lock {self.path} ({err}); going on without the one-writer guard", file=sys.stderr
                )
                handle.close()
                return
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise FolderBusy(
                f"{self.folder} is being written by another {holder}; two writers would mix their output. Wait for "
                f"it to finish or stop it (its lock: {self.path}); nothing was written."
            ) from None
        handle.seek(0)
        previous = handle.read()
        if previous.strip():
            print(f"note: {self.path}: took over the lock of a process that ended ({_describe(previous)})")
        handle.seek(0)
        handle.truncate()
        record = {"host": platform.node(), "pid": os.getpid(), "what": self.what, "since": time.strftime("%FT%T%z")}
        handle.write(json.dumps(record))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()  # an empty lock file: released cleanly, nothing to take over
        self._handle.flush()
        fcntl.lockf(self._handle, fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None


def _describe(text: str) -> str:
    try:
        record = json.loads(text)
        return f"{record['what']} (host {record['host']}, pid {record['pid']}, since {record['since']})"
    except (ValueError, KeyError, TypeError):
        return "process (holder not recorded)"
