"""Local backend: the sweep's runs on this machine, one after another, or one per GPU group in parallel.

Each run trains (train.resume=latest: a fresh start or a resume) and is then evaluated. Children run in their
own session, so Ctrl-C reaches only the sweep, which then asks every running trainer to checkpoint (SIGTERM)
and waits for it: a later `python -m launch.sweep` resumes from there.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from launch.commands import child_env, eval_argv, shell_line, train_argv
from launch.manifest import Manifest
from launch.plan import PlannedRun, SweepPlan
from launch.run_state import Action, RunStatus, run_status
from launch.sweep_config import ResourceSpec

PREEMPTED_EXIT_CODE = 75  # train.finetune.PREEMPTED_EXIT_CODE (not imported: that module loads accelerate)


@dataclass(frozen=True)
class Slot:
    """Where one run executes: a CUDA_VISIBLE_DEVICES value (None: leave the environment alone, CPU)."""

    cuda_devices: str | None
    resources: ResourceSpec


def visible_gpus() -> list[str]:
    import torch

    count = torch.cuda.device_count()
    listed = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return listed[:count] if listed else [str(i) for i in range(count)]


def slots(resources: ResourceSpec, gpus: Sequence[str]) -> list[Slot]:
    """GPU groups of gpus_per_run (at least one GPU per run when there are GPUs), else one CPU slot."""
    if not gpus:
        return [Slot(None, replace(resources, gpus_per_run=0, nodes=1))]
    per_run = max(1, resources.gpus_per_run)
    if per_run > len(gpus):
        raise ValueError(f"gpus_per_run={per_run} but only {len(gpus)} GPUs are visible")
    groups = [gpus[i : i + per_run] for i in range(0, len(gpus) - per_run + 1, per_run)]
    return [Slot(",".join(g), replace(resources, gpus_per_run=per_run, nodes=1)) for g in groups]


class LocalRunner:
    def __init__(self, plan: SweepPlan, manifest: Manifest, statuses: dict[str, RunStatus], slot_list: list[Slot]):
        self.plan = plan
        self.manifest = manifest
        self.statuses = statuses
        self.slots = slot_list
        self.logs = plan.sweep_dir / "logs"
        self._stopping = threading.Event()
        self._children: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._done = 0

    def run(self, runs: Sequence[PlannedRun]) -> dict[str, str]:
        """Runs every given run; returns name -> outcome (done, failed, preempted, stopped)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        pending: queue.Queue[PlannedRun] = queue.Queue()
        for run in runs:
            pending.put(run)
        outcomes: dict[str, str] = {}
        total = len(runs)

        def worker(slot: Slot) -> None:
            while not self._stopping.is_set():
                try:
                    run = pending.get_nowait()
                except queue.Empty:
                    return
                outcomes[run.name] = self._run_one(run, slot, total)

        previous = signal.signal(signal.SIGTERM, self._on_term)
        pool = ThreadPoolExecutor(max_workers=len(self.slots), thread_name_prefix="run")
        futures = [pool.submit(worker, slot) for slot in self.slots]
        try:
            for future in futures:
                while not future.done():  # polling keeps the main thread responsive to Ctrl-C
                    time.sleep(0.2)
                future.result()
        except KeyboardInterrupt:
            self.stop("interrupted")
        finally:
            pool.shutdown(wait=True)
            signal.signal(signal.SIGTERM, previous)
        for run in runs:
            outcomes.setdefault(run.name, "stopped")
        return outcomes

    def _on_term(self, signum, frame) -> None:
        self.stop("SIGTERM")

    def stop(self, why: str) -> None:
        """No new runs; running trainers get SIGTERM (checkpoint, exit 75) and are waited for."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        print(f"sweep: {why}: asking running trainers to checkpoint and stop", flush=True)
        with self._lock:
            children = list(self._children)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def _run_one(self, run: PlannedRun, slot: Slot, total: int) -> str:
        status = self.statuses[run.name]
        action = status.action
        evaluate = self.plan.spec.eval.enabled
        started = time.time()
        logs = f"{self.logs / run.name}.{{train,eval}}.log"
        self._say(run, f"{action.value} ({status.describe()}) on {_where(slot)}; log: {logs}")
        if action in (Action.TRAIN, Action.RESUME):
            rc = self._child(run, "train", train_argv(run, slot.resources), slot)
            if rc == PREEMPTED_EXIT_CODE:
                return self._finish(run, "preempted", started, train_exit=rc)
            if rc != 0:  # our own SIGTERM before the trainer could handle it is a stop, not a failure
                return self._finish(run, "stopped" if self._stopping.is_set() else "failed", started, train_exit=rc)
        if evaluate and action != Action.SKIP and not self._stopping.is_set():
            rc = self._child(run, "eval", eval_argv(run, self.plan.spec.eval.benchmarks), slot)
            if rc != 0:
                return self._finish(run, "stopped" if self._stopping.is_set() else "failed", started, eval_exit=rc)
        return self._finish(run, "stopped" if self._stopping.is_set() else "done", started)

    def _child(self, run: PlannedRun, kind: str, argv: list[str], slot: Slot) -> int:
        log = self.logs / f"{run.name}.{kind}.log"
        with open(log, "a") as out:
            out.write(f"\n[launch] {time.strftime('%Y-%m-%dT%H:%M:%S')} {shell_line(argv)}\n")
            out.flush()
            child = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=child_env(slot.cuda_devices, len(self.slots)),
                start_new_session=True,  # Ctrl-C in the terminal must not hit the trainer mid-step
            )
            with self._lock:
                self._children.add(child)
            if self._stopping.is_set():
                child.send_signal(signal.SIGTERM)
            try:
                rc = child.wait(timeout=None)
            finally:
                with self._lock:
                    self._children.discard(child)
        if rc not in (0, PREEMPTED_EXIT_CODE) and not self._stopping.is_set():
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            self._say(run, f"{kind} exited with {rc}; last lines of {log}:\n{tail}")
        return rc

    def _finish(self, run: PlannedRun, outcome: str, started: float, **fields) -> str:
        after = run_status(run.cfg, self.plan.spec.eval.benchmarks or None, self.plan.spec.eval.enabled)
        self.manifest.update(
            run.name, outcome=outcome, state_after=after.state.value, seconds=round(time.time() - started, 1), **fields
        )
        with self._lock:
            self._done += 1
            done = self._done
        self._say(run, f"{outcome} in {time.time() - started:.0f}s, now {after.describe()} [{done} finished]")
        return outcome

    def _say(self, run: PlannedRun, text: str) -> None:
        print(f"[{run.index + 1}/{len(self.plan.runs)}] {run.name}: {text}", flush=True)


def _where(slot: Slot) -> str:
    if slot.cuda_devices is None:
        n = slot.resources.processes
        return f"CPU ({n} process{'es' if n > 1 else ''})"
    return f"GPU {slot.cuda_devices}"
