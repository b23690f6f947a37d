"""The recipe schema: one frozen dataclass per section, defaults only here.

Load a recipe with `load_recipe("recipes/x.yaml", ["optim.lr=1e-5", "data.batch_size=64"])`.
Check one from the shell (prints the resolved YAML, or every problem and exit status 2):

    python -m train.config recipes/tiny_clip_neg.yaml optim.lr=1e-5 [--check-paths]
    python -m train.config recipes/clip_neg.yaml --fidelity    # released code vs ours, point by point

The folders and files a recipe names (shards, a weights file, eval.data_root) are checked when asked:
`load_recipe(..., paths="error")` adds missing shards to the other problems (train/finetune.py, before it writes
the run folder), `paths="warn"` prints them as warnings on stderr (this command without --check-paths, since
the data may be built later). A missing eval.data_root is always only a warning: eval may run elsewhere.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from models.config import ModelConfig, Problem, names_a_file
from train.profiles import with_profile
from train.typed_config import ConfigError, build_partial, failed_under, merge, parse_overrides, to_yaml
from train.yaml_loading import load_yaml_file

PathChecks = Literal["ignore", "warn", "error"]

BENCHMARK_NAMES = (
    "whatsup_a",
    "whatsup_b",
    "coco_spatial_one",
    "coco_spatial_two",
    "gqa_spatial_one",
    "gqa_spatial_two",
    "mmvp_vlm",
    "mmvp_clip",
)
Benchmark = Literal[
    "whatsup_a",
    "whatsup_b",
    "coco_spatial_one",
    "coco_spatial_two",
    "gqa_spatial_one",
    "gqa_spatial_two",
    "mmvp_vlm",
    "mmvp_clip",
]


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    shards: tuple[str, ...] = ()  # folders written by data_prep.build_shards (each with sizes.json)
    caption_policy: Literal["random", "concat", "first"] = "random"  # paper: random (CLIP), concat (LLM2Vec)
    # Samples per device per forward pass (micro-batch); 0 = auto: the largest that fits the GPU by the memory
    # estimate, one pass where possible (train/batch_planner.py). The loss is the global batch's for any value.
    batch_size: int = 32
    # open_clip's train transform (random resized crop, scale 0.9-1), as the authors' release even with the image
    # tower locked. false trains on the eval transform, which is deterministic, so a locked image tower's features
    # can be cached (see `cache`); the paper does not say.
    augment: bool = True
    workers: int = 2  # data loader processes per device
    # How the negative of the caption drawn for a step is made (loss negclip / siglip_neg): released = the authors'
    # 6-phrase table, case-sensitive, first phrase found replaced everywhere (data_prep.released_negatives);
    # token_rules = ours, data_prep.negatives as build_shards wrote it into the shards. Either works on any shards.
    negative_rule: Literal["released", "token_rules"] = "token_rules"
    # A shard folder without build_shards' sizes.json: refuse (a deleted shard would train a silent subset), or
    # index what is there (another tool's shards; the count found is printed).
    unrecorded_shards: Literal["refuse", "index"] = "refuse"

    def problems(self) -> list[Problem]:
        out = []
        if not self.shards:
            out.append(Problem(("shards",), "at least one shard folder is required"))
        if self.batch_size < 0:
            out.append(Problem(("batch_size",), "must be > 0, or 0 for auto (the largest that fits)"))
        if self.workers < 0:
            out.append(Problem(("workers",), "must be >= 0"))
        return out


@dataclass(frozen=True, kw_only=True)
class LossConfig:
    # clip: symmetric InfoNCE; siglip: pairwise sigmoid; negclip / siglip_neg: the same plus the
    # left/right-swapped hard-negative captions of data_prep as extra negatives.
    name: Literal["clip", "siglip", "negclip", "siglip_neg"] = "clip"

    @property
    def uses_hard_negatives(self) -> bool:
        return self.name in ("negclip", "siglip_neg")


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    lr: float = 5e-6  # peak learning rate (paper: 5e-6)
    weight_decay: float = 0.1  # AdamW decay, not applied to norms, biases, logit scale/bias
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.98  # AdamW second-moment decay (open_clip's ViT default)
    eps: float = 1e-6  # AdamW epsilon
    warmup_steps: int = 50  # linear warmup in optimizer steps (paper: 50)
    schedule: Literal["cosine", "constant"] = "cosine"  # after warmup
    grad_clip_norm: float = 0.0  # clip the global grad norm to this (0 = no clipping)

    def problems(self) -> list[Problem]:
        out = []
        if self.lr <= 0:
            out.append(Problem(("lr",), "must be > 0"))
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                out.append(Problem((name,), "must be in [0, 1)"))
        for name in ("weight_decay", "eps", "grad_clip_norm"):
            if getattr(self, name) < 0:
                out.append(Problem((name,), "must be >= 0"))
        if self.warmup_steps < 0:
            out.append(Problem(("warmup_steps",), "must be >= 0"))
        return out


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 5  # passes over the shards (paper: 5)
    max_steps: int = 0  # stop after this many optimizer steps (0 = run all epochs)
    global_batch_size: int = 512  # per-device batch x processes x accumulation (paper: 512)
    # Mixed precision through accelerate. fp16 = autocast + a gradient scaler (the authors' `--precision amp`): a step
    # the scaler skips for inf/NaN gradients is normal and counted in metrics.jsonl (skipped_steps).
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Clamp of the logit scale after every step: log100 = ln 100 for every model (open_clip and the authors' release,
    # which lowers a SigLIP's pretrained ~ln 112 at the first step); pretrained = max(ln 100, the pretrained value).
    logit_scale_clamp: Literal["log100", "pretrained"] = "pretrained"
    log_every_steps: int = 10  # metrics.jsonl and tracker cadence, in optimizer steps
    checkpoint_every_steps: int = 0  # also checkpoint every N optimizer steps (0 = at epoch ends only)
    resume: str = ""  # "" = start fresh, "latest" = newest checkpoint of this run, or a checkpoint folder
    # A resume that extends the run (a larger max_steps or epochs): false keeps the lr schedule of the first start
    # (its length is in every checkpoint; steps past it run at its final lr), true spreads it over the new total.
    stretch_schedule: bool = False
    check_memory: bool = True  # refuse to start when the memory estimate exceeds the GPU (false: warn and start)
    # torch threads per process; 0 = auto: the cores this process may use / processes on the host - data workers
    # (train/cpu_threads.py; $OMP_NUM_THREADS wins over auto). Recorded in starts.jsonl; may change on resume.
    cpu_threads: int = 0
    # torch.compile the parts that train (a native tower, the LLM2Vec connector), with dynamic shapes (the text rows
    # vary with the hard negatives). Off until `make gpu-check` measures what it gains; the same losses within float
    # tolerance (tests/test_finetune.py); may change on resume.
    compile: bool = False

    @property
    def accelerate_mixed_precision(self) -> str:
        """accelerate's name for `precision` (it calls fp32 "no")."""
        return "no" if self.precision == "fp32" else self.precision

    def problems(self) -> list[Problem]:
        out = []
        for name in ("epochs", "global_batch_size", "log_every_steps"):
            if getattr(self, name) <= 0:
                out.append(Problem((name,), "must be > 0"))
        for name in ("max_steps", "checkpoint_every_steps", "cpu_threads"):
            if getattr(self, name) < 0:
                out.append(Problem((name,), "must be >= 0"))
        return out


@dataclass(frozen=True, kw_only=True)
class WandbConfig:
    mode: Literal["offline", "online", "disabled"] = "offline"  # offline needs no account; sync later
    project: str = "clipablate"  # W&B project
    entity: str = ""  # W&B team or user ("" = the account's default)
    group: str = ""  # runs of one sweep share a group so W&B compares them side by side


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    benchmarks: tuple[Benchmark, ...] = BENCHMARK_NAMES  # scored for every checkpoint
    data_root: str = ""  # folder holding What'sUp's data/ and MMVP_VLM/, read by eval.run ("" = pass --data-root)
    label_fixes: Literal["paper", "none"] = "paper"  # paper: apply the published What'sUp A label corrections
    # official: the benchmarks' own rules in fp32 (What'sUp/COCO/GQA argmax, a tie picks the correct first option);
    # released: as the authors' eval_clip.py, strict '>' (a tie is wrong) on fp16-autocast features for What'sUp,
    # COCO and GQA (MMVP-VLM and mmvp_clip in fp32 with the official rule, as that script scores them).
    scoring: Literal["official", "released"] = "official"


@dataclass(frozen=True, kw_only=True)
class RecipeConfig:
    # A named set of values laid under the recipe's own (train/profiles.py): released = the authors' released code
    # (weight decay 0, fp16 + scaler, random crops on the locked tower, their negatives, clamp ln 100, GELU build of
    # ViT-L/14-336, their eval rule); clipablate = our choices. "" = the schema defaults. A key the recipe file or
    # the command line sets wins over the profile.
    profile: Literal["", "released", "clipablate"] = ""
    run_name: str = ""  # run folder name under output_dir ("" = the recipe file's name)
    output_dir: str = "runs"  # parent of every run folder
    seed: int = 0  # model init, data order and caption draws all derive from it
    # auto: train from cached outputs of frozen parts (a locked image tower under a deterministic transform, the
    # LLM2Vec LLM, a locked native text tower), built once and shared by every run with the same frozen part, built
    # only when the run trains on at least as many samples as the build encodes (a finished cache is always used).
    # on: build it whatever the run's length. off: always run the frozen parts. See train/cache.py.
    cache: Literal["auto", "on", "off"] = "auto"
    cache_dir: str = ""  # where feature caches live ("" = $CLIPABLATE_CACHE/features or ~/.cache/clipablate/features)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def problems(self) -> list[Problem]:
        out = [Problem(tuple(f"model.{k}" for k in p.keys), p.message) for p in self.model.name_problems()]
        if self.run_name and not is_plain_folder_name(self.run_name):
            out.append(
                Problem(
                    ("run_name",),
                    f"{self.run_name!r} is not a plain folder name (no '/', '\\', '..', leading '.' or '~', no "
                    "control characters): the run folder must lie inside output_dir",
                )
            )
        if self.loss.name in ("siglip", "siglip_neg") and self.model.has_logit_bias() is False:
            out.append(
                Problem(
                    ("loss.name", "model.name"),
                    f"the sigmoid loss {self.loss.name} needs a model with a logit bias (SigLIP); {self.model.name} "
                    "has none: use clip or negclip, or a SigLIP model",
                )
            )
        if self.train.max_steps and self.optim.warmup_steps >= self.train.max_steps:
            out.append(
                Problem(
                    ("optim.warmup_steps", "train.max_steps"),
                    f"warmup ({self.optim.warmup_steps} steps) is not shorter than training "
                    f"({self.train.max_steps} steps)",
                )
            )
        if self.data.batch_size > 0 and self.train.global_batch_size % self.data.batch_size:
            out.append(
                Problem(
                    ("train.global_batch_size", "data.batch_size"),
                    f"global batch {self.train.global_batch_size} is not a multiple of the per-device "
                    f"batch {self.data.batch_size}",
                )
            )
        return out


def is_plain_folder_name(name: str) -> bool:
    """One path component that stays where it is put: no separators, not '.', '..', hidden or '~', printable."""
    return (
        bool(name)
        and "/" not in name
        and "\\" not in name
        and not name.startswith((".", "~"))
        and name.isprintable()
        and len(name.encode()) <= 255
    )


RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipe_path(path: str | Path) -> Path:
    """A recipe file, a run folder (its config.yaml), or a recipe's name (`tiny_clip_neg` =
    recipes/tiny_clip_neg.yaml); ConfigError listing the recipes for a name that is none of these."""
    given = Path(path)
    if is_run_folder(given):
        return given / "config.yaml"
    if given.exists() or given.suffix in (".yaml", ".yml") or len(given.parts) > 1:
        return given
    named = RECIPES_DIR / f"{given}.yaml"
    if named.exists():
        return named
    raise ConfigError(str(path), [f"neither a recipe file nor a recipe name; the recipes: {', '.join(recipe_names())}"])


def is_run_folder(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "config.yaml").is_file()


def _in_run_folder(cfg: RecipeConfig, given: str | Path, overrides: Sequence[str]) -> RecipeConfig:
    """For a run folder given where a recipe goes: the folder itself as the run's place, whatever output_dir its
    config.yaml recorded (the folder may have been moved, or the sweep run from another directory), so the tool
    works on (and finetune resumes) that folder. An explicit output_dir= or run_name= override wins."""
    folder = Path(given)
    if not is_run_folder(folder):
        return cfg
    if any(o.split("=", 1)[0].strip() in ("output_dir", "run_name") for o in overrides):
        return cfg
    if (Path(cfg.output_dir) / cfg.run_name).resolve() == folder.resolve():
        return cfg
    folder = folder.resolve()
    return replace(cfg, output_dir=str(folder.parent), run_name=folder.name)


def load_recipe(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, paths: PathChecks = "ignore"
) -> RecipeConfig:
    """Recipe YAML + `key.sub=value` overrides -> validated RecipeConfig, or ConfigError with every problem.

    `paths`: "error" also reports missing shard folders and weights files among the problems, "warn" prints them
    as warnings to stderr, "ignore" does not look (see `path_problems`). With "warn" or "error", path_warnings
    (eval.data_root) are printed too; warnings only when the recipe has no problems.
    """
    given, path = path, recipe_path(path)
    data = load_yaml_file(path, "recipe")
    problems: list[str] = []
    override_tree = parse_overrides(overrides, problems)
    if data is None:
        data = {}
    if isinstance(data, dict):
        data = with_profile(data, override_tree)
    cfg, build_problems, failed = build_partial(
        RecipeConfig, merge(data, override_tree) if isinstance(data, dict) else data
    )
    problems += build_problems
    warnings: list[str] = []
    if paths != "ignore":
        found = [_problem_text(p) for p in _path_checks(cfg) if not any(failed_under(k, failed) for k in p.keys)]
        if paths == "error" and not failed_under("model", failed):  # every missing download too, before any loads
            from models.weights_preflight import missing_weights

            found += missing_weights(cfg.model)
        (problems if paths == "error" else warnings).extend(found)
        warnings += path_warnings(cfg)
    if problems:  # the warnings wait: one message at a time
        raise ConfigError(str(path), problems)
    for warning in warnings:
        print(f"warning: {path}: {warning}", file=sys.stderr)
    if not cfg.run_name:
        cfg = replace(cfg, run_name=path.stem)
    return _in_run_folder(cfg, given, overrides)


def path_problems(cfg: RecipeConfig) -> list[str]:
    """What the recipe names but is not there, each with its key path: a shard folder that is missing or holds no
    `*.tar`, a `model.pretrained` weights file or folder that does not exist. Read-only; empty when all is in place.
    """
    return [_problem_text(p) for p in _path_checks(cfg)]


def path_warnings(cfg: RecipeConfig) -> list[str]:
    """Paths that only a later step needs (eval.data_root: eval may run on another machine)."""
    root = cfg.eval.data_root
    if root and not Path(root).is_dir():
        return [f"eval.data_root: {root}: no such folder (eval.run needs it, or --data-root)"]
    return []


def _path_checks(cfg: RecipeConfig) -> list[Problem]:
    out = []
    for i, folder in enumerate(cfg.data.shards):
        where, what = Path(folder), None
        if not where.exists():
            what = "no such folder"
        elif not where.is_dir():
            what = "is a file; give the folder that holds the shards"
        elif not any(where.glob("*.tar")):
            what = "holds no *.tar shards"
        if what:
            hint = " (write shards with python -m data_prep.build_shards)" if not what.startswith("is a") else ""
            out.append(Problem((f"data.shards[{i}]",), f"{folder}: {what}{hint}"))
    pretrained = cfg.model.pretrained
    if pretrained and names_a_file(pretrained) and not Path(pretrained).exists():
        out.append(Problem(("model.pretrained",), f"{pretrained}: no such weights file or folder"))
    return out


def _problem_text(problem: Problem) -> str:
    return f"{' / '.join(problem.keys)}: {problem.message}"


def main(argv: list[str]) -> int:
    args = [a for a in argv if a not in ("--check-paths", "--fidelity")]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if args else 2
    check = "--check-paths" in argv
    try:
        cfg = load_recipe(args[0], args[1:], paths="error" if check else "warn")
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 2
    if "--fidelity" in argv:
        print(format_fidelity(cfg))
        return 0
    print(to_yaml(cfg), end="")
    return 0


def format_fidelity(cfg: RecipeConfig) -> str:
    """Where the resolved recipe stands on each point the authors' released code and ours differ (train/profiles.py)."""
    from train.profiles import fidelity
    from train.typed_config import flatten, to_plain

    lines = [f"{cfg.run_name}: profile {cfg.profile or '(none)'}", "| key | value | side | the released code |"]
    lines.append("|---|---|---|---|")
    for row in fidelity(flatten(to_plain(cfg))):
        lines.append(f"| {row['key']} | {row['value']} | {row['side']} | {row['released']}: {row['what']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
