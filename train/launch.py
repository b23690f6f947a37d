"""`accelerate launch train/finetune.py`, with the recipe checked first and the trainer's own exit code.

    python -m train.launch --config_file launch/accelerate/paper_4gpu.yaml recipes/clip_neg.yaml [key=value ...]
    clipablate launch --num_processes 2 tiny_clip_neg data.batch_size=16

Takes accelerate launch's options, then a recipe (file, name or run folder) and its overrides, where accelerate
would take the script. Two things differ from a plain `accelerate launch train/finetune.py ...`:
- the recipe and everything it names are checked once, in this process, before any worker starts: a config error
  is printed once and exits 2 (under plain accelerate launch rank 0 prints it, then the launcher adds its own
  ChildFailedError / CalledProcessError traceback and exits 1);
- a failing trainer's exit code comes through (75 after a preemption checkpoint, 130 after Ctrl-C, 1 for an error),
  with one line naming the rank, where accelerate's launcher raises and exits 1.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

FINETUNE = Path(__file__).resolve().parent / "finetune.py"


def launch_args(argv: Sequence[str]):
    """accelerate launch's arguments with train/finetune.py as the script and the recipe as its first argument."""
    from accelerate.commands.launch import launch_command_parser

    parser = launch_command_parser()
    parser.prog = "python -m train.launch"
    parser.usage = "python -m train.launch [accelerate launch options] RECIPE [key.sub=value ...]"
    args = parser.parse_args(list(argv))
    args.training_script_args = [args.training_script, *args.training_script_args]
    args.training_script = str(FINETUNE)
    return args


def failure_code(error: BaseException) -> tuple[int, str] | None:
    """(exit code, which process) of a trainer failure the launcher raised; None for anything else."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    if isinstance(error, subprocess.CalledProcessError):  # one process: accelerate's simple launcher
        return error.returncode, "the trainer"
    if isinstance(error, ChildFailedError):  # several: torchrun's agent; the first to fail (the others may be
        rank, failure = error.get_first_failure()  # stopped by the agent after it)
        return failure.exitcode, f"rank {rank} (of {len(error.failures)} failed)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    args = launch_args(argv)
    recipe, overrides = args.training_script_args[0], args.training_script_args[1:]

    from accelerate.commands.launch import launch_command

    from train.config import is_run_folder, load_recipe
    from train.typed_config import ConfigError

    if is_run_folder(recipe) and not any(o.startswith("train.resume=") for o in overrides):
        overrides = [*overrides, "train.resume=latest"]  # as finetune.py does with a run folder
    try:
        load_recipe(recipe, overrides, paths="error")
    except ConfigError as err:
        print(f"launch: {err}", file=sys.stderr)
        return 2
    try:
        launch_command(args)
    except Exception as error:
        found = failure_code(error)
        if found is None:
            raise
        code, who = found
        print(f"launch: {who} exited with {code}; its output is above", file=sys.stderr)
        if not isinstance(code, int) or code == 0:
            return 1
        return code if code > 0 else 128 - code  # killed by signal N: the shell's 128 + N
    return 0


if __name__ == "__main__":
    sys.exit(main())
