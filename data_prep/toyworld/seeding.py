"""Per-item random streams: each item's content depends only on (seed, stream, index).

`random.Random` seeded with a str hashes it with SHA-512, so this is stable across processes and
unaffected by PYTHONHASHSEED; items do not shift when another file's item count changes.
"""

from __future__ import annotations

import random


def item_rng(seed: int, stream: str, index: int) -> random.Random:
    return random.Random(f"toyworld/{seed}/{stream}/{index}")


def distinct_ids(seed: int, stream: str, count: int, low: int, high: int) -> list[int]:
    """`count` distinct integers in [low, high), in a seeded random order."""
    return random.Random(f"toyworld/{seed}/{stream}/ids").sample(range(low, high), count)
