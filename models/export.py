"""Export a run's checkpoint for use outside this repository.

    python -m models.export runs/<name> [--checkpoint epoch_5|step_N|step_0] --out model.safetensors

A native-text run becomes one complete open_clip state dict (the frozen towers, rebuilt from the run's config,
included), which open_clip itself loads: `open_clip.create_model_and_transforms(<open_clip name>, pretrained=FILE)`
(plus the tag's preprocessing arguments the JSON lists; `local-dir:` models: `open_clip.load_checkpoint`). An
LLM2Vec run becomes the trainable connector, the image tower and the logit scale (and bias) in one file, and a JSON
that names the LLM and the llm2vec settings it needs. Either way `<out>.json` (the out path with suffix .json)
describes what was exported and how to load it. The checkpoint is loaded exactly as eval loads it
(`build_model(config.model)`, then `train.checkpoints.load_weights`); without --checkpoint the latest one is used;
`step_0` is the starting weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

EXIT_USAGE = 2  # no such run or checkpoint
EXIT_WEIGHTS = 1  # the run's base model cannot be built here (weights not on this machine)
START = "step_0"  # the starting weights, as eval names them


class ExportError(Exception):
    """A problem with the run or checkpoint named: one paragraph for the user, no traceback."""


def find_checkpoint(run_dir: Path, name: str | None) -> tuple[Path | None, str, int]:
    """(checkpoint folder or None for the starting weights, its name, its step)."""
    from train.checkpoints import STATE, WEIGHTS, list_checkpoints, resolve_resume

    if not run_dir.is_dir():
        raise ExportError(
            f"no run folder at {run_dir}: a run folder is runs/<name>/ as train/finetune.py writes it, holding "
            "config.yaml and checkpoints/<checkpoint>/trainable.safetensors."
        )
    if not (run_dir / "config.yaml").is_file():
        raise ExportError(
            f"{run_dir} is not a run folder: it has no config.yaml (the resolved recipe train/finetune.py writes "
            "first), so the model cannot be rebuilt."
        )
    folder = run_dir / "checkpoints"
    finished = [p.name for p in list_checkpoints(folder)]
    if name is None:
        latest = resolve_resume(folder, "latest")
        if latest is None:
            raise ExportError(
                f"{run_dir} has no finished checkpoint in {folder} yet; pass --checkpoint {START} to export the "
                "starting weights."
            )
        path = latest
    elif name == START and not (folder / START).exists():
        return None, START, 0
    else:
        path = folder / name
        if not (path / STATE).is_file() or not (path / WEIGHTS).is_file():
            shown = ", ".join(finished) if finished else "none"
            raise ExportError(
                f"{run_dir} has no finished checkpoint {name!r} ({path} lacks {STATE} or {WEIGHTS}); finished "
                f"checkpoints: {shown}; {START} exports the starting weights."
            )
    return path, path.name, int(json.loads((path / STATE).read_text())["step"])


def load_run_model(run_dir: Path, checkpoint: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """(bundle with the checkpoint's weights, the run's config, {checkpoint, step}) as eval loads them."""
    from models import build_model
    from train.checkpoints import load_weights
    from train.config import load_recipe

    path, name, step = find_checkpoint(run_dir, checkpoint)
    cfg = load_recipe(run_dir / "config.yaml")
    bundle = build_model(cfg.model)
    if path is not None:
        load_weights(path, bundle.model)
    return bundle, cfg, {"checkpoint": name, "step": step, "checkpoint_path": str(path) if path else None}


def export_state(model: Any) -> dict[str, torch.Tensor]:
    """Native text tower: the whole model under open_clip's names. LLM2Vec: image tower (open_clip's `visual.*`),
    logit scale/bias and the connector (`connector.<i>.*`, the nn.Sequential Linear, GELU, Linear)."""
    from models.native_text import ClipTextTower, CustomTextTower

    if isinstance(model.text_tower, ClipTextTower | CustomTextTower):
        state = model.open_clip_state_dict()
    else:
        state = {"visual." + k: v for k, v in model.image_tower.state_dict().items()}
        state["logit_scale"] = model.logit_scale.detach()
        if model.logit_bias is not None:
            state["logit_bias"] = model.logit_bias.detach()
        state.update({"connector." + k: v for k, v in model.text_tower.connector.state_dict().items()})
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_state(state: dict[str, torch.Tensor], out: Path) -> None:
    """safetensors for a .safetensors path, else torch.save of the plain dict (open_clip reads both)."""
    from safetensors import SafetensorError

    from models.safetensors_file import save_safetensors

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        if out.suffix == ".safetensors":
            save_safetensors(state, tmp)
        else:
            torch.save(state, tmp)
    except (OSError, RuntimeError, SafetensorError) as err:  # e.g. a full disk: no half-written file left behind
        tmp.unlink(missing_ok=True)
        needed = sum(t.numel() * t.element_size() for t in state.values())
        raise OSError(f"{out}: could not be written ({err}); it needs about {needed:,} bytes") from None
    tmp.replace(out)


def _base_weights(pretrained: Any) -> Any:
    """The starting weights: a tag as it is; a file by name and sha256 (its path is the exporter's, often a cache)."""
    if isinstance(pretrained, str) and Path(pretrained).is_file():
        from data_prep.provenance import sha256_file

        return {"file_name": Path(pretrained).name, "sha256": sha256_file(Path(pretrained))}
    return pretrained


def write_architecture(model_dir: Path, out: Path) -> Path:
    """The open_clip model config of a model built here (a local-dir: folder in the exporter's cache), written next
    to the weights as `<stem>_open_clip.json`, so the export loads on a machine without that cache:
    open_clip.add_model_config registers it under its file stem."""
    config = json.loads((model_dir / "open_clip_config.json").read_text())
    target = out.with_name(f"{out.stem}_open_clip.json")
    target.write_text(json.dumps(config["model_cfg"], indent=1))
    return target


def describe(bundle: Any, cfg: Any, run_dir: Path, where: dict[str, Any], out: Path) -> dict[str, Any]:
    """The JSON written next to the weights: what they are and how to load them."""
    info = bundle.info
    preprocess = info.get("preprocess", {})
    open_clip_kwargs = {
        "image_mean": preprocess.get("mean"),
        "image_std": preprocess.get("std"),
        "image_interpolation": preprocess.get("interpolation"),
        "image_resize_mode": preprocess.get("resize_mode"),
    }
    name = info["open_clip_model"]
    record: dict[str, Any] = {
        "run": str(run_dir),
        **where,
        "weights": str(out),
        "model_name": cfg.model.name,
        "open_clip_model": name,
        "base_pretrained": _base_weights(info.get("pretrained")),
        "text_tower": info["text_tower"],
        "embed_dim": info["embed_dim"],
        "preprocess": preprocess,
        "notes": list(getattr(bundle, "notes", [])),
    }
    if info["text_tower"] == "native":
        record["kind"] = "open_clip"
        record["context_length"] = info.get("context_length")
        args = ", ".join(f"{k}={v!r}" for k, v in open_clip_kwargs.items())
        if name.startswith("local-dir:"):  # a model built here: its architecture travels with the export
            architecture = write_architecture(Path(name.removeprefix("local-dir:")), out)
            record["open_clip_model"] = architecture.stem
            record["open_clip_config"] = architecture.name
            record["load"] = (
                f"open_clip.add_model_config({architecture.name!r}); open_clip.create_model_and_transforms("
                f"{architecture.stem!r}, pretrained={out.name!r}, {args})  # paths: this JSON's folder"
            )
        else:
            record["load"] = f"open_clip.create_model_and_transforms({name!r}, pretrained={str(out)!r}, {args})"
        record["open_clip_kwargs"] = open_clip_kwargs
    else:
        llm = info["llm2vec"]
        record["kind"] = "llm2vec_connector"
        record["llm2vec"] = llm  # base_model, peft_adapter, pooling, max_length, doc_max_length, instruction, ...
        record["connector"] = {
            "layout": "nn.Sequential(Linear(in, hidden), GELU(), Linear(hidden, out)) under connector.{0,2}.*",
            "in": llm["llm_hidden_size"],
            "hidden": llm["connector_hidden_dim"],
            "out": info["embed_dim"],
        }
        record["load"] = (
            "image tower: open_clip model " + name + " with the visual.* weights (and logit_scale/logit_bias); text: "
            "llm2vec.LLM2Vec.from_pretrained(base_model, peft_model_name_or_path=peft_adapter, pooling_mode=pooling, "
            "max_length=max_length, doc_max_length=doc_max_length), encode([[instruction, caption]]), then the "
            "connector"
        )
    return record


def export_run(run_dir: Path, out: Path, checkpoint: str | None = None) -> dict[str, Any]:
    """Writes `out` and `out.with_suffix('.json')`; returns the JSON record."""
    bundle, cfg, where = load_run_model(run_dir, checkpoint)
    state = export_state(bundle.model)
    save_state(state, out)
    record = describe(bundle, cfg, run_dir, where, out)
    record["tensors"] = len(state)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str))
    return record


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="run folder (config.yaml, checkpoints/)")
    parser.add_argument("--checkpoint", default=None, help=f"checkpoint name (default: the latest; {START}: start)")
    parser.add_argument("--out", type=Path, required=True, help="weights file (.safetensors, or .bin/.pt)")
    args = parser.parse_args(argv)
    try:
        record = export_run(args.run, args.out, args.checkpoint)
    except ExportError as err:
        print(f"models.export: {err}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as err:  # WeightsUnavailableError and friends: the base model is not on this machine
        print(f"models.export: cannot rebuild the model of {args.run}: {err}", file=sys.stderr)
        return EXIT_WEIGHTS
    except OSError as err:  # the weights file could not be written (save_state says why and how much it needs)
        print(f"models.export: {err}", file=sys.stderr)
        return 1
    print(f"exported {record['checkpoint']} (step {record['step']}) of {args.run} to {args.out} ({record['kind']})")
    print(f"load: {record['load']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
