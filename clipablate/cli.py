"""clipablate SUBCOMMAND [ARGS...]: every stage of the project under one command, as torchtune's `tune`.

Each subcommand runs the module its `python -m` form names, with the same arguments, exit codes and output; the
`python -m` forms keep working. Recipe names stand for recipe files (`tiny_clip_neg` = recipes/tiny_clip_neg.yaml)
and sweep names for sweep files (`tiny_grid` = launch/sweeps/tiny_grid.yaml). Several processes: `clipablate launch`
(accelerate launch train/finetune.py, the recipe checked first; README, "Finetune").
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import Sequence

# subcommand -> (module, what it does), in the order of the data flow
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "world": ("data_prep.toyworld", "generate the small world (LLaVA data, benchmarks) in the real formats"),
    "shards": ("data_prep.build_shards", "LCS-558K / DataMix-665K -> webdataset shards with hard negatives"),
    "inspect": ("data_prep.inspect_shards", "summarise or --verify a shard folder"),
    "config": ("train.config", "print a recipe resolved (overrides applied), or every problem in it"),
    "cost": ("train.cost", "GPU-hours, memory and FLOPs of a recipe or sweep, before running it"),
    "cache": ("train.cache", "build a recipe's feature caches ahead of training"),
    "train": ("train.finetune", "finetune a recipe on one process (accelerate launch train/finetune.py for more)"),
    "launch": ("train.launch", "accelerate launch's options + a recipe: finetune on several processes, checked first"),
    "eval": ("eval.run", "score a run's checkpoints (or a bare model) on the spatial benchmarks"),
    "table5": ("eval.table5", "the paper's Table 5 layout for evaluated runs"),
    "llava": ("eval.llava", "a LLaVA-style MLLM on the same benchmarks; `llava table` for the paper's tables"),
    "probe": ("eval.probe", "probes on frozen image features beside zero-shot: where is the spatial information lost"),
    "agreement": ("eval.agreement", "image-pair cosines for any encoder (DINOv2 too); mine CLIP-blind pairs"),
    "sweep": ("launch.sweep", "run a sweep locally or on SLURM (--status, --estimate, --dry-run)"),
    "report": ("launch.report", "a sweep's results as report.md/.csv, plots and W&B"),
    "export": ("models.export", "a checkpoint as an open_clip state dict (or the connector and its LLM2Vec recipe)"),
}


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [__doc__.split("\n\n")[0], "", "subcommands:"]
    lines += [f"  {name:<{width}}  {what}  (python -m {module})" for name, (module, what) in SUBCOMMANDS.items()]
    lines += ["", "clipablate SUBCOMMAND --help shows its arguments."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"clipablate: unknown subcommand {name!r}; one of: {', '.join(SUBCOMMANDS)}", file=sys.stderr)
        return 2
    module = SUBCOMMANDS[name][0]
    sys.argv = [f"clipablate {name}", *rest]
    code: object = 0
    try:
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        except SystemExit as done:  # the module's own exit code, as under python -m
            code = done.code
        sys.stdout.flush()  # here, not at interpreter exit, so that a closed pipe is caught below
    except BrokenPipeError:  # `clipablate config x | head -1`: the reader left; end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing left to flush at exit either
        return 0
    if code is None or isinstance(code, int):
        return code or 0
    print(code, file=sys.stderr)
    return 1
