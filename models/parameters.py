"""Trainable and frozen parameter counts per part of a ContrastiveModel, printed at the start of a run."""

from __future__ import annotations

import torch
from torch import nn

# (part, parameter-name prefix), first match wins; covers every parameter of a ContrastiveModel.
PARTS = (
    ("image", "image_tower."),
    ("llm", "text_tower.llm2vec."),
    ("connector", "text_tower.connector."),
    ("text", "text_tower."),
    ("head", "logit_"),  # the logit scale and bias
    ("alignment", "head."),  # an alignment head on the patch tokens (models/alignment_heads.py)
)


def parameter_table(model: nn.Module) -> list[dict]:
    """One row per part present: {"part", "trainable", "frozen", "total"} (parameter counts)."""
    rows: dict[str, dict] = {}
    for name, param in model.named_parameters():
        part = next((part for part, prefix in PARTS if name.startswith(prefix)), "other")
        row = rows.setdefault(part, {"part": part, "trainable": 0, "frozen": 0, "total": 0})
        row["trainable" if param.requires_grad else "frozen"] += param.numel()
        row["total"] += param.numel()
    order = [part for part, _ in PARTS] + ["other"]
    return sorted(rows.values(), key=lambda row: order.index(row["part"]))


def format_parameter_table(rows: list[dict]) -> str:
    """A fixed-width table with a total line."""
    total = {key: sum(row[key] for row in rows) for key in ("trainable", "frozen", "total")}
    lines = [f"{'part':<10} {'trainable':>14} {'frozen':>14} {'total':>14}"]
    for row in [*rows, {"part": "all", **total}]:
        lines.append(f"{row['part']:<10} {row['trainable']:>14,} {row['frozen']:>14,} {row['total']:>14,}")
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)


def grad_norm(module: nn.Module | None) -> float | None:
    """The L2 norm of the gradients of `module`'s parameters (None when none has a gradient), e.g. of
    `model.connector` after backward and before the optimizer step."""
    if module is None:
        return None
    grads = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else None
