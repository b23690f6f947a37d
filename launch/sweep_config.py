"""The sweep file schema: recipes, fixed overrides, a grid (product) and a zip (lockstep) of override values.

    name: tiny_grid                       # W&B group of every run and the output folder's name
    recipes: [tiny_clip_finetune, tiny_clip_neg]
    run_name: "{recipe}-seed{seed}"       # placeholders: {recipe}, {sweep}, any recipe key such as {optim.lr}
    overrides: {train.epochs: 2}          # applied to every run
    grid: {seed: [0, 1]}                  # every combination
    zip: {optim.lr: [1e-4, 5e-5], optim.warmup_steps: [5, 2]}   # row by row, lists of equal length
    eval: {enabled: true}
    resources: {gpus_per_run: 4, nodes: 1}
    slurm: {time: "48:00:00", signal_seconds: 180}

The mapping sections (overrides, grid, zip) have dotted recipe keys, which the typed loader cannot hold, so they
are checked here; everything else goes through `train.typed_config.build`. Every problem of a file is reported
together with its key path; a key given twice in the file is an error (train.yaml_loading).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from models.config import Problem
from train.config import Benchmark
from train.typed_config import ConfigError, build
from train.yaml_loading import load_yaml_file

ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = ROOT / "recipes"
SWEEPS_DIR = Path(__file__).resolve().parent / "sweeps"

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
# The sweep decides these per run; a user override would break the run folder layout or resuming.
RESERVED_KEYS = ("run_name", "output_dir", "train.resume")
MAPPING_SECTIONS = ("overrides", "grid", "zip")


@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    enabled: bool = True  # score every checkpoint of a run (python -m eval.run) after its training
    benchmarks: tuple[Benchmark, ...] = ()  # () = each run's eval.benchmarks
    time: str = ""  # slurm time limit of one eval task ("" = the same as training)


@dataclass(frozen=True, kw_only=True)
class ResourceSpec:
    gpus_per_run: int = 0  # GPUs of one run over all its nodes (0 = CPU processes); one process per GPU
    nodes: int = 1  # machines per run (slurm only); gpus_per_run is split evenly over them
    cpu_processes: int = 1  # processes per node when gpus_per_run is 0 (gloo); 1 = no launcher at all
    # DeepSpeed ZeRO stage of GPU runs: 0 = plain data parallel; 2 or 3 = launch/accelerate/deepspeed_zero{2,3}.yaml
    zero_stage: int = 0

    def problems(self) -> list[Problem]:
        out = []
        if self.gpus_per_run < 0:
            out.append(Problem(("gpus_per_run",), "must be >= 0"))
        if self.nodes < 1:
            out.append(Problem(("nodes",), "must be >= 1"))
        if self.cpu_processes < 1:
            out.append(Problem(("cpu_processes",), "must be >= 1"))
        if self.zero_stage not in (0, 2, 3):
            out.append(Problem(("zero_stage",), f"{self.zero_stage}: choose 0 (no DeepSpeed), 2 or 3"))
        elif self.zero_stage and self.gpus_per_run == 0:
            out.append(Problem(("zero_stage", "gpus_per_run"), "DeepSpeed runs need GPUs (gpus_per_run > 0)"))
        if self.gpus_per_run > 0 and self.nodes >= 1 and self.gpus_per_run % self.nodes:
            out.append(
                Problem(("gpus_per_run", "nodes"), f"{self.gpus_per_run} GPUs do not split over {self.nodes} nodes")
            )
        return out

    @property
    def processes_per_node(self) -> int:
        return self.gpus_per_run // self.nodes if self.gpus_per_run else self.cpu_processes

    @property
    def processes(self) -> int:
        return self.processes_per_node * self.nodes


@dataclass(frozen=True, kw_only=True)
class SlurmSpec:
    partition: str = ""  # "" = the cluster's default partition
    time: str = ""  # time limit of one training task, e.g. "48:00:00" ("" = the partition's default)
    cpus_per_task: int = 0  # CPUs per node (0 = 8 per GPU, or one per CPU process)
    mem: str = ""  # memory per node, e.g. "200G" ("" = the cluster's default)
    account: str = ""
    qos: str = ""
    signal_seconds: int = 180  # the batch script gets USR1 this long before the time limit: checkpoint, requeue
    max_parallel: int = 0  # at most this many array tasks at once (0 = no limit)
    extra_sbatch: tuple[str, ...] = ()  # further sbatch options, e.g. ["--constraint=a100", "--exclusive"]

    def problems(self) -> list[Problem]:
        out = []
        for name in ("cpus_per_task", "max_parallel"):
            if getattr(self, name) < 0:
                out.append(Problem((name,), "must be >= 0"))
        if self.signal_seconds < 30:
            out.append(Problem(("signal_seconds",), "must be >= 30 (time to finish a step and write a checkpoint)"))
        for i, option in enumerate(self.extra_sbatch):
            if not option.startswith("--"):
                out.append(Problem((f"extra_sbatch[{i}]",), f"{option!r}: expected a long option such as --exclusive"))
        return out


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """The typed part of a sweep file (everything except overrides, grid and zip)."""

    name: str = ""  # W&B group of every run and the output folder's name ("" = the file's stem)
    description: str = ""  # one line for reports and the manifest
    recipes: tuple[str, ...] = ()  # recipe names (recipes/<name>.yaml) or paths to recipe files
    run_name: str = ""  # run name template ("" = "{recipe}" plus "-<key><value>" for each varied key)
    output_dir: str = ""  # the sweep's folder: runs, manifest, logs, report ("" = runs/<name>)
    eval: EvalSpec = field(default_factory=EvalSpec)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    slurm: SlurmSpec = field(default_factory=SlurmSpec)
    # Filled from the mapping sections by load_sweep (not typed keys of the file):
    overrides: tuple[tuple[str, Any], ...] = ()
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    zip: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def problems(self) -> list[Problem]:
        out = []
        if not self.recipes:
            out.append(Problem(("recipes",), "at least one recipe is required"))
        if self.name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", self.name):
            out.append(Problem(("name",), f"{self.name!r}: use letters, digits, '.', '_' and '-' only"))
        return out

    @property
    def varied_keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.grid) + tuple(k for k, _ in self.zip)


def recipe_path(recipe: str) -> Path:
    """A bare name means recipes/<name>.yaml of this project; anything else is a path."""
    if "/" not in recipe and not recipe.endswith((".yaml", ".yml")):
        return RECIPES_DIR / f"{recipe}.yaml"
    return Path(recipe)


def recipe_label(recipe: str) -> str:
    return recipe_path(recipe).stem


def sweep_path(sweep: str | Path) -> Path:
    """`tiny_grid` -> launch/sweeps/tiny_grid.yaml; a path stays as it is."""
    path = Path(sweep)
    if not path.exists() and "/" not in str(sweep) and not str(sweep).endswith((".yaml", ".yml")):
        return SWEEPS_DIR / f"{sweep}.yaml"
    return path


def load_sweep(path: str | Path) -> SweepSpec:
    """Sweep YAML -> SweepSpec, or ConfigError listing every problem of the file."""
    path = sweep_path(path)
    if not path.exists() and path.parent == SWEEPS_DIR:  # a bare name: say which names exist
        names = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
        close = difflib.get_close_matches(path.stem, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"shipped sweeps: {', '.join(names)}"
        raise ConfigError(str(path), [f"sweep file not found; {hint}"])
    data = load_yaml_file(path, "sweep")
    if not isinstance(data, Mapping):
        raise ConfigError(str(path), ["top level: expected a mapping of keys"])
    problems: list[str] = []
    sections = {name: _mapping(data.get(name), name, problems) for name in MAPPING_SECTIONS}
    overrides = tuple((k, v) for k, v in sections["overrides"].items())
    grid = tuple((k, tuple(v)) for k, v in _value_lists(sections["grid"], "grid", problems).items())
    zipped = tuple((k, tuple(v)) for k, v in _value_lists(sections["zip"], "zip", problems).items())
    lengths = {k: len(v) for k, v in zipped}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {n}" for k, n in lengths.items())
        problems.append(f"zip: lists must have the same length ({shown})")
    seen: dict[str, str] = {}
    for section in MAPPING_SECTIONS:
        for key in sections[section]:
            if key in seen:
                problems.append(f"{section}.{key}: also set in {seen[key]}; set each key in one section only")
            seen.setdefault(key, section)
    typed = {k: v for k, v in data.items() if k not in MAPPING_SECTIONS}
    try:
        spec = build(SweepSpec, typed, str(path))
    except ConfigError as err:
        problems = err.problems + problems
        spec = None
    if problems or spec is None:
        raise ConfigError(str(path), problems)
    return replace(spec, name=spec.name or path.stem, overrides=overrides, grid=grid, zip=zipped)


def _mapping(value: Any, section: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        problems.append(f"{section}: expected a mapping of recipe keys (such as optim.lr) to values")
        return {}
    out = {}
    for key, item in value.items():
        key = str(key)
        if not _KEY.match(key):
            problems.append(f"{section}.{key}: not a recipe key (expected dotted names such as optim.lr)")
        elif key in RESERVED_KEYS:
            problems.append(f"{section}.{key}: set by the sweep for every run; remove it")
        elif key in ("recipe", "recipes"):
            problems.append(f"{section}.{key}: list recipes under the top-level `recipes` key")
        else:
            out[key] = item
    return out


def _value_lists(section: dict[str, Any], name: str, problems: list[str]) -> dict[str, list[Any]]:
    out = {}
    for key, values in section.items():
        if not isinstance(values, list) or not values:
            problems.append(f"{name}.{key}: expected a non-empty list of values, got {values!r}")
            continue
        out[key] = values
    return out
