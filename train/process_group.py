"""Which process group a launched command forms: shared by the finetune recipe and the feature-cache builder."""

from __future__ import annotations

import os

import torch


def use_cpu_group() -> bool:
    """On GPU-less hosts several launched processes form one gloo group instead of N lone runs; DeepSpeed, which
    brings its own CPU backend, is the exception."""
    return not torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true"
