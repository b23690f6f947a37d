"""Which code produced an output: the project version and git commit, recorded in manifests and runs."""

from __future__ import annotations

import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def code_version() -> dict[str, str | bool | None]:
    try:
        version = metadata.version("clipablate")
    except metadata.PackageNotFoundError:
        version = None
    return {
        "version": version,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain")),
    }


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def file_digest(path: Path) -> dict[str, str | int]:
    """Path, size and sha256 of an input file, read in chunks (the 665K JSON is about 1 GB)."""
    return {"path": str(path), "size": path.stat().st_size, "sha256": sha256_file(path)}


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MB chunks (shards and inputs are too big to read at once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
