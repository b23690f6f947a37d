"""Run a sweep (recipes x grid x zip) locally or as SLURM job arrays; re-running it skips or resumes runs.

    python -m launch.sweep launch/sweeps/tiny_grid.yaml --backend local [key=value ...]
    python -m launch.sweep launch/sweeps/paper_table5.yaml --backend slurm --dry-run   # print the sbatch scripts
    python -m launch.sweep paper_table5 --backend slurm --partition gpu --time 48:00:00 --gpus-per-run 4
    python -m launch.sweep tiny_grid --status                                          # states only, runs nothing
    python -m launch.sweep paper_table5 --estimate [--gpu h100] [--utilisation 0.4] [--out cost.json]  # GPU-hours

Every run's config is validated up front (all problems at once), and so are the folders it needs: a missing or
empty shard folder of a run still to train stops the sweep before anything starts, and is a warning in a --dry-run
or --status (the data may be built later). A missing eval.data_root is a warning (eval may run elsewhere). A run
trained to its last step and evaluated
is skipped, a trained one is only evaluated, any other resumes from its latest checkpoint (or starts). The
sweep folder (--output-dir, else the file's output_dir, else runs/<name>) holds the run folders, manifest.json
and manifest.md (runs, commands, states), logs/ and, for slurm, the submitted scripts in slurm/.
Trailing key=value overrides apply to every run (after the sweep file's own values).
--estimate prints each run's FLOPs per sample and part and the sweep's GPU-hours with and without the feature
caches, a cache shared by several runs counted once (train/cost.py), and runs nothing.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
from dataclasses import replace
from pathlib import Path

from launch.commands import eval_argv, shell_line, train_argv
from launch.plan import SweepPlan, grouped_by_problem, plan_sweep, sweep_dir_of
from launch.run_state import Action, RunStatus, run_status
from launch.sweep_config import SweepSpec, load_sweep, sweep_path
from train.cost import add_cost_options
from train.typed_config import ConfigError

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launch.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep", help="sweep YAML (or the name of one in launch/sweeps/)")
    parser.add_argument("overrides", nargs="*", help="key=value recipe overrides applied to every run")
    parser.add_argument("--backend", choices=("local", "slurm"), default="local")
    parser.add_argument("--dry-run", action="store_true", help="print the commands (slurm: the sbatch scripts)")
    parser.add_argument("--status", action="store_true", help="print each run's state and exit")
    parser.add_argument("--output-dir", type=Path, help="the sweep's folder (default: the file's, else runs/<name>)")
    parser.add_argument("--gpus-per-run", type=int, help="GPUs per run over all its nodes (0 = CPU)")
    parser.add_argument("--nodes", type=int, help="machines per run (slurm)")
    parser.add_argument("--cpu-processes", type=int, help="processes per node without GPUs (gloo)")
    parser.add_argument("--partition", help="slurm partition")
    parser.add_argument("--time", help="slurm time limit per training task, e.g. 48:00:00")
    parser.add_argument("--signal-seconds", type=int, help="slurm: USR1 this long before the time limit")
    parser.add_argument("--no-eval", action="store_true", help="train only")
    parser.add_argument(
        "--estimate", action="store_true", help="print the compute cost (FLOPs, GPU-hours) of every run and exit"
    )
    add_cost_options(parser)
    return parser.parse_intermixed_args(argv)


def with_cli_options(spec: SweepSpec, args: argparse.Namespace) -> SweepSpec:
    """The sweep file's resources and slurm settings with the command line's options on top."""
    resources = spec.resources
    for option, name in (("gpus_per_run", "gpus_per_run"), ("nodes", "nodes"), ("cpu_processes", "cpu_processes")):
        if getattr(args, option) is not None:
            resources = replace(resources, **{name: getattr(args, option)})
    slurm = spec.slurm
    for option in ("partition", "time", "signal_seconds"):
        if getattr(args, option) is not None:
            slurm = replace(slurm, **{option: getattr(args, option)})
    evaluate = replace(spec.eval, enabled=False) if args.no_eval else spec.eval
    problems = [f"--{p.keys[0].replace('_', '-')}: {p.message}" for p in resources.problems() + slurm.problems()]
    if problems:
        raise ConfigError("command line", problems)
    return replace(spec, resources=resources, slurm=slurm, eval=evaluate)


def status_table(plan: SweepPlan, statuses: dict[str, RunStatus]) -> str:
    rows = [("run", "recipe", "values", "state", "action")]
    for run in plan.runs:
        status = statuses[run.name]
        values = " ".join(f"{k}={v}" for k, v in run.values) or "-"
        rows.append((run.name, run.recipe, values, status.describe(), status.action.value))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source = sweep_path(args.sweep)
    if args.estimate:
        return _estimate(source, args)
    try:
        spec = with_cli_options(load_sweep(source), args)
        slot_list = None
        if args.backend == "local":
            from launch.local_backend import slots, visible_gpus

            if spec.resources.nodes > 1:
                raise ConfigError("command line", [f"nodes={spec.resources.nodes}: the local backend uses one machine"])
            slot_list = slots(spec.resources, visible_gpus())
            spec = replace(spec, resources=slot_list[0].resources)
        if args.status and not args.overrides:
            args.overrides = stored_overrides(sweep_dir_of(spec, args.output_dir))
        plan = plan_sweep(spec, source, sweep_dir_of(spec, args.output_dir), args.overrides)
    except (ConfigError, ValueError) as err:
        print(f"sweep: {err}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _run(plan, spec, args, slot_list)
    except OSError as err:  # e.g. --output-dir is a file, or a folder that cannot be written
        where = f"{err.filename}: " if err.filename else ""
        print(f"sweep: {where}{err.strerror or err}", file=sys.stderr)
        return 1


def stored_overrides(sweep_dir: Path) -> list[str]:
    """The key=value overrides the sweep was last launched with (its manifest.json), for --status and --estimate
    given none: the runs are then the ones that were launched (their shards, their output folder)."""
    import json

    from launch.manifest import MANIFEST_JSON

    try:
        stored = json.loads((sweep_dir / MANIFEST_JSON).read_text())["invocation"]["cli_overrides"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(stored, list) or not all(isinstance(o, str) for o in stored):
        return []
    if stored:
        print(f"sweep: the overrides of its last launch ({sweep_dir / MANIFEST_JSON}): {' '.join(stored)}")
    return list(stored)


def _estimate(source: Path, args: argparse.Namespace) -> int:
    """--estimate: the sweep's runs resolved as for training (no backend, no eval checks), then train.cost."""
    from train.cost import check_utilisation, estimate_sweep, format_floor, format_sweep, gpu_peak, write_json

    try:
        gpu_peak(args.gpu, "bf16")
        if args.utilisation is not None:
            check_utilisation(args.utilisation)
        spec = with_cli_options(load_sweep(source), args)
        if not args.overrides:
            args.overrides = stored_overrides(sweep_dir_of(spec, args.output_dir))
        plan = plan_sweep(spec, source, sweep_dir_of(spec, args.output_dir), args.overrides, evaluate=False)
        runs = [(run.name, run.recipe, run.cfg) for run in plan.runs]
        estimate = estimate_sweep(
            spec.name, runs, processes=spec.resources.processes, gpu=args.gpu, utilisation=args.utilisation
        )
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"sweep: {err}", file=sys.stderr)
        return EXIT_CONFIG
    print(format_sweep(estimate))
    if args.floor:
        print("\n" + format_floor(estimate))
    if args.out:
        write_json(args.out, estimate.to_json())
    return 0


def _run(plan: SweepPlan, spec: SweepSpec, args: argparse.Namespace, slot_list) -> int:
    benchmarks = spec.eval.benchmarks or None
    statuses = {run.name: run_status(run.cfg, benchmarks, spec.eval.enabled) for run in plan.runs}
    will_train = [r for r in plan.runs if statuses[r.name].action in (Action.TRAIN, Action.RESUME)]
    will_eval = [r for r in plan.runs if statuses[r.name].action != Action.SKIP] if spec.eval.enabled else []
    missing = grouped_by_problem(will_train)
    if missing and not (args.dry_run or args.status):
        print(f"sweep: {ConfigError(str(plan.source), missing)}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in [*missing, *grouped_by_problem(will_eval, "path_warnings")]:
        print(f"sweep: warning: {warning}", file=sys.stderr)
    print(f"sweep {spec.name}: {len(plan.runs)} runs in {plan.sweep_dir} (W&B group {spec.name})")
    print(status_table(plan, statuses))
    if args.status:
        return 0
    to_train = will_train
    to_eval = [r for r in plan.runs if statuses[r.name].action == Action.EVAL] if spec.eval.enabled else []
    if not to_train and not to_eval:
        print("sweep: every run is trained and evaluated; nothing to do")
        return 0
    if args.backend == "slurm":
        return _slurm(plan, statuses, to_train, to_eval, args.dry_run)
    return _local(plan, statuses, to_train + to_eval, slot_list, args.dry_run)


def _local(plan: SweepPlan, statuses: dict[str, RunStatus], runs, slot_list, dry_run: bool) -> int:
    from launch.local_backend import LocalRunner
    from launch.manifest import Manifest

    order = [r for r in plan.runs if r in runs]
    if dry_run:
        for run in order:
            action = statuses[run.name].action
            print(f"\n# {run.name}: {action.value}")
            if action in (Action.TRAIN, Action.RESUME):
                print(shell_line(train_argv(run, slot_list[0].resources)))
            if plan.spec.eval.enabled:
                print(shell_line(eval_argv(run, plan.spec.eval.benchmarks)))
        return 0
    plan.sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(plan.sweep_dir / ".local.lock", "w") as lock:
        try:  # two local sweeps in one folder would train the same runs twice at once
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"sweep: another local sweep is running in {plan.sweep_dir}", file=sys.stderr)
            return 1
        manifest = Manifest(plan, "local", statuses)
        manifest.write()
        outcomes = LocalRunner(plan, manifest, statuses, slot_list).run(order)
    counts = {o: list(outcomes.values()).count(o) for o in sorted(set(outcomes.values()))}
    manifest.set(outcomes=counts)
    print(f"sweep: {', '.join(f'{n} {o}' for o, n in counts.items())}; manifest: {manifest.path}")
    if counts.get("stopped") or counts.get("preempted"):
        return EXIT_INTERRUPTED
    return 1 if counts.get("failed") else 0


def _slurm(plan: SweepPlan, statuses: dict[str, RunStatus], to_train, to_eval, dry_run: bool) -> int:
    from launch import slurm_backend
    from launch.manifest import Manifest

    resources = plan.spec.resources
    if dry_run:
        if to_train:
            print(f"\n# ---- training array ({len(to_train)} runs): sbatch TRAIN_SCRIPT")
            print(slurm_backend.train_script(plan, to_train, resources), end="")
            if plan.spec.eval.enabled:
                print("\n# ---- eval array: sbatch --dependency=aftercorr:<training job id> EVAL_SCRIPT")
                print(slurm_backend.eval_script(plan, to_train, resources), end="")
        if to_eval:
            print(f"\n# ---- eval-only array ({len(to_eval)} trained runs): sbatch EVAL_SCRIPT")
            print(slurm_backend.eval_script(plan, to_eval, resources), end="")
        return 0
    try:
        queued = _still_queued(plan, slurm_backend)
    except slurm_backend.SlurmError as err:
        print(f"sweep: {err}", file=sys.stderr)
        return 1
    if queued:  # a second copy of a queued task would train the same run folder at the same time
        for name, (task, _) in queued.items():
            print(f"sweep: {name} is still queued or running as {task}; not submitted again")
        to_train = [r for r in to_train if r.name not in queued]
        to_eval = [r for r in to_eval if r.name not in queued]
        if not to_train and not to_eval:
            return 0
    manifest = Manifest(plan, "slurm", statuses)
    for name, (_, before) in queued.items():  # keep their job ids, so that the next sweep sees them too
        if name in manifest.runs:
            manifest.runs[name].update({k: v for k, v in before.items() if k.startswith("slurm_")}, action="queued")
    try:
        submissions = slurm_backend.submit(plan, to_train, to_eval, resources)
    except slurm_backend.SlurmError as err:
        print(f"sweep: {err}", file=sys.stderr)
        manifest.set(error=str(err))
        return 1
    for sub in submissions:
        kind = "train" if sub.script.name.endswith("-train.sbatch") else "eval"
        for i, name in enumerate(sub.runs):
            manifest.runs[name][f"slurm_{kind}_task"] = f"{sub.job_id}_{i}"
            manifest.runs[name][f"slurm_{kind}_script"] = str(sub.script)
        print(f"sweep: submitted {sub.script.name} as job array {sub.job_id} ({len(sub.runs)} tasks)")
    manifest.set(slurm_jobs=[s.job_id for s in submissions])
    print(f"follow: squeue -j {','.join(s.job_id for s in submissions)}; logs in {plan.sweep_dir / 'logs'}")
    again = shell_line(["python", "-m", "launch.sweep", str(plan.source), "--output-dir", str(plan.sweep_dir)])
    print(f"status: {again} --status {shell_line(plan.cli_overrides)}".rstrip())
    return 0


def _still_queued(plan: SweepPlan, slurm_backend) -> dict[str, tuple[str, dict]]:
    """Runs whose task from an earlier submission is still pending or running: name -> (task, manifest record)."""
    from launch.manifest import MANIFEST_JSON

    try:
        previous = json.loads((plan.sweep_dir / MANIFEST_JSON).read_text())
    except (OSError, ValueError):
        return {}
    records = {r["name"]: r for r in previous["runs"]}
    tasks = {n: [r[k] for k in ("slurm_train_task", "slurm_eval_task") if r.get(k)] for n, r in records.items()}
    jobs = sorted({t.split("_")[0] for ts in tasks.values() for t in ts})
    live = slurm_backend.live_tasks(jobs)
    return {n: (next(t for t in ts if t in live), records[n]) for n, ts in tasks.items() if any(t in live for t in ts)}


if __name__ == "__main__":
    sys.exit(main())
