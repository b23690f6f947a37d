"""Checkpoints that are written atomically, prove themselves, and resume exactly.

`runs/<name>/checkpoints/<epoch_K | step_N>/` holds the trainable weights (a locked tower is rebuilt from
the run's config, so it is not stored again), optimizer and scheduler state, the trainer's position in the
data stream and a copy of the resolved config, so it loads on its own. A checkpoint is written to a
temporary folder, renamed into place, and only then named by the `latest` marker.

`checksums.json`, written last, records the size and sha256 of every other file: resume verifies them and falls
back to the newest intact checkpoint with a warning naming the damaged file (or stops in one line when none is
intact), and eval refuses a damaged checkpoint; loaded weights must be finite. A disk that fills up while a
checkpoint is written leaves no temporary folder and says how many bytes the checkpoint needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from data_prep.provenance import sha256_file
from models.safetensors_file import save_safetensors

WEIGHTS = "trainable.safetensors"
STATE = "trainer_state.json"
CHECKSUMS = "checksums.json"
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
    try:
        save_safetensors(weights, tmp / WEIGHTS)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        (tmp / "config.yaml").write_text(config_yaml)
        (tmp / CHECKSUMS).write_text(json.dumps(file_checksums(tmp), indent=1))
    except (OSError, RuntimeError, SafetensorError) as err:  # a full disk: each writer raises its own kind
        written = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
        needed = written + sum(t.numel() * t.element_size() for t in weights.values())
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"checkpoint {name} could not be written to {folder} ({err}); it needs about {needed:,} bytes there "
            "(the weights alone, plus optimizer state); the temporary folder was removed and earlier checkpoints "
            "are intact"
        ) from None
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


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written, or none intact to resume from; the message says what and where."""


def file_checksums(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under `folder` (checksums.json itself excluded), by relative path."""
    out = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS):
        out[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    return out


def checkpoint_problems(checkpoint: Path) -> list[str]:
    """What is wrong with a checkpoint's files against its checksums.json ([] = intact). A checkpoint written before
    checksums were recorded is only checked for its files being there and non-empty."""
    record = checkpoint / CHECKSUMS
    if not record.is_file():
        required = [checkpoint / WEIGHTS, checkpoint / STATE]
        return [f"{p}: missing or empty" for p in required if not p.is_file() or p.stat().st_size == 0]
    try:
        expected = json.loads(record.read_text())
    except ValueError:
        return [f"{record}: unreadable"]
    problems = []
    for name, want in expected.items():
        path = checkpoint / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.stat().st_size != want["bytes"]:
            problems.append(f"{path}: {path.stat().st_size} bytes, {want['bytes']} written")
        elif sha256_file(path) != want["sha256"]:
            problems.append(f"{path}: sha256 differs from what was written (damaged in place)")
    return problems


def load_weights(checkpoint: Path, model: torch.nn.Module) -> None:
    """Loads trainable weights into a model built from the run's config; frozen parts come from that build. The
    checkpoint's files must match their checksums and the weights be finite (ValueError naming the file)."""
    problems = checkpoint_problems(checkpoint)
    if problems:
        raise ValueError(f"checkpoint {checkpoint} is damaged: {'; '.join(problems)}")
    weights = load_file(str(checkpoint / WEIGHTS))
    bad = [name for name, tensor in weights.items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if bad:
        raise ValueError(f"{checkpoint / WEIGHTS}: non-finite weights in {', '.join(bad[:5])}")
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


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step a checkpoint records; None when its trainer_state.json is missing or unreadable."""
    try:
        return int(json.loads((path / STATE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def list_checkpoints(folder: Path) -> list[Path]:
    """Finished checkpoints ordered by optimizer step (one whose trainer_state.json cannot be read is damaged: it
    is left out here, and resume warns about it)."""
    found = []
    for path in folder.glob("*") if folder.is_dir() else []:
        if _NAME.match(path.name) and (step := checkpoint_step(path)) is not None:
            found.append((step, path.name, path))
    return [p for _, _, p in sorted(found)]


def resolve_resume(folder: Path, resume: str, warn=print) -> Path | None:
    """`latest` -> the newest intact checkpoint (None if there is none yet; a damaged one is skipped with a
    warning naming the damaged file, and CheckpointError when checkpoints exist but none is intact); a path ->
    that checkpoint."""
    if not resume:
        return None
    if resume == LATEST:
        candidates = list(reversed(list_checkpoints(folder)))
        named = [p for p in folder.glob("*") if _NAME.match(p.name) and p not in candidates] if folder.is_dir() else []
        for path in named:  # trainer_state.json unreadable: damaged
            warn(f"warning: checkpoint {path} is damaged ({path / STATE} unreadable); skipped")
        for path in candidates:
            problems = checkpoint_problems(path)
            if not problems:
                return path
            warn(f"warning: checkpoint {path} is damaged ({'; '.join(problems)}); trying the one before it")
        if candidates or named:
            raise CheckpointError(
                f"{folder}: no intact checkpoint to resume from (each is damaged, see the warnings above); delete "
                "the run folder to start over, or restore a checkpoint"
            )
        return None
    path = Path(resume)
    if not (path / STATE).exists():
        raise FileNotFoundError(f"train.resume={resume}: not a checkpoint folder (no {STATE})")
    return path
