"""How many torch threads a process uses: its share of the cores it may run on, never more.

torch starts as many OpenMP threads as the machine has cores in every process. Two processes (a sweep's runs, data
workers, the ranks of a CPU run, a CI job) then run more threads than there are cores, and OpenMP's barriers wait on
descheduled threads: a tiny CPU step took 4x longer at load 3.5 than with one thread. So each process takes
cores / processes on this host, less its data workers (they decode on the same cores), at least 1.

The cores a process may use are those of its CPU affinity, or $CLIPABLATE_CORES when a launcher gave it a share
(the local sweep sets it for runs that share a machine). An explicit count (a recipe's train.cpu_threads, a tool's
--cpu-threads) or $OMP_NUM_THREADS wins. CPU sums depend on the thread count, so the count is recorded (starts.jsonl,
eval provenance) and resuming with another is allowed (it changes rounding, not the method).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

CORES_VARIABLE = "CLIPABLATE_CORES"


def usable_cores(env: Mapping[str, str] = os.environ) -> int:
    """$CLIPABLATE_CORES when a launcher set it, else the cores this process's affinity allows."""
    given = env.get(CORES_VARIABLE, "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str  # why this count, for starts.jsonl and the start line

    def as_record(self) -> dict[str, object]:
        return {"cpu_threads": self.threads, "cpu_threads_from": self.source}


def choose_threads(
    requested: int, processes_on_host: int, data_workers: int, env: Mapping[str, str] = os.environ
) -> ThreadChoice:
    """`requested` > 0 wins, then $OMP_NUM_THREADS, then the cores' share (module docstring)."""
    if requested > 0:
        return ThreadChoice(requested, "set explicitly")
    omp = env.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) > 0:
        return ThreadChoice(int(omp), "OMP_NUM_THREADS")
    cores, processes = usable_cores(env), max(1, processes_on_host)
    threads = max(1, cores // processes - max(0, data_workers))
    where = f"${CORES_VARIABLE}" if env.get(CORES_VARIABLE, "").isdigit() else "cores"
    return ThreadChoice(threads, f"auto: {cores} {where} / {processes} processes - {data_workers} data workers")


def apply_threads(choice: ThreadChoice) -> None:
    import torch

    torch.set_num_threads(choice.threads)


def processes_on_host(num_processes: int, env: Mapping[str, str] = os.environ) -> int:
    """The processes of this job on this machine: torchrun's LOCAL_WORLD_SIZE, else all of them."""
    local = env.get("LOCAL_WORLD_SIZE", "")
    return int(local) if local.isdigit() and int(local) > 0 else max(1, num_processes)
