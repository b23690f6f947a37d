"""What an eval result was computed from, and whether a result on disk still matches it.

A result is reused only when every part of its provenance matches what the same command would read now:
- weights: the model config (flattened), a digest of every local file or folder the config names (a pretrained
  weights file, an LLM2Vec folder) and, for a checkpoint, the sha256 of its trainable weights file;
- data: the data root, the sha256 of each benchmark file, and the benchmark's images listed by path, size and
  modification time (hashing the images themselves would cost as much as scoring them); with a limit (a partial
  result, `eval.run --limit`), only the images of the examples scored;
- label fixes: the mode and the fixes it applies; scoring: the mode (official or released), its tie rule and
  precision, and SCORING_VERSION;
- scorer: device type, chunk size and CPU thread count (each can change the last bits of a feature).
The process count and image-feature reuse are left out: by construction they do not change a single bit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from eval.benchmarks import BenchmarkSpec
from eval.common import SCORING_VERSION, file_record, image_listing, sha256_file


class CannotRescore(Exception):
    """Results exist, but what they were computed from is gone: they can be neither checked nor recomputed."""


class MissingWeights(FileNotFoundError):
    """A checkpoint without its trainable weights file."""


def _plain(value: Any) -> Any:
    """As it reads back from a result's JSON (tuples become lists), so old and new compare equal."""
    return json.loads(json.dumps(value))


def path_digest(path: Path) -> dict[str, Any]:
    """A file: its sha256. A folder (a hub snapshot, gigabytes): sha256 over its files' paths, sizes and mtimes."""
    if path.is_file():
        return {"path": str(path.resolve()), "kind": "file", "bytes": path.stat().st_size, "sha256": sha256_file(path)}
    digest, count = hashlib.sha256(), 0
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        info = file.stat()
        digest.update(f"{file.relative_to(path).as_posix()}\t{info.st_size}\t{info.st_mtime_ns}\n".encode())
        count += 1
    return {"path": str(path.resolve()), "kind": "folder", "files": count, "sha256": digest.hexdigest()}


def model_source(model: Mapping[str, Any]) -> dict[str, Any]:
    """The starting weights: the flattened model config and a digest of every local path it names, and of the files
    the build reads without the config naming them (a tiny preset's or tiny LLM's folder, a pretrained tag's file
    in the Hugging Face cache), so changing any weights file the model is built from recomputes."""
    files = {
        key: path_digest(Path(value))
        for key, value in sorted(model.items())
        if isinstance(value, str) and value and os.path.exists(value)
    }
    files.update({key: path_digest(path) for key, path in built_from(model).items() if path.exists()})
    return _plain({"model": dict(model), "files": files, "checkpoint": None})


def built_from(model: Mapping[str, Any]) -> dict[str, Path]:
    """Weights files or folders a model config is built from that it does not name as paths."""
    from models.cache import resolve_cache_dir
    from models.open_clip_models import PAPER_MODELS
    from models.tiny_llm2vec import TINY_LLM2VEC, tiny_llm2vec_folder
    from models.tiny_open_clip import TINY_OPEN_CLIP, WEIGHTS_FILE, tiny_open_clip_folder

    out: dict[str, Path] = {}
    name, pretrained = model.get("name", ""), model.get("pretrained", "")
    # The tiny stand-ins are built here if this machine has none yet (the eval builds them anyway, seconds), so the
    # provenance always records the files scored.
    if name in TINY_OPEN_CLIP:
        out["built:tiny_preset"] = tiny_open_clip_folder(TINY_OPEN_CLIP[name], resolve_cache_dir()) / WEIGHTS_FILE
    if model.get("text.llm2vec.base_model") == TINY_LLM2VEC and model.get("text.tower") == "llm2vec":
        out["built:tiny_llm2vec"] = tiny_llm2vec_folder(resolve_cache_dir())
    if name in PAPER_MODELS and (not pretrained or not os.path.exists(pretrained)) and pretrained != "random":
        cached = _hub_cached_weights(PAPER_MODELS[name].open_clip_name, pretrained or PAPER_MODELS[name].pretrained)
        if cached is not None:
            out["built:pretrained_tag"] = cached
    return out


def _hub_cached_weights(architecture: str, tag: str) -> Path | None:
    """The local Hugging Face cache file of an open_clip pretrained tag, when it is there (no download)."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(architecture, tag) or {}
    repo = cfg.get("hf_hub", "").rstrip("/")
    if not repo:
        return None
    for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def weights_source(model: dict[str, Any], weights_file: Path | None) -> dict[str, Any]:
    """`model_source(...)` plus, for a checkpoint, its trainable weights file (the rest is the starting build)."""
    if weights_file is None:
        return model
    if not weights_file.is_file():
        raise MissingWeights(str(weights_file))
    checkpoint = {"file": weights_file.name, "bytes": weights_file.stat().st_size, "sha256": sha256_file(weights_file)}
    return {**model, "checkpoint": checkpoint}


def data_source(spec: BenchmarkSpec, data_root: Path, *, limit: int = 0) -> dict[str, Any]:
    """The benchmark's files and images under `data_root` (reading them checks them as scoring would); `limit` > 0:
    only the images of the first examples, those a run with that limit scores (the limit itself is recorded in the
    scorer settings)."""
    inputs = spec.inputs(data_root, limit=limit)
    return _plain(
        {
            "root": str(data_root.resolve()),
            "files": [file_record(path, data_root) for path in inputs.files],
            "images": {
                "folder": inputs.image_folder.relative_to(data_root).as_posix(),
                **image_listing(list(inputs.images), data_root),
            },
        }
    )


def result_provenance(
    spec: BenchmarkSpec,
    *,
    weights: dict[str, Any],
    data: dict[str, Any],
    label_fixes: str,
    scorer: dict[str, Any],
    scoring: str = "official",
) -> dict[str, Any]:
    return _plain(
        {
            "weights": weights,
            "data": data,
            "label_fixes": {"mode": label_fixes, "fixes": spec.label_fix_rules(label_fixes)},
            "scoring": {
                "tie_rule": spec.tie_rule(scoring),
                "version": SCORING_VERSION,
                "mode": scoring,
                "precision": spec.precision(scoring),
            },
            "scorer": scorer,
        }
    )


def vanished_sources(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Local weight files or folders an old result was computed from that no longer exist (same config value)."""
    if not old:
        return []
    old_weights, new_weights = old.get("weights", {}), new["weights"]
    gone = []
    for key, found in old_weights.get("files", {}).items():
        if key.startswith("built:"):  # rebuilt or re-read by the model's build, not a file the user must restore
            continue
        same_value = old_weights.get("model", {}).get(key) == new_weights["model"].get(key)
        if same_value and key not in new_weights["files"]:
            gone.append(f"{found['path']} ({key})")
    return gone


def changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> list[str]:
    """Why a result with provenance `old` may not be reused for `new`; empty when everything matches."""
    if not old:
        return ["no provenance recorded (a result of an earlier eval.run)"]
    out: list[str] = []
    weights, old_weights = new["weights"], old.get("weights", {})
    old_model = old_weights.get("model", {})
    keys = [k for k in dict.fromkeys([*old_model, *weights["model"]]) if old_model.get(k) != weights["model"].get(k)]
    if keys:
        shown = ", ".join(f"{k} {old_model.get(k)!r} -> {weights['model'].get(k)!r}" for k in keys[:3])
        out.append(f"model config changed: {shown}" + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""))
    old_files = old_weights.get("files", {})
    for key in dict.fromkeys([*old_files, *weights["files"]]):
        before, now = old_files.get(key), weights["files"].get(key)
        if key.startswith("built:") and (before is None or now is None):
            continue  # not built yet on this machine (or recorded before such files were): nothing to compare
        if before and now and before.get("sha256") != now["sha256"]:
            out.append(f"weights changed: {key} {now['path']} sha256")
        elif now and not before:
            out.append(f"weights changed: {key} is now the local {now['kind']} {now['path']}")
    before, now = old_weights.get("checkpoint"), weights["checkpoint"]
    if (before or {}).get("sha256") != (now or {}).get("sha256"):
        out.append(f"checkpoint weights changed: {(now or before or {}).get('file', 'weights')} sha256")

    data, old_data = new["data"], old.get("data", {})
    if old_data.get("root") != data["root"]:
        out.append(f"data root changed: {old_data.get('root')} -> {data['root']}")
    old_data_files = {f["path"]: f for f in old_data.get("files", [])}
    new_data_files = {f["path"]: f for f in data["files"]}
    for path in dict.fromkeys([*old_data_files, *new_data_files]):
        if path not in old_data_files or path not in new_data_files:
            out.append(f"data files changed: {path} {'added' if path in new_data_files else 'no longer read'}")
        elif old_data_files[path]["sha256"] != new_data_files[path]["sha256"]:
            out.append(f"data files changed: {path} sha256")
    images, old_images = data["images"], old_data.get("images", {})
    if old_images.get("folder") != images["folder"]:
        out.append(f"image folder changed: {old_images.get('folder')} -> {images['folder']}")
    elif old_images.get("sha256") != images["sha256"]:
        out.append(
            f"images changed: paths, sizes or modification times of the {images['count']} images in {images['folder']}"
        )

    fixes, old_fixes = new["label_fixes"], old.get("label_fixes", {})
    if old_fixes.get("mode") != fixes["mode"]:
        out.append(f"label fixes changed: {old_fixes.get('mode')} -> {fixes['mode']}")
    elif old_fixes.get("fixes") != fixes["fixes"]:
        out.append(f"label fixes changed: the fixes of mode {fixes['mode']} were redefined")

    scoring, old_scoring = new["scoring"], old.get("scoring", {})
    if old_scoring.get("version") != scoring["version"]:
        out.append(f"scoring version changed: {old_scoring.get('version')} -> {scoring['version']}")
    elif old_scoring.get("mode", "official") != scoring["mode"]:  # results from before the switch were official
        out.append(f"scoring changed: {old_scoring.get('mode', 'official')} -> {scoring['mode']}")
    elif old_scoring.get("tie_rule") != scoring["tie_rule"]:
        out.append("tie rule changed")
    elif old_scoring.get("precision", "fp32") != scoring["precision"]:
        out.append(f"scoring precision changed: {old_scoring.get('precision', 'fp32')} -> {scoring['precision']}")

    scorer, old_scorer = new["scorer"], old.get("scorer", {})
    keys = [k for k in dict.fromkeys([*old_scorer, *scorer]) if old_scorer.get(k) != scorer.get(k)]
    if keys:
        out.append("scorer settings changed: " + ", ".join(f"{k} {old_scorer.get(k)} -> {scorer.get(k)}" for k in keys))
    return out
