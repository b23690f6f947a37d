"""Checkpoints that are written atomically and resume exactly.

`runs/<name>/checkpoints/<epoch_K | step_N>/` holds the trainable weights (a locked tower is rebuilt from
the run's config, so it is not stored again), optimizer and scheduler state, the trainer's position in the
data stream and a copy of the resolved config, so it loads on its own. A checkpoint is written to a
temporary folder, renamed into place, and only then named by the `latest` marker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "trainable.safetensors"
STATE = "trainer_state.json"
LATEST = "latest"
ENGINE = "deepspeed"  # under DeepSpeed: the engine's own checkpoint (model and ZeRO-partitioned optimizer states)
_NAME = re.compile(r"^(epoch|step)_(\d+)$")


def trainable_state(
    model: torch.nn.Module, full_state: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The trainable parameters, from the model or from a gathered full state dict (DeepSpeed ZeRO-3)."""
    if full_state is None:
        return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}
    return {n: full_state[n].detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def start_checkpoint(folder: Path, name: str) -> Path:
    """An empty temporary folder for checkpoint `name` (main process); fill it, then `finish_checkpoint`."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def finish_checkpoint(
    folder: Path,
    name: str,
    tmp: Path,
    *,
    weights: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any,
    state: dict[str, Any],
    config_yaml: str,
) -> Path:
    """Writes the rest into `tmp`, renames it to `folder/name` and points `folder/latest` at it (main process).

    `optimizer` None: its state is already in tmp/ENGINE (DeepSpeed writes its own, partitioned per rank).
    """
    save_file(weights, str(tmp / WEIGHTS))
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    (tmp / STATE).write_text(json.dumps(state, indent=1))
    (tmp / "config.yaml").write_text(config_yaml)
    final = folder / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    marker = folder / f".{LATEST}.tmp"
    marker.write_text(name)
    os.replace(marker, folder / LATEST)
    return final


def save_checkpoint(
    folder: Path,
    name: str,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    config_yaml: str,
) -> Path:
    """Writes `folder/name` atomically and points `folder/latest` at it. Call on the main process only."""
    tmp = start_checkpoint(folder, name)
    return finish_checkpoint(
        folder,
        name,
        tmp,
        weights=trainable_state(model),
        optimizer=optimizer,
        scheduler=scheduler,
        state=state,
        config_yaml=config_yaml,
    )


def load_weights(checkpoint: Path, model: torch.nn.Module) -> None:
    """Loads trainable weights into a model built from the run's config; frozen parts come from that build."""
    weights = load_file(str(checkpoint / WEIGHTS))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected:
        raise ValueError(f"{checkpoint / WEIGHTS}: weights for parameters the model lacks: {unexpected[:5]}")
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    absent = sorted(expected - set(weights))
    if absent:
        raise ValueError(f"{checkpoint / WEIGHTS}: no weights for trainable parameters {absent[:5]}")
    del missing  # frozen parameters and buffers: they come from the model's own build


def load_training_state(checkpoint: Path, optimizer: torch.optim.Optimizer | None, scheduler: Any) -> dict[str, Any]:
    """Scheduler and position (and the optimizer, unless None: DeepSpeed restores its own from ENGINE)."""
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", map_location="cpu", weights_only=True))
    scheduler.load_state_dict(torch.load(checkpoint / "scheduler.pt", map_location="cpu", weights_only=True))
    return json.loads((checkpoint / STATE).read_text())


def list_checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints ordered by optimizer step."""
    found = []
    for path in folder.glob("*") if folder.is_dir() else []:
        if _NAME.match(path.name) and (path / STATE).exists():
            found.append((json.loads((path / STATE).read_text())["step"], path.name, path))
    return [p for _, _, p in sorted(found)]


def resolve_resume(folder: Path, resume: str) -> Path | None:
    """`latest` -> the newest finished checkpoint (None if there is none yet); a path -> that checkpoint."""
    if not resume:
        return None
    if resume == LATEST:
        marker = folder / LATEST
        if marker.exists() and (folder / marker.read_text().strip() / STATE).exists():
            return folder / marker.read_text().strip()
        finished = list_checkpoints(folder)
        return finished[-1] if finished else None
    path = Path(resume)
    if not (path / STATE).exists():
        raise FileNotFoundError(f"train.resume={resume}: not a checkpoint folder (no {STATE})")
    return path
