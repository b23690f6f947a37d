"""safetensors files written with the user's umask.

safetensors' writer creates its file with mode 0600 whatever the umask, so a checkpoint or export was readable by
its owner alone while every other file of a run folder follows the umask (0644 under the usual 022): a colleague or
a cluster's eval job under another account could not read it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_safetensors(tensors: dict[str, torch.Tensor], path: Path | str) -> None:
    """safetensors.torch.save_file, then the mode a new file gets under the umask (0666 & ~umask)."""
    save_file(tensors, str(path))
    os.chmod(path, 0o666 & ~_umask())
