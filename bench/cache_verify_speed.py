"""What checking a feature cache's checksums costs each time it is opened, against one pass over its rows.

    python bench/cache_verify_speed.py [--mib 512]

A finished cache folder of `mib` MiB of float32 features is written with its checksums (as train/cache.py's build
does), then, warm in the page cache, alternately: FeatureStore(folder) (blake2b of every file, what every open
pays), and one pass reading every row of the memory map (what one epoch of training from the cache reads at least).
Best of 3 rounds each. `bench_cache_verify()` returns a table in bench/run.py's format.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from train.cache import FEATURES, META, FeatureStore, file_digests  # noqa: E402


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_cache_verify(mib: int = 512, rounds: int = 3) -> dict:
    dim = 1024
    rows = mib * (1 << 20) // (dim * 4)
    with tempfile.TemporaryDirectory(prefix="clipablate-cache-verify-") as scratch:
        folder = Path(scratch)
        features = np.lib.format.open_memmap(folder / FEATURES, mode="w+", dtype=np.float32, shape=(rows, dim))
        for start in range(0, rows, 8192):
            features[start : start + 8192] = np.random.default_rng(start).standard_normal(
                (min(8192, rows - start), dim)
            )
        features.flush()
        del features
        (folder / META).write_text(json.dumps({"checksums": file_digests(folder)}))
        size = (folder / FEATURES).stat().st_size

        def one_pass() -> None:
            store = FeatureStore(folder, verify=False)
            for start in range(0, rows, 8192):
                np.asarray(store.features[start : start + 8192]).sum()

        one_pass()  # warm the page cache for both
        verify = _best(lambda: FeatureStore(folder), rounds)
        read = _best(one_pass, rounds)
    rows_out = {
        "one pass over the rows (baseline)": {"seconds": round(read, 3), "gb_per_s": round(size / read / 1e9, 2)},
        "checksums on open (blake2b)": {"seconds": round(verify, 3), "gb_per_s": round(size / verify / 1e9, 2)},
    }
    for row in rows_out.values():
        row["ratio_vs_baseline"] = round(row["seconds"] / read, 2)
    return {
        "how": (
            f"A {size / 2**20:.0f} MiB cache (float32, {dim} wide), warm in the page cache, best of {rounds}: every open "
            "verifies it; one epoch from the cache reads every row at least once. ratio: seconds over the pass's "
            "(lower is cheaper). At the paper's largest cache (the LLM2Vec text cache: ~1.2M texts x 4096 x 2 bytes, "
            "about 10 GB) the check costs 10 GB over the gb_per_s here, once per start."
        ),
        "columns": {"seconds": "seconds", "gb_per_s": "GB/s"},
        "rows": rows_out,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python bench/cache_verify_speed.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512)
    args = parser.parse_args()
    print(json.dumps(bench_cache_verify(args.mib), indent=1))
