"""Score a run's checkpoints (or a bare model) on the spatial-reasoning benchmarks.

    python -m eval.run --run runs/<name> [--benchmarks whatsup_a mmvp_vlm] [--data-root DIR] [--force]
                       [--label-fixes paper|none]
    python -m eval.run --model tiny-clip [--pretrained TAG|FILE] --out DIR --data-root DIR [--benchmarks ...]
    accelerate launch --multi_gpu --num_processes 2 -m eval.run --run runs/<name>   # same numbers, bit for bit

`--run` scores the starting weights (as step_0) and every finished checkpoint, skipping results already
written with the same label-fix mode unless --force, into runs/<name>/eval/<checkpoint>/<benchmark>.json
(+ .scores.jsonl), then writes runs/<name>/eval/summary.csv and summary.md and, when the run's config has
wandb.mode != disabled, logs them to W&B. Only rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from eval.benchmarks import BENCHMARKS, get_benchmark
from eval.common import LABEL_FIX_MODES
from eval.report import SummaryRow, log_to_wandb, read_result, write_result, write_summary
from eval.scoring import CHUNK_SIZE, ImageFeatureCache, ModelScorer, rank_and_world

BundleBuilder = Callable[[Any], Any]  # models.config.ModelConfig -> models.ModelBundle-like


@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path | None  # None: the starting weights, as built from the run's config
    step: int


def parse_benchmarks(names: Sequence[str] | None) -> list[str] | None:
    """Accepts `a b` and `a,b`; unknown names fail listing the known ones."""
    if not names:
        return None
    parsed = [n for name in names for n in name.split(",") if n]
    for name in parsed:
        get_benchmark(name)
    return parsed


def init_distributed() -> torch.device:
    """Joins the process group a launcher (accelerate launch, torchrun) set up; returns this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")


def _same_on_all_ranks(value: Any) -> Any:
    """Rank 0's value everywhere, so every rank follows one plan even while rank 0 writes files."""
    if rank_and_world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def is_scored(folder: Path, benchmark: str, label_fixes: str) -> bool:
    record = read_result(folder, benchmark)
    return record is not None and record.get("label_fixes", {}).get("mode") == label_fixes


def run_checkpoints(run_dir: Path) -> list[Checkpoint]:
    """step_0 (the starting weights) then every finished checkpoint in step order."""
    from train.checkpoints import STATE, list_checkpoints

    found = [
        Checkpoint(p.name, p, int(json.loads((p / STATE).read_text())["step"]))
        for p in list_checkpoints(run_dir / "checkpoints")
    ]
    start = [] if any(c.name == "step_0" for c in found) else [Checkpoint("step_0", None, 0)]
    return start + found


def score_checkpoints(
    bundle: Any,
    checkpoints: Sequence[Checkpoint],
    plan: dict[str, list[str]],
    *,
    out: Callable[[Checkpoint], Path],
    data_root: Path,
    label_fixes: str,
    device: torch.device,
    identity: str,
    extra: dict[str, Any],
    chunk_size: int = CHUNK_SIZE,
    reuse_image_features: bool = True,
) -> None:
    """Scores `plan[checkpoint]` benchmarks for each checkpoint, loading its weights into one built model.

    `reuse_image_features`: keep benchmark image features across checkpoints whose image tower weights are equal
    (a locked tower is encoded once); False encodes every checkpoint's images anew (same results, for timing).
    """
    from train.checkpoints import load_weights

    rank, world = rank_and_world()
    bundle.model.to(device).eval()
    cache = ImageFeatureCache() if reuse_image_features else None
    for checkpoint in checkpoints:
        if not plan.get(checkpoint.name):
            continue
        if checkpoint.path is not None:
            load_weights(checkpoint.path, bundle.model)
        scorer = ModelScorer(bundle, device=device, chunk_size=chunk_size, image_cache=cache, identity=identity)
        for name in plan[checkpoint.name]:
            started = time.time()
            result = get_benchmark(name)(scorer, data_root, label_fixes=label_fixes)
            if rank == 0:
                meta = {
                    "checkpoint": checkpoint.name,
                    "step": checkpoint.step,
                    "data_root": str(data_root),
                    "processes": world,
                    "chunk_size": chunk_size,
                    "device": device.type,
                    "cpu_threads": torch.get_num_threads() if device.type == "cpu" else None,
                    "seconds": round(time.time() - started, 3),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    **extra,
                }
                write_result(result, out(checkpoint), meta)
                shown = ", ".join(f"{k} {v:.1f}" for k, v in list(result.metrics.items())[:3])
                print(f"{checkpoint.name} {name}: {shown}", file=sys.stderr)


def _build_model(model_cfg: Any) -> Any:
    from models import build_model

    return build_model(model_cfg)


def score_run(
    run_dir: Path,
    *,
    benchmarks: Sequence[str] | None = None,
    data_root: Path | None = None,
    force: bool = False,
    label_fixes: str | None = None,
    build: BundleBuilder | None = None,
    device: torch.device | None = None,
    chunk_size: int = CHUNK_SIZE,
    reuse_image_features: bool = True,
) -> list[SummaryRow]:
    from train.config import load_recipe
    from train.typed_config import flatten, to_plain

    cfg = load_recipe(run_dir / "config.yaml")
    names = list(benchmarks or cfg.eval.benchmarks)
    for name in names:
        get_benchmark(name)
    root = data_root or (Path(cfg.eval.data_root) if cfg.eval.data_root else None)
    if root is None:
        raise ValueError(f"{run_dir}: no benchmark data: pass --data-root or set eval.data_root in the run's config")
    fixes = label_fixes or cfg.eval.label_fixes
    device = device or init_distributed()
    eval_dir = run_dir / "eval"
    checkpoints = run_checkpoints(run_dir)
    plan = {c.name: [b for b in names if force or not is_scored(eval_dir / c.name, b, fixes)] for c in checkpoints}
    plan = _same_on_all_ranks(plan)

    if any(plan.values()):
        bundle = (build or _build_model)(cfg.model)
        extra = {
            "run": str(run_dir),
            "model": {"config": flatten(to_plain(cfg.model)), "info": getattr(bundle, "info", {})},
        }
        identity = json.dumps(to_plain(cfg.model), sort_keys=True)
        score_checkpoints(
            bundle,
            checkpoints,
            plan,
            out=lambda c: eval_dir / c.name,
            data_root=root,
            label_fixes=fixes,
            device=device,
            identity=identity,
            extra=extra,
            chunk_size=chunk_size,
            reuse_image_features=reuse_image_features,
        )

    # The summary covers the run's benchmarks and any asked for now, whatever this invocation scored.
    shown = [b for b in BENCHMARKS if b in names or b in cfg.eval.benchmarks]
    rows = [SummaryRow(c.name, c.step, _records(eval_dir / c.name, shown)) for c in checkpoints]
    if rank_and_world()[0] == 0:
        write_summary(eval_dir, rows, shown, f"{cfg.run_name}: evaluation")
        if cfg.wandb.mode != "disabled" and any(plan.values()):  # nothing new: nothing to log again
            log_to_wandb(cfg.wandb, cfg.run_name, run_dir, rows, shown)
    _barrier()
    return rows


def score_model(
    name: str,
    out: Path,
    *,
    data_root: Path,
    pretrained: str = "",
    benchmarks: Sequence[str] | None = None,
    force: bool = False,
    label_fixes: str = "paper",
    build: BundleBuilder | None = None,
    device: torch.device | None = None,
    chunk_size: int = CHUNK_SIZE,
) -> list[SummaryRow]:
    """A bare model (a preset such as tiny-clip, or an open_clip name) scored into `out`."""
    from models.config import ModelConfig
    from train.typed_config import flatten, to_plain

    names = list(benchmarks or BENCHMARKS)
    for benchmark in names:
        get_benchmark(benchmark)
    device = device or init_distributed()
    model_cfg = ModelConfig(name=name, pretrained=pretrained)
    checkpoint = Checkpoint(name, None, 0)
    plan = {name: [b for b in names if force or not is_scored(out, b, label_fixes)]}
    plan = _same_on_all_ranks(plan)
    if plan[name]:
        bundle = (build or _build_model)(model_cfg)
        extra = {"model": {"config": flatten(to_plain(model_cfg)), "info": getattr(bundle, "info", {})}}
        identity = json.dumps(to_plain(model_cfg), sort_keys=True)
        score_checkpoints(
            bundle,
            [checkpoint],
            plan,
            out=lambda c: out,
            data_root=data_root,
            label_fixes=label_fixes,
            device=device,
            identity=identity,
            extra=extra,
            chunk_size=chunk_size,
        )
    rows = [SummaryRow(name, 0, _records(out, names))]
    if rank_and_world()[0] == 0:
        write_summary(out, rows, names, f"{name} ({pretrained or 'default weights'}): evaluation")
    _barrier()
    return rows


def _records(folder: Path, benchmarks: Sequence[str]) -> dict[str, dict[str, Any]]:
    found = {b: read_result(folder, b) for b in benchmarks}
    return {b: r for b, r in found.items() if r is not None}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m eval.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run folder (config.yaml, checkpoints/)")
    source.add_argument("--model", help="bare model: a models preset (tiny-clip, tiny-siglip, ...) or open_clip name")
    parser.add_argument("--pretrained", default="", help="with --model: open_clip pretrained tag or weights file")
    parser.add_argument("--out", type=Path, help="with --model: output folder")
    parser.add_argument(
        "--benchmarks", nargs="+", help=f"default: the run's eval.benchmarks, else all ({', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--data-root", type=Path, help="folder holding data/ and MMVP_VLM/ (default: eval.data_root)")
    parser.add_argument("--force", action="store_true", help="rescore results that already exist")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch threads per process on CPU: CPU sums depend on the thread count, so equal counts give "
        "bitwise-equal results for any number of processes",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=CHUNK_SIZE,
        help="items per forward pass; fixed whatever the process count, so results do not depend on it",
    )
    parser.add_argument(
        "--label-fixes", choices=LABEL_FIX_MODES, help="default: the run's eval.label_fixes, else paper"
    )
    args = parser.parse_args(argv)
    if args.model and (args.out is None or args.data_root is None):
        parser.error("--model needs --out and --data-root")
    if args.run and args.out is not None:
        parser.error("--out goes with --model; a run's results go to <run>/eval/")
    try:
        args.benchmarks = parse_benchmarks(args.benchmarks)
    except KeyError as err:
        parser.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from train.typed_config import ConfigError

    args = parse_args(argv)
    threads = torch.get_num_threads()
    if not torch.cuda.is_available():
        torch.set_num_threads(args.cpu_threads)
    try:
        if args.run:
            score_run(
                args.run,
                benchmarks=args.benchmarks,
                data_root=args.data_root,
                force=args.force,
                label_fixes=args.label_fixes,
                chunk_size=args.chunk_size,
            )
        else:
            score_model(
                args.model,
                args.out,
                data_root=args.data_root,
                pretrained=args.pretrained,
                benchmarks=args.benchmarks,
                force=args.force,
                label_fixes=args.label_fixes or "paper",
                chunk_size=args.chunk_size,
            )
    except (ConfigError, FileNotFoundError, ValueError) as err:  # the user's inputs: say what, not where
        print(f"eval.run: {err}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)  # main() may run inside another program (tests)
        rank = rank_and_world()[0]
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(f"results: {args.run / 'eval' if args.run else args.out}/ (summary.md, summary.csv)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
