"""A sweep resolved into runs: names, full override lists and validated configs, every problem reported at once.

Each run's config goes through `train.config.load_recipe` exactly as train/finetune.py will load it, so a bad
key or value in the sweep file or on the command line fails here, before anything is submitted. The folders a run
needs (shards, a weights file; train.config.path_problems) are looked up too and kept on each run, for the caller
to decide: launch.sweep refuses to start runs that would train without them, and only warns in a dry run or
--status (the data may be built later). A missing eval.data_root is only ever a warning (eval may run elsewhere).
"""

from __future__ import annotations

import difflib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from launch.grid import (
    Combination,
    default_template,
    duplicate_names,
    expand,
    name_lookup,
    override_text,
    render_name,
)
from launch.sweep_config import RECIPES_DIR, RESERVED_KEYS, SweepSpec, recipe_label, recipe_path
from train.config import RecipeConfig, load_recipe, path_problems, path_warnings
from train.run_dir import RunDirError, check_run_dir
from train.typed_config import ConfigError, flatten, to_plain


@dataclass(frozen=True)
class PlannedRun:
    index: int
    name: str
    recipe: str  # label: the recipe file's stem
    recipe_file: Path
    overrides: tuple[str, ...]  # `key=value` after the recipe, as finetune gets them (run_name etc. included)
    values: tuple[tuple[str, str], ...]  # the varied keys and this run's values, for tables
    cfg: RecipeConfig  # resolved exactly as finetune will resolve it
    # What train.config.path_problems / path_warnings find (missing shards; a missing eval.data_root), each line
    # prefixed with the sweep section that set the key, as in plan_sweep's problems.
    path_problems: tuple[str, ...] = ()
    path_warnings: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.output_dir) / self.cfg.run_name


@dataclass(frozen=True)
class SweepPlan:
    spec: SweepSpec
    source: Path  # the sweep file
    sweep_dir: Path  # absolute: run folders, manifest, logs, report
    cli_overrides: tuple[str, ...]
    runs: tuple[PlannedRun, ...]


def sweep_dir_of(spec: SweepSpec, output_dir: str | Path | None) -> Path:
    """--output-dir, else the file's output_dir, else runs/<name>; absolute so that any working folder agrees."""
    return Path(output_dir or spec.output_dir or Path("runs") / spec.name).resolve()


def plan_sweep(
    spec: SweepSpec,
    source: Path,
    sweep_dir: Path,
    cli_overrides: Sequence[str] = (),
    evaluate: bool | None = None,
) -> SweepPlan:
    """Resolves every run of the sweep; raises ConfigError listing all problems of all runs together.

    Missing folders are not among them: they are kept on each run (PlannedRun.path_problems), see
    `grouped_by_problem`.
    """
    problems: list[str] = []
    cli = tuple(cli_overrides)
    cli_keys = _check_cli_overrides(cli, problems)
    evaluate = spec.eval.enabled if evaluate is None else evaluate
    template = spec.run_name or default_template(spec)
    section_of = {k: "overrides" for k, _ in spec.overrides}
    section_of |= {k: "grid" for k, _ in spec.grid} | {k: "zip" for k, _ in spec.zip}
    section_of |= {k: "command line" for k in cli_keys}

    grouped: dict[str, list[str]] = defaultdict(list)  # one problem shared by many runs is listed once
    runs: list[PlannedRun] = []
    for combo in expand(spec):
        label = recipe_label(combo.recipe)
        file = recipe_path(combo.recipe)
        base = _base_overrides(spec, combo, cli)
        if not file.exists():
            grouped[f"{file}: recipe file not found{_recipe_hint(combo.recipe)}"].append(label)
            continue
        try:
            cfg = load_recipe(file, base)
        except ConfigError as err:
            for problem in err.problems:
                grouped[_locate(problem, section_of, file)].append(label + _values_text(combo))
            continue
        name, unknown = render_name(template, name_lookup(spec, combo, flatten(to_plain(cfg))))
        for key in unknown:
            grouped[f"run_name: unknown placeholder {{{key}}} (use {{recipe}}, {{sweep}} or a recipe key)"].append(
                label
            )
        if unknown:
            continue
        if not name:
            problems.append(f"run_name: the template {template!r} gives an empty name for {label}")
            continue
        final = (*base, f"run_name={name}", f"output_dir={sweep_dir}", "train.resume=latest")
        cfg = load_recipe(file, final)
        values = tuple((k, override_text(v)) for k, v in combo.values)
        missing = tuple(_locate_path(p, section_of, file) for p in path_problems(cfg))
        warnings = tuple(_locate_path(w, section_of, file) for w in path_warnings(cfg))
        run = PlannedRun(combo.index, name, label, file, final, values, cfg, missing, warnings)
        _check_run(run, spec, evaluate, problems)
        runs.append(run)

    problems += _with_runs(grouped)
    problems += _launcher_problems(spec)
    for name, indices in duplicate_names([r.name for r in runs]).items():
        varied = ", ".join(spec.varied_keys) or "none"
        problems.append(
            f"run_name: {template!r} names {len(indices)} runs {name!r}; put the keys that vary ({varied}) in it"
        )
    if problems:
        raise ConfigError(str(source), problems)
    return SweepPlan(spec, source, sweep_dir, cli, tuple(runs))


def grouped_by_problem(runs: Sequence[PlannedRun], attribute: str = "path_problems") -> list[str]:
    """The runs' `path_problems` (or `path_warnings`), one line per problem naming the runs it concerns."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        for problem in getattr(run, attribute):
            grouped[problem].append(run.name)
    return _with_runs(grouped)


def _recipe_hint(recipe: str) -> str:
    """ "; did you mean 'tiny_clip_neg'?" for a bare recipe name close to one in recipes/."""
    if recipe_path(recipe).parent != RECIPES_DIR:
        return ""
    close = difflib.get_close_matches(recipe, sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")), n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (recipes are the files in {RECIPES_DIR})"


def _locate_path(problem: str, section_of: dict[str, str], recipe_file: Path) -> str:
    """Like _locate, without naming the recipe file (the runs are listed with it, see grouped_by_problem)."""
    located = _locate(problem, section_of, recipe_file)
    return located.removeprefix(f"{recipe_file}: ")


def _launcher_problems(spec: SweepSpec) -> list[str]:
    """The accelerate config the runs will be launched with must read cleanly (no duplicate keys, valid YAML)."""
    from launch.commands import accelerate_config
    from train.yaml_loading import load_yaml_file

    if spec.resources.processes == 1:
        return []  # one process: no launcher
    path = accelerate_config(spec.resources)
    try:
        data = load_yaml_file(path, "accelerate config")
    except ConfigError as err:
        return [f"resources: {err.source}: {p}" for p in err.problems]
    return [] if isinstance(data, dict) else [f"resources: {path}: expected a mapping of accelerate settings"]


def _with_runs(grouped: dict[str, list[str]]) -> list[str]:
    """One line per problem, naming the runs it concerns (the first six)."""
    out = []
    for problem, where in grouped.items():
        unique = sorted(set(where))
        shown = ", ".join(unique[:6]) + (f" and {len(unique) - 6} more" if len(unique) > 6 else "")
        out.append(f"{problem} [{shown}]")
    return out


def _base_overrides(spec: SweepSpec, combo: Combination, cli: tuple[str, ...]) -> tuple[str, ...]:
    """Sweep overrides, then this run's grid/zip values, the sweep's W&B group, then the command line (wins)."""
    fixed = [f"{k}={override_text(v)}" for k, v in spec.overrides]
    varied = [f"{k}={override_text(v)}" for k, v in combo.values]
    return (*fixed, *varied, f"wandb.group={spec.name}", *cli)


def _values_text(combo: Combination) -> str:
    return "".join(f" {k}={override_text(v)}" for k, v in combo.values)


def _check_cli_overrides(cli: tuple[str, ...], problems: list[str]) -> list[str]:
    keys = []
    for arg in cli:
        key, sep, _ = arg.partition("=")
        if not sep:
            problems.append(f"command line: {arg!r}: expected key.sub=value")
        elif key in RESERVED_KEYS:
            problems.append(f"command line: {key} is set by the sweep (use --output-dir for the folder)")
        else:
            keys.append(key)
    return keys


def _locate(problem: str, section_of: dict[str, str], recipe_file: Path) -> str:
    """Prefixes a recipe problem with the sweep section that set its key (grid, zip, overrides, command line)."""
    head = problem.split(":", 1)[0]
    for key in re.split(r" / ", head):
        base = re.sub(r"\[\d+\]$", "", key)
        for candidate, section in section_of.items():
            if base == candidate or base.startswith(candidate + "."):
                return f"{section}.{problem}" if section != "command line" else f"command line: {problem}"
    return f"{recipe_file}: {problem}"


def _check_run(run: PlannedRun, spec: SweepSpec, evaluate: bool, problems: list[str]) -> None:
    cfg = run.cfg
    processes = spec.resources.processes
    span = (cfg.data.batch_size or 1) * processes  # batch_size 0 (auto): any divisor of the per-process batch
    if cfg.train.global_batch_size % span:
        what = f"data.batch_size {cfg.data.batch_size} x " if cfg.data.batch_size else ""
        problems.append(
            f"{run.name}: train.global_batch_size {cfg.train.global_batch_size} is not a multiple of "
            f"{what}{processes} processes (resources)"
        )
    if evaluate and not cfg.eval.data_root:
        problems.append(f"{run.name}: eval.data_root is empty; set it under overrides, or eval.enabled: false")
    try:
        check_run_dir(cfg)  # an existing run folder must hold the same config, or resuming would be refused later
    except RunDirError as err:
        problems.append(f"{run.name}: {err}")
