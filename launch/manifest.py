"""The sweep manifest: which runs, their commands and states, what each invocation did (JSON + Markdown).

`<sweep_dir>/manifest.json` is rewritten atomically whenever a run changes state; `manifest.md` is the same as
a table. Earlier invocations stay in `history`, so a re-run sweep shows what was skipped, resumed or submitted.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from launch.commands import eval_argv, shell_line, train_argv
from launch.plan import SweepPlan
from launch.run_state import RunStatus
from train.typed_config import to_plain

MANIFEST_JSON = "manifest.json"
MANIFEST_MD = "manifest.md"


class Manifest:
    """The current invocation's record of every run; thread-safe updates, each written through to disk."""

    def __init__(self, plan: SweepPlan, backend: str, statuses: dict[str, RunStatus]):
        self.plan = plan
        self.path = plan.sweep_dir / MANIFEST_JSON
        self._lock = threading.Lock()
        spec = plan.spec
        self.invocation: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "backend": backend,
            "cli_overrides": list(plan.cli_overrides),
            "resources": to_plain(spec.resources),
        }
        self.runs: dict[str, dict[str, Any]] = {}
        for run in plan.runs:
            status = statuses[run.name]
            self.runs[run.name] = {
                "name": run.name,
                "recipe": run.recipe,
                "values": dict(run.values),
                "run_dir": str(run.run_dir),
                "state_before": status.state.value,
                "step_before": status.step,
                "total_steps": status.total_steps,
                "action": status.action.value,
                "train_command": shell_line(train_argv(run, spec.resources)),
                "eval_command": shell_line(eval_argv(run, spec.eval.benchmarks)) if spec.eval.enabled else "",
            }

    def update(self, name: str, **fields: Any) -> None:
        with self._lock:
            self.runs[name].update(fields)
            self._write()

    def set(self, **fields: Any) -> None:
        with self._lock:
            self.invocation.update(fields)
            self._write()

    def write(self) -> None:
        with self._lock:
            self._write()

    def _write(self) -> None:
        folder = self.plan.sweep_dir
        folder.mkdir(parents=True, exist_ok=True)
        history = _previous_history(self.path, self.invocation["time"])
        spec = self.plan.spec
        record = {
            "sweep": spec.name,
            "description": spec.description,
            "sweep_file": str(self.plan.source.resolve()),
            "sweep_dir": str(folder),
            "wandb_group": spec.name,
            "invocation": self.invocation,
            "runs": list(self.runs.values()),
            "history": history,
        }
        _write_atomic(self.path, json.dumps(record, indent=1) + "\n")
        _write_atomic(folder / MANIFEST_MD, self._markdown())

    def _markdown(self) -> str:
        spec = self.plan.spec
        inv = self.invocation
        lines = [
            f"# Sweep {spec.name}",
            "",
            spec.description,
            "",
            f"Sweep file: `{self.plan.source}`; backend: {inv['backend']}; invoked {inv['time']}; "
            f"W&B group: `{spec.name}`.",
            "",
            "| run | recipe | values | before | action | after | job |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.runs.values():
            values = " ".join(f"{k}={v}" for k, v in r["values"].items()) or "–"
            before = f"{r['state_before']} (step {r['step_before']}/{r['total_steps'] or '?'})"
            job = r.get("slurm_train_task") or r.get("slurm_eval_task") or "–"
            lines.append(
                f"| {r['name']} | {r['recipe']} | {values} | {before} | {r['action']} | {r.get('state_after', '–')} "
                f"| {job} |"
            )
        lines += ["", "## Commands", ""]
        for r in self.runs.values():
            lines += [f"### {r['name']}", "", "```bash", r["train_command"]]
            lines += [r["eval_command"]] if r["eval_command"] else []
            lines += ["```", ""]
        return "\n".join(lines)


def _previous_history(path: Path, now: str) -> list[dict[str, Any]]:
    """Earlier invocations: the old file's history plus its own invocation (with per-run actions)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    history = list(old.get("history", []))
    previous = old.get("invocation", {})
    if previous and previous.get("time") != now:
        actions = {r["name"]: {k: r.get(k) for k in ("action", "state_after", "slurm_train_task")} for r in old["runs"]}
        history.append({**previous, "runs": actions})
    return history


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
