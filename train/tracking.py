"""Experiment tracking: W&B (offline by default, no account needed), one W&B run per run folder.

The W&B run id is stored in the run folder (`wandb_ids.json`, one id per job type: train, eval) and every start
resumes it (`resume="allow"`), so a run resumed three times is one W&B run; offline, each start writes its own
`offline-run-*` folder with that id and `wandb sync` appends them in order. A start with nothing left to train
opens no W&B run. Training metrics are logged under `train/`, eval's under `eval/`; tags name the recipe, loss,
seed and sweep so a W&B runs table filters by them.
"""

from __future__ import annotations

import json
import secrets
import string
from pathlib import Path
from typing import Any

from train.config import WandbConfig

IDS_FILE = "wandb_ids.json"
_ID_ALPHABET = string.ascii_lowercase + string.digits


def stored_run_id(run_dir: Path, job_type: str) -> str:
    """The W&B id of this run folder's `job_type` run, made (8 characters, as W&B's own) and stored at first use."""
    path = run_dir / IDS_FILE
    try:
        ids = json.loads(path.read_text())
        ids = ids if isinstance(ids, dict) else {}
    except (OSError, ValueError):
        ids = {}
    if not isinstance(ids.get(job_type), str):
        ids[job_type] = "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = run_dir / f".{IDS_FILE}.tmp"
        tmp.write_text(json.dumps(ids, indent=1) + "\n")
        tmp.replace(path)
    return ids[job_type]


def run_tags(recipe: str, config: dict[str, Any]) -> list[str]:
    """recipe:, loss:, seed:, model: and sweep: tags from a flattened config (W&B tags are at most 64 characters)."""
    tags = [f"recipe:{recipe}"] if recipe else []
    for key, name in (("loss.name", "loss"), ("seed", "seed"), ("model.name", "model"), ("wandb.group", "sweep")):
        if config.get(key) not in (None, ""):
            tags.append(f"{name}:{config[key]}")
    return [tag[:64] for tag in tags]


class Tracker:
    def __init__(
        self,
        cfg: WandbConfig,
        run_name: str,
        run_dir: Path,
        config: dict[str, Any],
        enabled: bool,
        recipe: str = "",
    ):
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
            id=stored_run_id(run_dir, "train"),
            resume="allow",
            job_type="train",
            tags=run_tags(recipe, config),
            dir=str(run_dir),
            config=config,
            reinit=True,
        )
        self._run.define_metric("train/*", step_metric="train/step")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self._run is not None:
            self._run.log({"train/step": step, **{f"train/{k}": v for k, v in metrics.items() if k != "step"}})

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()
            self._run = None
