"""Score a run's checkpoints (or a bare model) on the spatial-reasoning benchmarks.

    python -m eval.run --run runs/<name> [--benchmarks whatsup_a mmvp_vlm] [--data-root DIR] [--force]
                       [--label-fixes paper|none] [--checkpoints step_0 epoch_1 ...] [--limit N]
                       [--scoring official|released]
    python -m eval.run --model tiny-clip [--pretrained TAG|FILE] --out DIR --data-root DIR [--benchmarks ...]
    accelerate launch --multi_gpu --num_processes 2 -m eval.run --run runs/<name>   # same numbers, bit for bit

`--run` scores the starting weights (as step_0) and every finished checkpoint into
runs/<name>/eval/<checkpoint>/<benchmark>.json (+ .scores.jsonl), then writes runs/<name>/eval/summary.csv and
summary.md and, when the run's config has wandb.mode != disabled, logs them to W&B. Only rank 0 writes.
`--checkpoints` scores only the named ones (step_0 names the starting weights).

`--limit N` scores only the first N examples of each benchmark, for smoke tests of large models: the first N rows
of COCO-/GQA-spatial, the first N pairs of MMVP-VLM, and for What'sUp the object pairs of its first N rows, whole
(pairs and sets of 4 need all four images of an object pair). Such results are PARTIAL: the limit is written into
each result (`limit`, `partial`) and its provenance's scorer settings, so an eval without the limit recomputes
them, `is_scored` does not count them, and the summary's title says so.

A result already on disk is kept only when everything it was computed from still matches (eval/provenance.py:
weights, data files and images, data root, label fixes, tie rule, scorer settings); otherwise it is recomputed
and the command says what changed. --force recomputes everything. When results exist but what they were
computed from is gone (a checkpoint's weights deleted), the command stops with exit code 2 and says why.
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

from eval.benchmarks import BENCHMARKS, get_benchmark, get_spec
from eval.common import LABEL_FIX_MODES, SCORING_MODES
from eval.distributed import barrier, decided_on_rank0, exit_process, init_distributed, rank_and_world
from eval.provenance import (
    CannotRescore,
    MissingWeights,
    changes,
    data_source,
    model_source,
    result_provenance,
    vanished_sources,
    weights_source,
)
from eval.report import SummaryRow, log_to_wandb, read_result, result_path, write_result, write_summary
from eval.scoring import CHUNK_SIZE, ImageFeatureCache, ModelScorer

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


def is_scored(folder: Path, benchmark: str, label_fixes: str, scoring: str = "official") -> bool:
    """A result exists for this label-fix mode and scoring mode. A cheap presence check (for sweep status); whether
    the result is still current is `plan_results`' business, which eval.run itself uses."""
    record = read_result(folder, benchmark)
    if record is None or record.get("limit"):  # a partial result (--limit) is no result of the benchmark
        return False
    mode = (record.get("scoring") or {}).get("mode", "official")
    return record.get("label_fixes", {}).get("mode") == label_fixes and mode == scoring


def scorer_settings(device: torch.device, chunk_size: int, limit: int = 0) -> dict[str, Any]:
    """The scorer settings that can change a feature's last bits (provenance; the process count cannot), and the
    --limit of a partial result (only when set, so full results keep the provenance they always had)."""
    settings = {
        "device": device.type,
        "chunk_size": chunk_size,
        "cpu_threads": torch.get_num_threads() if device.type == "cpu" else None,
    }
    if limit:
        settings["limit"] = limit
    return settings


def check_limit(limit: int) -> None:
    """`limit`: the first examples of each benchmark (module docstring; the benchmarks' `run` and `inputs` apply
    it, for scoring and provenance alike); 0: everything."""
    if limit < 0:
        raise ValueError(f"--limit {limit}: must be > 0")


def partial_notice(limit: int) -> str:
    return (
        f"PARTIAL results (--limit {limit}): only the first {limit} examples of each benchmark (What'sUp: whole object "
        "pairs; MMVP-VLM: pairs) are scored; they are not the benchmarks' numbers, and an eval without --limit "
        "recomputes them"
    )


@dataclass
class Plan:
    todo: dict[str, list[str]]  # checkpoint -> benchmarks to (re)score
    provenance: dict[str, dict[str, dict[str, Any]]]  # checkpoint -> benchmark -> provenance of the new result
    kept: dict[str, list[str]]  # checkpoint -> benchmarks whose result is current
    reasons: dict[str, dict[str, str]]  # checkpoint -> benchmark -> why it is (re)scored


def plan_results(
    checkpoints: Sequence[Checkpoint],
    benchmarks: Sequence[str],
    *,
    folder_of: Callable[[Checkpoint], Path],
    model: dict[str, Any],
    data_root: Path,
    label_fixes: str,
    scorer: dict[str, Any] | None,
    force: bool = False,
    limit: int = 0,
    scoring: str = "official",
) -> Plan:
    """Which results to (re)compute, and why: a result is kept only when its whole provenance matches.

    `model`: the flattened model config the weights are built from. `scorer`: the settings of this invocation;
    None takes each result's own (for a status check that runs elsewhere than the eval will). `limit`: the data
    provenance lists only the images of the examples scored (`check_limit`). Raises CannotRescore
    where results exist but what they were computed from is gone, FileNotFoundError / ValueError for missing or
    malformed data.
    """
    from train.checkpoints import WEIGHTS

    base = model_source(model)
    data = {name: data_source(get_spec(name), data_root, limit=limit) for name in benchmarks}
    plan = Plan({}, {}, {}, {})
    for checkpoint in checkpoints:
        folder = folder_of(checkpoint)
        existing = {name: read_result(folder, name) for name in benchmarks}
        found = [result_path(folder, name) for name, record in existing.items() if record is not None]
        try:
            weights = weights_source(base, None if checkpoint.path is None else checkpoint.path / WEIGHTS)
        except MissingWeights as err:
            if found:
                raise CannotRescore(
                    f"{checkpoint.name}: its weights file {err} is missing (the checkpoint's weights were deleted), "
                    f"so its results {', '.join(p.name for p in found)} in {folder} can be neither checked nor "
                    f"recomputed. Restore the weights, or delete {folder} and {checkpoint.path} to drop that "
                    "checkpoint; nothing was scored."
                ) from None
            raise CannotRescore(
                f"{checkpoint.name}: cannot score it, its weights file {err} is missing. Restore the weights or "
                f"delete {checkpoint.path}; nothing was scored."
            ) from None
        plan.todo[checkpoint.name], plan.kept[checkpoint.name] = [], []
        plan.provenance[checkpoint.name], plan.reasons[checkpoint.name] = {}, {}
        for name in benchmarks:
            old = existing[name].get("provenance") if existing[name] is not None else None
            # A status check (scorer None) takes the result's own settings, but never its limit: eval.run without
            # --limit would recompute a partial result.
            old_scorer = {k: v for k, v in (old or {}).get("scorer", {}).items() if k != "limit"}
            settings = scorer if scorer is not None else old_scorer
            new = result_provenance(
                get_spec(name),
                weights=weights,
                data=data[name],
                label_fixes=label_fixes,
                scorer=settings,
                scoring=scoring,
            )
            gone = vanished_sources(old, new)
            if gone:
                raise CannotRescore(
                    f"{checkpoint.name} {name}: the result {result_path(folder, name)} was computed from "
                    f"{', '.join(gone)}, which no longer exists, so it can be neither checked nor recomputed. "
                    "Restore it, or delete the result to score the model as it is now built; nothing was scored."
                )
            if existing[name] is None:
                reason = "scoring (no result yet)"
            elif force:
                reason = "recomputing (--force)"
            elif not isinstance(existing[name].get("metrics"), dict) or not existing[name]["metrics"]:
                reason = "recomputing, the result holds no metrics"
            else:
                changed = changes(old, new)
                if not changed:
                    plan.kept[checkpoint.name].append(name)
                    continue
                reason = "recomputing, " + "; ".join(changed)
            plan.todo[checkpoint.name].append(name)
            plan.provenance[checkpoint.name][name] = new
            plan.reasons[checkpoint.name][name] = reason
    return plan


def report_plan(plan: Plan) -> None:
    """One line per result to compute (with why), one per checkpoint for the results kept."""
    for checkpoint, names in plan.kept.items():
        if names:
            print(
                f"{checkpoint}: kept {', '.join(names)} (weights, data, label fixes and scorer settings unchanged; "
                "--force recomputes)",
                file=sys.stderr,
            )
    for checkpoint, reasons in plan.reasons.items():
        for name, reason in reasons.items():
            print(f"{checkpoint} {name}: {reason}", file=sys.stderr)


def orphan_results(eval_dir: Path, checkpoints: Sequence[Checkpoint]) -> list[Path]:
    """Result folders of checkpoints that no longer exist (a deleted checkpoint's results cannot be checked)."""
    names = {c.name for c in checkpoints}
    if not eval_dir.is_dir():
        return []
    return sorted(
        folder
        for folder in eval_dir.iterdir()
        if folder.is_dir() and folder.name not in names and any(result_path(folder, b).is_file() for b in BENCHMARKS)
    )


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
    provenance: dict[str, dict[str, dict[str, Any]]] | None = None,
    limit: int = 0,
    scoring: str = "official",
) -> None:
    """Scores `plan[checkpoint]` benchmarks for each checkpoint, loading its weights into one built model.

    `limit`: only the first examples of each benchmark (`check_limit`), recorded in each result.

    `provenance[checkpoint][benchmark]` (from `plan_results`) is written into each result, for the next run to compare.

    `reuse_image_features`: keep benchmark image features across checkpoints whose image tower weights are equal
    (a locked tower is encoded once); False encodes every checkpoint's images anew (same results, for timing).
    """
    from train.checkpoints import load_weights

    rank, world = rank_and_world()
    bundle.model.to(device).eval()
    # Features are reused across checkpoints only: with one to score, keying them (hashing the image tower) is waste.
    several = sum(1 for checkpoint in checkpoints if plan.get(checkpoint.name)) > 1
    cache = ImageFeatureCache() if reuse_image_features and several else None
    for checkpoint in checkpoints:
        if not plan.get(checkpoint.name):
            continue
        if checkpoint.path is not None:
            load_weights(checkpoint.path, bundle.model)
        scorers = {
            precision: ModelScorer(
                bundle, device=device, chunk_size=chunk_size, image_cache=cache, identity=identity, precision=precision
            )
            for precision in ("fp32", "fp16")
        }
        for name in plan[checkpoint.name]:
            started = time.time()
            scorer = scorers[get_spec(name).precision(scoring)]
            result = get_benchmark(name)(scorer, data_root, label_fixes=label_fixes, limit=limit, scoring=scoring)
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
                    **({"limit": limit, "partial": True} if limit else {}),
                    "provenance": (provenance or {}).get(checkpoint.name, {}).get(name),
                }
                write_result(result, out(checkpoint), meta)
                shown = ", ".join(f"{k} {v:.1f}" for k, v in list(result.metrics.items())[:3])
                partial = f" (PARTIAL: first {limit} examples)" if limit else ""
                print(f"{checkpoint.name} {name}{partial}: {shown}", file=sys.stderr)


def _build_model(model_cfg: Any) -> Any:
    from models import build_model

    bundle = build_model(model_cfg)
    for note in bundle.notes:  # e.g. a stand-in tokenizer where the real one needs the hub
        print(f"eval: note: {note}", file=sys.stderr)
    return bundle


def _run_setup(
    run_dir: Path, benchmarks: Sequence[str] | None, data_root: Path | None, label_fixes: str | None
) -> tuple[Any, list[str], Path, str]:
    """The run's config, the benchmarks to score, the data root and the label-fix mode (arguments over config);
    the scoring mode is `scoring or cfg.eval.scoring` at the callers."""
    from train.config import load_recipe

    cfg = load_recipe(run_dir / "config.yaml")
    names = list(benchmarks or cfg.eval.benchmarks)
    for name in names:
        get_benchmark(name)
    root = data_root or (Path(cfg.eval.data_root) if cfg.eval.data_root else None)
    if root is None:
        raise ValueError(f"{run_dir}: no benchmark data: pass --data-root or set eval.data_root in the run's config")
    return cfg, names, root, label_fixes or cfg.eval.label_fixes


def _plan_run(
    run_dir: Path,
    cfg: Any,
    checkpoints: Sequence[Checkpoint],
    names: Sequence[str],
    *,
    data_root: Path,
    label_fixes: str,
    scorer: dict[str, Any] | None,
    force: bool,
    limit: int = 0,
    every_checkpoint: Sequence[Checkpoint] | None = None,
    scoring: str = "official",
) -> Plan:
    """`checkpoints`: those to plan; `every_checkpoint` (default: the same): the run's, against orphaned results."""
    from train.typed_config import flatten, to_plain

    eval_dir = run_dir / "eval"
    orphans = orphan_results(eval_dir, checkpoints if every_checkpoint is None else every_checkpoint)
    if orphans:
        raise CannotRescore(
            f"{', '.join(str(f) for f in orphans)} hold results of checkpoints that no longer exist in "
            f"{run_dir / 'checkpoints'}, so those results can be neither checked nor recomputed. Restore the "
            "checkpoints, or delete these result folders to drop their results; nothing was scored."
        )
    check_limit(limit)
    return plan_results(
        checkpoints,
        names,
        folder_of=lambda c: eval_dir / c.name,
        model=flatten(to_plain(cfg.model)),
        data_root=data_root,
        label_fixes=label_fixes,
        scorer=scorer,
        force=force,
        limit=limit,  # the provenance lists the images actually scored
        scoring=scoring,
    )


def select_checkpoints(available: Sequence[Checkpoint], names: Sequence[str] | None) -> list[Checkpoint]:
    """The named checkpoints in step order (None: all); an unknown name fails listing the run's."""
    if not names:
        return list(available)
    known = {c.name for c in available}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(
            f"--checkpoints {' '.join(unknown)}: no such checkpoint; the run has {', '.join(c.name for c in available)} "
            "(step_0 is the starting weights)"
        )
    return [c for c in available if c.name in names]


def pending_results(
    run_dir: Path,
    *,
    benchmarks: Sequence[str] | None = None,
    data_root: Path | None = None,
    label_fixes: str | None = None,
    scoring: str | None = None,
) -> dict[str, dict[str, str]]:
    """checkpoint -> benchmark -> why, for every result `eval.run --run` would compute now (missing, or computed
    from other weights, data, label fixes or tie rule). Scorer settings are taken from each result, since a status
    check runs on another machine than the eval. Raises as eval.run would (CannotRescore, missing data)."""
    cfg, names, root, fixes = _run_setup(run_dir, benchmarks, data_root, label_fixes)
    plan = _plan_run(
        run_dir,
        cfg,
        run_checkpoints(run_dir),
        names,
        data_root=root,
        label_fixes=fixes,
        scorer=None,
        force=False,
        scoring=scoring or cfg.eval.scoring,
    )
    return {checkpoint: reasons for checkpoint, reasons in plan.reasons.items() if reasons}


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
    checkpoint_names: Sequence[str] | None = None,
    limit: int = 0,
    scoring: str | None = None,
) -> list[SummaryRow]:
    """Scores the run's checkpoints (`checkpoint_names`: only those); `limit`: partial results (module docstring);
    `scoring`: official or released (default: the run's eval.scoring)."""
    from train.typed_config import flatten, to_plain

    cfg, names, root, fixes = _run_setup(run_dir, benchmarks, data_root, label_fixes)
    scoring = scoring or cfg.eval.scoring
    every_checkpoint = run_checkpoints(run_dir)
    checkpoints = select_checkpoints(every_checkpoint, checkpoint_names)
    device = device or init_distributed()
    eval_dir = run_dir / "eval"
    if limit and rank_and_world()[0] == 0:
        print(f"eval.run: {partial_notice(limit)}", file=sys.stderr)

    def decide() -> Plan:
        decided = _plan_run(
            run_dir,
            cfg,
            checkpoints,
            names,
            data_root=root,
            label_fixes=fixes,
            scorer=scorer_settings(device, chunk_size, limit),
            force=force,
            limit=limit,
            every_checkpoint=every_checkpoint,
            scoring=scoring,
        )
        report_plan(decided)
        return decided

    decided = decided_on_rank0(decide)
    plan = decided.todo

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
            provenance=decided.provenance,
            limit=limit,
            scoring=scoring,
        )

    # The summary covers the run's benchmarks and any asked for now, whatever this invocation scored, for every
    # checkpoint of the run.
    shown = [b for b in BENCHMARKS if b in names or b in cfg.eval.benchmarks]
    rows = [SummaryRow(c.name, c.step, _records(eval_dir / c.name, shown)) for c in every_checkpoint]
    if rank_and_world()[0] == 0:
        write_summary(eval_dir, rows, shown, f"{cfg.run_name}: evaluation{_partial_title(rows)}")
        if cfg.wandb.mode != "disabled" and any(plan.values()):  # nothing new: nothing to log again
            log_to_wandb(cfg.wandb, cfg.run_name, run_dir, rows, shown, config=flatten(to_plain(cfg)))
    barrier()
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
    limit: int = 0,
    scoring: str = "official",
) -> list[SummaryRow]:
    """A bare model (a preset such as tiny-clip, or an open_clip name) scored into `out`; `limit` as score_run."""
    from models.config import ModelConfig
    from train.typed_config import flatten, to_plain

    names = list(benchmarks or BENCHMARKS)
    for benchmark in names:
        get_benchmark(benchmark)
    device = device or init_distributed()
    model_cfg = ModelConfig(name=name, pretrained=pretrained)
    checkpoint = Checkpoint(name, None, 0)
    if limit and rank_and_world()[0] == 0:
        print(f"eval.run: {partial_notice(limit)}", file=sys.stderr)

    def decide() -> Plan:
        check_limit(limit)
        decided = plan_results(
            [checkpoint],
            names,
            folder_of=lambda c: out,
            model=flatten(to_plain(model_cfg)),
            data_root=data_root,
            label_fixes=label_fixes,
            scorer=scorer_settings(device, chunk_size, limit),
            force=force,
            limit=limit,  # the provenance lists the images actually scored
            scoring=scoring,
        )
        report_plan(decided)
        return decided

    decided = decided_on_rank0(decide)
    plan = decided.todo
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
            provenance=decided.provenance,
            limit=limit,
            scoring=scoring,
        )
    rows = [SummaryRow(name, 0, _records(out, names))]
    if rank_and_world()[0] == 0:
        write_summary(out, rows, names, f"{name} ({pretrained or 'default weights'}): evaluation{_partial_title(rows)}")
    barrier()
    return rows


def _partial_title(rows: Sequence[SummaryRow]) -> str:
    """A summary title's warning when any result it shows is partial (--limit)."""
    limits = sorted({r["limit"] for row in rows for r in row.results.values() if r.get("limit")})
    if not limits:
        return ""
    return f" (PARTIAL: some results score only the first {'/'.join(map(str, limits))} examples, --limit)"


def _records(folder: Path, benchmarks: Sequence[str]) -> dict[str, dict[str, Any]]:
    found = {b: read_result(folder, b) for b in benchmarks}
    return {b: r for b, r in found.items() if r is not None}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m eval.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_folder", nargs="?", type=Path, help="run folder (config.yaml, checkpoints/), as every tool takes it"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", type=Path, help="the run folder, given as an option (the same as the positional)")
    source.add_argument("--model", help="bare model: a models preset (tiny-clip, tiny-siglip, ...) or open_clip name")
    parser.add_argument("--pretrained", default="", help="with --model: open_clip pretrained tag or weights file")
    parser.add_argument("--out", type=Path, help="with --model: output folder")
    parser.add_argument(
        "--benchmarks", nargs="+", help=f"default: the run's eval.benchmarks, else all ({', '.join(BENCHMARKS)})"
    )
    parser.add_argument("--data-root", type=Path, help="folder holding data/ and MMVP_VLM/ (default: eval.data_root)")
    parser.add_argument("--force", action="store_true", help="rescore results that already exist")
    parser.add_argument(
        "--checkpoints", nargs="+", help="with --run: only these checkpoints (step_0: the starting weights)"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=0,
        help="score only the first N examples of each benchmark (What'sUp: whole object pairs; MMVP-VLM: pairs): "
        "PARTIAL results, marked as such and recomputed by an eval without --limit",
    )
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch threads per process on CPU (default 1; 0 = auto, this process's share of the cores): CPU sums "
        "depend on the thread count, so the default 1 gives bitwise-equal results for any number of processes",
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
    parser.add_argument(
        "--scoring",
        choices=SCORING_MODES,
        help="official (the benchmarks' rules, fp32) or released (the authors' eval_clip.py: strict '>' so a tie is "
        "wrong, fp16 autocast); default: the run's eval.scoring, else official",
    )
    args = parser.parse_args(argv)
    if args.run_folder is not None:
        if args.run is not None or args.model:
            parser.error("give the run folder once: positional, or --run, or --model for a bare model")
        args.run = args.run_folder
    if args.run is None and not args.model:
        parser.error("give a run folder (python -m eval.run runs/x) or --model")
    if args.model and (args.out is None or args.data_root is None):
        parser.error("--model needs --out and --data-root")
    if args.run and args.out is not None:
        parser.error("--out goes with --model; a run's results go to <run>/eval/")
    if args.checkpoints and not args.run:
        parser.error("--checkpoints goes with --run")
    if args.limit < 0:
        parser.error(f"--limit {args.limit}: must be > 0 (0 = every example)")
    if args.cpu_threads < 0:
        parser.error(f"--cpu-threads {args.cpu_threads}: must be >= 0 (0 = auto)")
    args.checkpoints = [n for name in args.checkpoints or [] for n in name.split(",") if n] or None
    try:
        args.benchmarks = parse_benchmarks(args.benchmarks)
    except KeyError as err:
        parser.error(str(err))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from data_prep.folder_lock import FolderBusy, FolderLock
    from train.typed_config import ConfigError

    args = parse_args(argv)
    threads = torch.get_num_threads()
    if not torch.cuda.is_available():
        from train.cpu_threads import choose_threads, processes_on_host

        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        torch.set_num_threads(choose_threads(args.cpu_threads, processes_on_host(world), 0).threads)
    # One writer per eval output folder (rank 0 writes; the others only compute).
    target = args.run / "eval" if args.run else args.out
    rank0 = int(os.environ.get("RANK", "0")) == 0
    lock = FolderLock(target, "eval.run") if rank0 and (args.out or args.run.is_dir()) else None
    try:
        if lock is not None:
            lock.acquire()
        if args.run:
            score_run(
                args.run,
                benchmarks=args.benchmarks,
                data_root=args.data_root,
                force=args.force,
                label_fixes=args.label_fixes,
                chunk_size=args.chunk_size,
                checkpoint_names=args.checkpoints,
                limit=args.limit,
                scoring=args.scoring,
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
                limit=args.limit,
                scoring=args.scoring or "official",
            )
    except (ConfigError, FileNotFoundError, ValueError, CannotRescore, FolderBusy) as err:  # the user's inputs
        print(f"eval.run: {err}", file=sys.stderr)
        return 2
    finally:
        if lock is not None:
            lock.release()
        torch.set_num_threads(threads)  # main() may run inside another program (tests)
        rank = rank_and_world()[0]
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(f"results: {args.run / 'eval' if args.run else args.out}/ (summary.md, summary.csv)", file=sys.stderr)
        if args.limit:
            print(f"eval.run: {partial_notice(args.limit)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    exit_process(main())
