"""Experiment tracking: W&B (offline by default, no account needed), one W&B run per start of a run.

An offline W&B run cannot be resumed, so a resumed training run opens a new W&B run with the same name
and group; W&B groups them side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from train.config import WandbConfig


class Tracker:
    def __init__(self, cfg: WandbConfig, run_name: str, run_dir: Path, config: dict[str, Any], enabled: bool):
        self._run = None
        if not enabled or cfg.mode == "disabled":
            return
        import wandb

        self._run = wandb.init(
            mode=cfg.mode,
            project=cfg.project,
            entity=cfg.entity or None,
            group=cfg.group or run_name,
            name=run_name,
            dir=str(run_dir),
            config=config,
            reinit=True,
        )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._run is not None:
            self._run.log(metrics, step=step)

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
