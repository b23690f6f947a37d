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

# Keys that may differ between the first start of a run and a resumed one: they change speed, logging or how long
# the run goes on, not the method (the feature cache, data workers, threads: speed; W&B, logging, checkpoint cadence,
# eval settings: what is written; max_steps/epochs: how far, with the schedule of the first start unless
# train.stretch_schedule). A resume with other changes is refused with the list of them.
_RESUMABLE_DIFFERENCES = {
    "train.resume", "train.check_memory", "cache", "cache_dir", "data.workers", "train.cpu_threads",
    "train.log_every_steps", "train.checkpoint_every_steps", "train.max_steps", "train.epochs",
    "train.stretch_schedule", "train.compile", "output_dir", "run_name",  # where the folder lies: it may be moved or renamed
}  # fmt: skip
_RESUMABLE_PREFIXES = ("wandb.", "eval.")


def resumable(key: str) -> bool:
    return key in _RESUMABLE_DIFFERENCES or key.startswith(_RESUMABLE_PREFIXES)


class RunDirError(RuntimeError):
    pass


def check_run_dir(cfg: RecipeConfig) -> Path:
    """runs/<run_name>, after refusing a fresh start over an earlier run or a resume with another config.

    Read-only, so every process can run it before any process writes (see `write_run_start`).
    """
    run = Path(cfg.output_dir) / cfg.run_name
    config_file = run / "config.yaml"
    if config_file.exists():
        changes = config_changes(config_file, cfg)
        refused = [f"{key}: {before!r} -> {after!r}" for key, (before, after) in changes.items() if not resumable(key)]
        if not cfg.train.resume:
            if _never_trained(run) and not refused:  # a start that failed before its first step: start again
                return run
            raise RunDirError(
                f"{run} already holds a run; pass train.resume=latest to continue it, or pick another run_name"
            )
        if refused:
            raise RunDirError(
                f"{run}: the config changed since the run started, in keys a resume may not change (they change the "
                f"method; start a new run_name instead): {'; '.join(refused)}"
            )
    return run


def config_changes(config_file: Path, cfg: RecipeConfig) -> dict[str, tuple[object, object]]:
    """key -> (the run's value, this start's value) for every key that differs."""
    before = flatten(load_yaml_file(config_file, "run config") or {})
    now = flatten(to_plain(cfg))
    # A key the schema gained after the run started holds its default there: it changes nothing.
    defaults = flatten(to_plain(type(cfg)()))
    before = {**{k: v for k, v in defaults.items() if k not in before}, **before}
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    return {k: (before.get(k), now.get(k)) for k in changed if k != "train.resume"}


def _never_trained(run: Path) -> bool:
    """No checkpoint and no logged step: what a start that failed before its first step leaves."""
    checkpoints = run / "checkpoints"
    has_checkpoint = checkpoints.is_dir() and any(p.name != ".tmp" for p in checkpoints.iterdir())
    metrics = run / "metrics.jsonl"
    return not has_checkpoint and not (metrics.is_file() and metrics.read_text().strip())


def write_run_start(run: Path, cfg: RecipeConfig, argv: list[str], extra: dict | None = None) -> None:
    """Writes the resolved config (at the first start, and again when a resume brings allowed changes: config.yaml is
    what the run now is) and appends how this start was launched (`extra`: e.g. the CPU threads it chose)."""
    run.mkdir(parents=True, exist_ok=True)
    config_file = run / "config.yaml"
    changes = config_changes(config_file, cfg) if config_file.exists() else {}
    if not config_file.exists() or changes:  # a resume's allowed changes: config.yaml is what the run now is
        tmp = run / ".config.yaml.tmp"
        tmp.write_text(to_yaml(cfg))
        tmp.replace(config_file)
    if changes:
        print(f"resume with changes: {'; '.join(f'{k}: {b!r} -> {a!r}' for k, (b, a) in changes.items())}")
    start = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": argv,
        "python": sys.version.split()[0],
        "host": platform.node(),
        "code": code_version(),
        **(extra or {}),
        **({"config_changes": {k: list(v) for k, v in changes.items()}} if changes else {}),
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
