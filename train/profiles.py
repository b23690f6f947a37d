"""Named profiles: the authors' released settings and ours, each one switch away (recipe key `profile`).

A profile is a set of recipe values laid under the recipe file's own and the command line's: schema defaults <
profile < recipe file < `key=value` overrides. So `profile: released` with `train.precision=bf16` on the command
line is the released profile with our precision alone switched, which is what `launch/sweeps/fidelity.yaml` does
point by point.

LEDGER lists every point where the authors' released code (GitHub lst627/CLIP-Embeds) and our default differ and
that a recipe key switches; `python -m train.config RECIPE --fidelity` shows where a resolved recipe stands on
each. The README's "Fidelity" section holds the full table, points without a switch included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from train.typed_config import merge


@dataclass(frozen=True)
class FidelityPoint:
    key: str  # dotted recipe key
    released: Any  # the released code's value
    ours: Any  # our choice
    what: str  # the released behaviour, in a few words


LEDGER: tuple[FidelityPoint, ...] = (
    FidelityPoint(
        "data.negative_rule",
        "released",
        "token_rules",
        "leftright.json: 6 phrases, case-sensitive, first found replaced everywhere",
    ),
    FidelityPoint("optim.weight_decay", 0.0, 0.1, "train-clip.sh --wd=0.0"),
    FidelityPoint("train.precision", "fp16", "bf16", "--precision amp: fp16 autocast + gradient scaler"),
    FidelityPoint("data.augment", True, False, "open_clip's train transform (random resized crop) on the locked tower"),
    FidelityPoint("train.logit_scale_clamp", "log100", "pretrained", "logit scale clamped to ln 100 for every model"),
    FidelityPoint(
        "model.released_gelu", True, False, "ViT-L-14-336 + openai in open_clip 2.32: nn.GELU, not QuickGELU"
    ),
    FidelityPoint("eval.scoring", "released", "official", "eval_clip.py: strict '>' (a tie is wrong), fp16 autocast"),
)


def _tree(values: Mapping[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


PROFILES: dict[str, dict[str, Any]] = {
    "released": _tree({p.key: p.released for p in LEDGER}),
    "clipablate": _tree({p.key: p.ours for p in LEDGER}),
}


def with_profile(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe file's data with its profile (the command line's `profile=`, else the file's) laid under it. An
    unknown profile is left for the schema to report with the others."""
    name = overrides.get("profile", data.get("profile", ""))
    profile = PROFILES.get(name) if isinstance(name, str) else None
    return merge(profile, data) if profile else dict(data)


def fidelity(flat: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Where a resolved recipe (flattened keys) stands on each ledger point: released, ours, or another value."""
    rows = []
    for point in LEDGER:
        value = flat.get(point.key)
        side = "released" if value == point.released else "ours" if value == point.ours else "other"
        rows.append({"key": point.key, "value": value, "side": side, "released": point.released, "what": point.what})
    return rows
