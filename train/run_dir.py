"""A run folder that describes itself: resolved config, how it was started, code version, metrics, checkpoints."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from data_prep.provenance import code_version
from train.config import RecipeConfig
from train.typed_config import flatten, to_plain, to_yaml
from train.yaml_loading import load_yaml_file

# Keys that may differ between the first start of a run and a resumed one.
# The feature cache changes speed, not results.
_RESUMABLE_DIFFERENCES = {"train.resume", "train.check_memory", "cache", "cache_dir"}


class RunDirError(RuntimeError):
    pass


def check_run_dir(cfg: RecipeConfig) -> Path:
    """runs/<run_name>, after refusing a fresh start over an earlier run or a resume with another config.

    Read-only, so every process can run it before any process writes (see `write_run_start`).
    """
    run = Path(cfg.output_dir) / cfg.run_name
    config_file = run / "config.yaml"
    if config_file.exists():
        changed = _changed_keys(config_file, cfg)
        if not cfg.train.resume:
            if _never_trained(run) and not changed:  # a start that failed before its first step: start again
                return run
            raise RunDirError(
                f"{run} already holds a run; pass train.resume=latest to continue it, or pick another run_name"
            )
        if changed:
            raise RunDirError(f"{run}: the config changed since the run started ({', '.join(changed)})")
    return run


def _changed_keys(config_file: Path, cfg: RecipeConfig) -> list[str]:
    before = flatten(load_yaml_file(config_file, "run config") or {})
    now = flatten(to_plain(cfg))
    # A key the schema gained after the run started holds its default there: it changes nothing.
    defaults = flatten(to_plain(type(cfg)()))
    before = {**{k: v for k, v in defaults.items() if k not in before}, **before}
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    return [k for k in changed if k not in _RESUMABLE_DIFFERENCES]


def _never_trained(run: Path) -> bool:
    """No checkpoint and no logged step: what a start that failed before its first step leaves."""
    checkpoints = run / "checkpoints"
    has_checkpoint = checkpoints.is_dir() and any(p.name != ".tmp" for p in checkpoints.iterdir())
    metrics = run / "metrics.jsonl"
    return not has_checkpoint and not (metrics.is_file() and metrics.read_text().strip())


def write_run_start(run: Path, cfg: RecipeConfig, argv: list[str]) -> None:
    """Writes the resolved config (first start only) and appends how this start was launched."""
    run.mkdir(parents=True, exist_ok=True)
    config_file = run / "config.yaml"
    if not config_file.exists():
        config_file.write_text(to_yaml(cfg))
    start = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": argv,
        "python": sys.version.split()[0],
        "host": platform.node(),
        "code": code_version(),
    }
    with open(run / "starts.jsonl", "a") as f:
        f.write(json.dumps(start) + "\n")


def write_caches_record(run: Path, caches) -> None:
    """feature_caches.json: which frozen parts this start trained from cached outputs, and from which folders."""
    record = {
        "image": None if caches.image is None else str(caches.image.folder),
        "text": None if caches.text is None else str(caches.text.folder),
        "notes": caches.notes,
    }
    (run / "feature_caches.json").write_text(json.dumps(record, indent=1) + "\n")


class MetricsLog:
    """Appends one JSON object per logged step to metrics.jsonl (always, whatever the tracker)."""

    def __init__(self, path: Path):
        self.path = path

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def keep_until(self, step: int) -> int:
        """On resume from `step`: drops the lines logged after it (those steps run again) and a last line torn by a
        kill mid-write (with a note); returns how many lines were dropped. A damaged line before the last one is a
        RunDirError naming the file and line."""
        if not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines()
        kept = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if number == len(lines):  # the write a kill interrupted: that step runs again anyway
                    print(f"note: {self.path} line {number} was cut short by an interrupted write; dropped")
                    continue
                raise RunDirError(f"{self.path} line {number}: not a JSON record ({line[:60]!r}...)") from None
            if record["step"] <= step:
                kept.append(line)
        if len(kept) != len(lines):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(self.path)
        return len(lines) - len(kept)
