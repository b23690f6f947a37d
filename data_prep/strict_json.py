"""JSON with repeated keys made visible.

`{"image": "a.jpg", "image": "b.jpg"}` is valid JSON to Python's reader, which keeps the last value without a word;
other readers keep the first. An item like that is ambiguous, so the project's readers parse with `loads` and report
every repeated key with its item (`repeated_keys`) instead of guessing.
"""

from __future__ import annotations

import json
from typing import Any


class KeysTwice(dict):
    """A JSON object that named some key more than once; holds the last value (as json.loads) and, in `twice`,
    every value each repeated key was given, in file order."""

    twice: dict[str, list[Any]]


def loads(text: str | bytes) -> tuple[Any, int]:
    """json.loads, with each object that repeats a key returned as a KeysTwice, and how many such objects there
    are (0 in the usual case, so a caller walks the items for `repeated_keys` only when there is something to find;
    the parse itself costs about 2% more than json.loads)."""
    marked = 0

    def make(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal marked
        made = dict(pairs)
        if len(made) == len(pairs):
            return made
        marked += 1
        twice = KeysTwice(made)
        values: dict[str, list[Any]] = {}
        for key, value in pairs:
            values.setdefault(key, []).append(value)
        twice.twice = {key: found for key, found in values.items() if len(found) > 1}
        return twice

    value = json.loads(text, object_pairs_hook=make)
    return value, marked


def repeated_keys(value: Any, where: str = "") -> list[str]:
    """One line per repeated key anywhere inside `value`, e.g. `"image" given 2 times ('a.jpg', then 'b.jpg')` or
    `conversations[1]: "value" given 2 times (...)`."""
    found = []
    if isinstance(value, KeysTwice):
        for key, values in value.twice.items():
            shown = ", then ".join(repr(v)[:60] for v in values)
            found.append(f"{where + ': ' if where else ''}{json.dumps(key)} given {len(values)} times ({shown})")
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, dict | list):
                found += repeated_keys(inner, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for n, inner in enumerate(value):
            if isinstance(inner, dict | list):
                found += repeated_keys(inner, f"{where}[{n}]")
    return found
