"""SLURM backend: a training job array (one task per run) and an eval array that follows it task by task.

Each training task starts one launcher per node with `srun` (python train/finetune.py for a lone process,
else `accelerate launch` with machine count, rank and main address from SLURM's variables). Near the time
limit SLURM sends USR1 to the batch shell only (`--signal=B:USR1@S`): the shell asks the job steps to stop with
SIGTERM (`scancel --signal=TERM $SLURM_JOB_ID` reaches the srun steps, not the shell; signalling srun itself
would cancel the step with SIGKILL), the trainers finish their step, checkpoint and exit 75, and the shell
requeues its own array element, which resumes with train.resume=latest. Logs append across requeues.
The eval array depends on the training array with `aftercorr`: eval task i starts once training task i has
finished successfully, however often it was requeued.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launch.commands import FINETUNE, accelerate_config, python, shown_path, trainer_args
from launch.plan import PlannedRun, SweepPlan
from launch.sweep_config import ResourceSpec, SlurmSpec

CPUS_PER_GPU = 8


class SlurmError(RuntimeError):
    pass


@dataclass(frozen=True)
class Submission:
    job_id: str
    script: Path
    runs: tuple[str, ...]  # run names by array index


def cpus_per_node(resources: ResourceSpec, slurm: SlurmSpec) -> int:
    if slurm.cpus_per_task:
        return slurm.cpus_per_task
    return CPUS_PER_GPU * resources.processes_per_node if resources.gpus_per_run else resources.processes_per_node


def _headers(
    plan: SweepPlan, kind: str, count: int, *, nodes: int, gpus_per_node: int, cpus: int, time_limit: str
) -> list[str]:
    spec = plan.spec
    slurm = spec.slurm
    logs = plan.sweep_dir / "logs"
    throttle = f"%{slurm.max_parallel}" if slurm.max_parallel else ""
    lines = [
        f"--job-name={spec.name}-{kind}",
        f"--array=0-{count - 1}{throttle}",
        f"--nodes={nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={cpus}",
    ]
    if gpus_per_node:
        lines.append(f"--gpus-per-node={gpus_per_node}")
    for option, value in (("partition", slurm.partition), ("time", time_limit), ("mem", slurm.mem)):
        if value:
            lines.append(f"--{option}={value}")
    for option, value in (("account", slurm.account), ("qos", slurm.qos)):
        if value:
            lines.append(f"--{option}={value}")
    lines += [
        f"--chdir={Path.cwd()}",
        f"--output={logs}/slurm-%A_%a.{kind}.out",
        "--open-mode=append",  # a requeued task appends to its log
        "--requeue",
    ]
    return ["#SBATCH " + line for line in lines] + [f"#SBATCH {option}" for option in slurm.extra_sbatch]


def _hyperparameters(run: PlannedRun, processes: int) -> str:
    """One comment line per run with what a reader checks first (resolved from the recipe and overrides)."""
    cfg = run.cfg
    micro = cfg.data.batch_size or "auto"  # auto: the trainer fits it to the GPU (train/batch_planner.py)
    accumulation = (
        cfg.train.global_batch_size // max(1, cfg.data.batch_size * processes) if cfg.data.batch_size else "?"
    )
    parts = [
        f"model={cfg.model.name}",
        f"loss={cfg.loss.name}",
        f"lr={cfg.optim.lr:g}",
        f"warmup_steps={cfg.optim.warmup_steps}",
        f"schedule={cfg.optim.schedule}",
        f"epochs={cfg.train.epochs}",
        f"global_batch={cfg.train.global_batch_size} ({micro}/process x {processes} x {accumulation})",
        f"precision={cfg.train.precision}",
        f"seed={cfg.seed}",
    ]
    if cfg.train.max_steps:
        parts.append(f"max_steps={cfg.train.max_steps}")
    return " ".join(parts)


def _run_cases(runs: Sequence[PlannedRun], body, indent: str = "    ") -> list[str]:
    lines = ['case "${SLURM_ARRAY_TASK_ID}" in']
    for i, run in enumerate(runs):
        lines.append(f"{indent}{i})")
        lines += [f"{indent}    {line}" for line in body(run)]
        lines.append(f"{indent}    ;;")
    lines.append(f'{indent}*) echo "no run for array task ${{SLURM_ARRAY_TASK_ID}}" >&2; exit 2 ;;')
    lines.append("esac")
    return lines


def _srun(nodes: str, resources: ResourceSpec) -> str:
    # Explicit CPUs (and GPUs): since SLURM 22.05 srun no longer inherits the job's --cpus-per-task.
    gpus = f" --gpus-per-node={resources.processes_per_node}" if resources.gpus_per_run else ""
    return f'srun --nodes={nodes} --ntasks-per-node=1 --cpus-per-task="$SLURM_CPUS_PER_TASK"{gpus}'


def _launcher(resources: ResourceSpec) -> list[str]:
    """Bash lines that set LAUNCHER (an array) to start the trainer on every node of the allocation."""
    if resources.processes == 1:
        return [f"LAUNCHER=({_srun('1', resources)} {shlex.quote(python())} {shlex.quote(shown_path(FINETUNE))})"]
    # One accelerate launcher per node; rank, machine count and main address come from SLURM per node.
    node_command = (
        'exec "$0" -m accelerate.commands.launch'
        f" --config_file {shlex.quote(shown_path(accelerate_config(resources)))}"
        ' --num_machines "$SLURM_NNODES" --machine_rank "$SLURM_NODEID"'
        ' --main_process_ip "$MAIN_HOST" --main_process_port "$MAIN_PORT"'
        f' --num_processes {resources.processes} --mixed_precision "$PRECISION"'
        f' {shlex.quote(shown_path(FINETUNE))} "$@"'
    )
    srun = _srun('"$SLURM_NNODES"', resources)
    return [
        'MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
        "MAIN_PORT=$((20000 + SLURM_JOB_ID % 20000))  # one port per task: tasks may share a node",
        "export MAIN_HOST MAIN_PORT PRECISION",
        f"LAUNCHER=({srun} --kill-on-bad-exit=1 bash -c {shlex.quote(node_command)} {shlex.quote(python())})",
    ]


def train_script(plan: SweepPlan, runs: Sequence[PlannedRun], resources: ResourceSpec) -> str:
    spec = plan.spec
    slurm = spec.slurm
    cpus = cpus_per_node(resources, slurm)
    gpus_per_node = resources.processes_per_node if resources.gpus_per_run else 0
    threads = max(1, cpus // resources.processes_per_node)
    logs = plan.sweep_dir / "logs"
    header = [
        "#!/bin/bash",
        f"# Sweep {spec.name}: training, one array task per run. Written by `python -m launch.sweep`, which also",
        "# resubmits it: finished runs are skipped, unfinished ones resume from their latest checkpoint.",
        *_headers(
            plan,
            "train",
            len(runs),
            nodes=resources.nodes,
            gpus_per_node=gpus_per_node,
            cpus=cpus,
            time_limit=slurm.time,
        ),  # fmt: skip
        f"#SBATCH --signal=B:USR1@{slurm.signal_seconds}",
        "set -uo pipefail",
        "",
    ]

    def body(run: PlannedRun) -> list[str]:
        args = " ".join(shlex.quote(a) for a in trainer_args(run))
        return [
            f"# {run.name}: {_hyperparameters(run, resources.processes)}",
            f"RUN_NAME={shlex.quote(run.name)}",
            f"PRECISION={run.cfg.train.accelerate_mixed_precision}",
            f"ARGS=({args})",
        ]

    script = header + _run_cases(runs, body)
    script += [
        "",
        f'LOG={shlex.quote(str(logs))}/"$RUN_NAME".train.log',
        'echo "task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} trains $RUN_NAME; log: $LOG"',
        'exec >>"$LOG" 2>&1',
        'echo "[launch] $(date -Is) ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} (job $SLURM_JOB_ID, restart '
        '${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST: $RUN_NAME"',
        f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-{threads}}}"',
        "# torchrun gives its workers this long after SIGTERM before SIGKILL: time to finish a step and checkpoint.",
        f"export TORCH_ELASTIC_SHUTDOWN_TIMEOUT={max(30, slurm.signal_seconds - 30)}",
        *_launcher(resources),
        "",
        "PREEMPTED=0",
        "on_usr1() {",
        "    PREEMPTED=1",
        '    echo "[launch] $(date -Is) USR1: time limit near; asking $RUN_NAME to checkpoint and stop"',
        '    scancel --signal=TERM "$SLURM_JOB_ID"  # the job steps (trainers), not this shell',
        "}",
        "trap on_usr1 USR1",
        '"${LAUNCHER[@]}" "${ARGS[@]}" &',
        "STEP_PID=$!",
        "while :; do",
        '    wait "$STEP_PID"',
        "    RC=$?",
        '    kill -0 "$STEP_PID" 2>/dev/null || break  # still running: the wait was cut short by the USR1 trap',
        "done",
        'echo "[launch] $(date -Is) trainer exited with $RC"',
        "if [[ $PREEMPTED == 1 ]]; then",
        '    echo "[launch] requeueing ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}; it resumes from its checkpoint"',
        '    scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
        "    exit 0",
        "fi",
        'exit "$RC"',
    ]
    return "\n".join(script) + "\n"


def eval_script(plan: SweepPlan, runs: Sequence[PlannedRun], resources: ResourceSpec) -> str:
    spec = plan.spec
    slurm = spec.slurm
    gpus = 1 if resources.gpus_per_run else 0
    cpus = slurm.cpus_per_task or (CPUS_PER_GPU if gpus else 1)
    logs = plan.sweep_dir / "logs"
    benchmarks = " ".join(spec.eval.benchmarks)
    header = [
        "#!/bin/bash",
        f"# Sweep {spec.name}: evaluation of every checkpoint, one array task per run (python -m eval.run skips",
        "# results already written, so a requeued or repeated task only scores what is missing).",
        *_headers(
            plan, "eval", len(runs), nodes=1, gpus_per_node=gpus, cpus=cpus, time_limit=spec.eval.time or slurm.time
        ),
        "#SBATCH --kill-on-invalid-dep=yes",  # training failed: drop its eval instead of waiting forever
        "set -uo pipefail",
        "",
    ]

    def body(run: PlannedRun) -> list[str]:
        return [f"RUN_NAME={shlex.quote(run.name)}", f"RUN_DIR={shlex.quote(str(run.run_dir))}"]

    script = header + _run_cases(runs, body)
    extra = f" --benchmarks {benchmarks}" if benchmarks else ""
    srun = 'srun --nodes=1 --ntasks=1 --cpus-per-task="$SLURM_CPUS_PER_TASK"' + (" --gpus-per-node=1" if gpus else "")
    script += [
        "",
        f'LOG={shlex.quote(str(logs))}/"$RUN_NAME".eval.log',
        'echo "task ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} evaluates $RUN_NAME; log: $LOG"',
        'exec >>"$LOG" 2>&1',
        'echo "[launch] $(date -Is) ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID} on $SLURM_JOB_NODELIST: $RUN_NAME"',
        f'export OMP_NUM_THREADS="${{OMP_NUM_THREADS:-{cpus}}}"',
        f'exec {srun} {shlex.quote(python())} -m eval.run --run "$RUN_DIR"{extra}',
    ]
    return "\n".join(script) + "\n"


def live_tasks(job_ids: Sequence[str]) -> set[str]:
    """`<job>_<task>` of every array task of these jobs still pending or running (one squeue line per task)."""
    if not job_ids:
        return set()
    try:
        result = subprocess.run(
            ["squeue", "--noheader", "--array", "--format=%i", f"--jobs={','.join(job_ids)}"],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise SlurmError("squeue not found: run on a SLURM login node") from None
    # squeue fails when none of the jobs is known any more: nothing is live then.
    return set(result.stdout.split()) if result.returncode == 0 else set()


def sbatch(script: Path, *options: str) -> str:
    """Submits a script; returns the job id."""
    try:
        result = subprocess.run(["sbatch", "--parsable", *options, str(script)], capture_output=True, text=True)
    except FileNotFoundError:
        raise SlurmError(
            "sbatch not found: run on a SLURM login node (or start launch/slurm_local_cluster.sh)"
        ) from None
    if result.returncode != 0:
        raise SlurmError(f"sbatch {script.name} failed: {result.stderr.strip() or result.stdout.strip()}")
    job_id = result.stdout.strip().split(";")[0]
    if not re.fullmatch(r"\d+", job_id):
        raise SlurmError(f"sbatch {script.name}: unexpected answer {result.stdout!r}")
    return job_id


def submit(
    plan: SweepPlan, train_runs: Sequence[PlannedRun], eval_runs: Sequence[PlannedRun], resources: ResourceSpec
) -> list[Submission]:
    """Writes the scripts under <sweep_dir>/slurm/ and submits them: training, its eval, and eval-only runs."""
    folder = plan.sweep_dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    (plan.sweep_dir / "logs").mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out: list[Submission] = []
    if train_runs:
        script = _write(folder / f"{stamp}-train.sbatch", train_script(plan, train_runs, resources))
        train_id = sbatch(script)
        out.append(Submission(train_id, script, tuple(r.name for r in train_runs)))
        if plan.spec.eval.enabled:
            script = _write(folder / f"{stamp}-eval.sbatch", eval_script(plan, train_runs, resources))
            eval_id = sbatch(script, f"--dependency=aftercorr:{train_id}")
            out.append(Submission(eval_id, script, tuple(r.name for r in train_runs)))
    if eval_runs:
        script = _write(folder / f"{stamp}-eval-only.sbatch", eval_script(plan, eval_runs, resources))
        out.append(Submission(sbatch(script), script, tuple(r.name for r in eval_runs)))
    return out


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path
