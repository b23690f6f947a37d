"""CLI: python -m data_prep.toyworld --out DIR [--seed S] [--scale small|medium] [--dirty]"""

from __future__ import annotations

import argparse
from pathlib import Path

from data_prep.toyworld.scales import SCALES
from data_prep.toyworld.world import generate, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.toyworld",
        description="Write the synthetic spatial world: LLaVA-1.5 training files and spatial benchmarks.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created; a previous world is replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--dirty", action="store_true", help="also write the broken inputs real LLaVA data has")
    args = parser.parse_args(argv)
    manifest = generate(args.out, seed=args.seed, scale=args.scale, dirty=args.dirty, progress=args.scale != "small")
    print(summary(manifest, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
