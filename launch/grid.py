"""Grid expansion and run names: recipes x product(grid) x zip rows, in a fixed order, as override lists.

Pure functions of the sweep spec (no recipe is read here), so the expansion is deterministic and cheap to test.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from launch.sweep_config import SweepSpec, recipe_label

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_UNSAFE = re.compile(r"[^A-Za-z0-9.+-]+")


@dataclass(frozen=True)
class Combination:
    """One point of the sweep: a recipe and the override values that vary, in the sweep file's key order."""

    index: int
    recipe: str
    values: tuple[tuple[str, Any], ...]  # (key, value) of the grid then zip keys


def override_text(value: Any) -> str:
    """A YAML value as the text of a `key=value` override (lists in flow style, booleans as true/false)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


def expand(spec: SweepSpec) -> list[Combination]:
    """Every run of the sweep: for each recipe, every grid combination, each zip row (zip varies fastest)."""
    grid_keys = [k for k, _ in spec.grid]
    grid_points = list(itertools.product(*(values for _, values in spec.grid)))
    zip_keys = [k for k, _ in spec.zip]
    zip_rows = list(zip(*(values for _, values in spec.zip), strict=True)) if spec.zip else [()]
    out = []
    for recipe in spec.recipes:
        for point in grid_points:
            for row in zip_rows:
                values = tuple(zip(grid_keys, point, strict=True)) + tuple(zip(zip_keys, row, strict=True))
                out.append(Combination(len(out), recipe, values))
    return out


def default_template(spec: SweepSpec) -> str:
    """`{recipe}` plus `-<last key part>{key}` for every varied key, e.g. `{recipe}-lr{optim.lr}-seed{seed}`."""
    return "{recipe}" + "".join(f"-{key.split('.')[-1]}{{{key}}}" for key in spec.varied_keys)


def safe_piece(text: str) -> str:
    """A value as part of a file name: runs of other characters become one `_` (so `[a/b]` -> `a_b`)."""
    return _UNSAFE.sub("_", text).strip("_")


def render_name(template: str, lookup: Callable[[str], str | None]) -> tuple[str, list[str]]:
    """Fills `{key}` placeholders through `lookup`; returns the file-name-safe name and unknown placeholders."""
    unknown: list[str] = []

    def fill(match: re.Match) -> str:
        value = lookup(match.group(1).strip())
        if value is None:
            unknown.append(match.group(1))
            return ""
        return safe_piece(value)

    name = _PLACEHOLDER.sub(fill, template)
    name = re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("._-")
    return name, unknown


def name_lookup(spec: SweepSpec, combo: Combination, resolved: Mapping[str, Any]) -> Callable[[str], str | None]:
    """Placeholder values: recipe and sweep names, the run's own override text, else its resolved config value."""
    given = {**{k: override_text(v) for k, v in spec.overrides}, **{k: override_text(v) for k, v in combo.values}}

    def lookup(key: str) -> str | None:
        if key == "recipe":
            return recipe_label(combo.recipe)
        if key == "sweep":
            return spec.name
        if key in given:
            return given[key]
        if key in resolved:
            return override_text(resolved[key])
        return None

    return lookup


def duplicate_names(names: Sequence[str]) -> dict[str, list[int]]:
    """name -> indices of the runs sharing it, for names used more than once."""
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        seen.setdefault(name, []).append(i)
    return {name: idx for name, idx in seen.items() if len(idx) > 1}
