"""Compute cost of a recipe or a sweep: FLOPs per sample of each model part, GPU-hours with and without the caches.

    python -m train.cost recipes/clip_llm2vec_neg.yaml [key=value ...] [--gpu h100|h200|a100] [--utilisation 0.4]
                         [--processes 4] [--out cost.json]
    python -m launch.sweep launch/sweeps/paper_table5.yaml --estimate [--gpu ...] [--utilisation ...] [--out F]

FLOPs are counted, not guessed: the recipe's model is built on PyTorch's meta device (models.memory.model_on_meta:
the real architecture, no weights, no download) and each part runs once on a batch of one under
torch.utils.flop_counter.FlopCounterMode, which counts every matmul and convolution (2 FLOPs per multiply-add),
backward included where the part trains. Attention: on the meta device scaled_dot_product_attention runs its math
path, whose two batched matmuls (QK^T and AV) the counter sees; every count is checked against the analytic
4 x tokens^2 x width per layer, and where the counter saw less than half of it (a path it cannot count) the
analytic figure is added and the table says so. Elementwise work (norms, softmax, activations) is not counted
(a few per cent at these widths), nor the loss's logits (global batch^2 x width per step, < 0.1%).

Parts, per sample of a training step:
  image      the image tower: a forward when locked, forward + backward when it trains (measured)
  text       the native text tower on every text (the caption, plus a hard negative with negclip/siglip_neg,
             a sample without one repeating its caption): forward + backward, or a forward when locked
  llm        the frozen LLM2Vec LLM: a forward per text
  connector  LLM2Vec's trainable connector: forward + backward per text
Gradient accumulation (global batch > micro-batch x processes) runs every step in two passes (train/finetune.py):
every part that runs does one more forward. Gradient checkpointing adds one forward of each trainable tower.

Caches (train/cache.py): with a locked image tower and data.augment false the image tower's outputs are read from
a cache; the LLM's (or a locked native text tower's) too. Cached parts cost nothing per step; each cache costs one
forward per sample (image) or per cached text (every caption option or joined caption, plus every hard negative),
once. A sweep counts a cache once for all its runs that share it: the same key as train/cache.py's (model and
weights, the LLM2Vec settings as the model's info records them, precision, shards).

Data: samples from the shard folders' sizes.json and hard negatives from their manifest.json where the folders
exist; else LLaVA-1.5's data as the paper uses it (PAPER_DATA). Tokens: a native text tower always runs its full
context (77 for CLIP, 64 for SigLIP); the LLM runs each text's own length (its batches are padded to their longest
text and sorted by length, train/cache.py), measured on the shards with the recipe's tokenizer
(train/text_lengths.py: the mean for cache builds, padded to each pass's longest for uncached steps), else
ASSUMED_LLM_TOKENS (template and caption), capped at text.llm2vec.max_length.

GPU-hours = FLOPs / (the GPU's dense peak at the recipe's precision x utilisation) / 3600.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from models.cache import resolve_cache_dir
from models.config import ModelConfig
from train.batch_planner import AUTO, plan_micro_batch, released_parts
from train.cache import image_cache_blocker, patch_cache_blocker, text_cache_blocker, text_view
from train.config import RecipeConfig, is_run_folder, load_recipe
from train.data import BatchPlan
from train.typed_config import ConfigError
from train.yaml_loading import load_yaml_file

# Dense (no sparsity) tensor-core peaks in FLOP/s, from NVIDIA's data sheets (SXM parts). fp32 is plain FP32: PyTorch
# does not use TF32 for matmuls unless asked (torch.backends.cuda.matmul.allow_tf32).
GPUS: dict[str, dict[str, float]] = {
    "h100": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "h200": {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12},
    "a100": {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12},
}
GPU_MEMORY_BYTES = {"h100": 80 * 10**9, "h200": 141 * 10**9, "a100": 80 * 10**9}  # the SXM parts' HBM
DEFAULT_GPU = "h100"
DEFAULT_UTILISATION = 0.4
DEFAULT_PROCESSES = 4  # the paper's 4 GPUs (where the global batch divides into them)

ASSUMED_LLM_TOKENS = 128  # LLM2Vec: chat template + caption, where the shards or the tokenizer are not here


@dataclass(frozen=True)
class PaperData:
    """LLaVA-1.5's training data as the shards hold it, for recipes whose shard folders are not there."""

    lcs558k: int = 558_128  # blip_laion_cc_sbu_558k.json: every item has an image
    mix665k: int = 665_298  # llava_v1_5_mix665k.json
    mix665k_text_only: int = 40_688  # its ShareGPT conversations without an image: build_shards skips them
    # Appendix B.2's left/right key-phrase counts (items with an image; captions): what can get a hard negative.
    samples_with_negative: int = 12_658 + 560
    captions_with_negative: int = 13_473 + 560

    @property
    def samples(self) -> int:
        return self.lcs558k + self.mix665k - self.mix665k_text_only

    def describe(self) -> str:
        return (
            f"{self.samples:,} samples assumed (shards not found): LCS-558K {self.lcs558k:,} + DataMix-665K "
            f"{self.mix665k:,} less its {self.mix665k_text_only:,} text-only items; hard negatives for "
            f"{self.samples_with_negative:,} samples / {self.captions_with_negative:,} captions (the paper's "
            "key-phrase counts, Appendix B.2); one caption option per sample"
        )


PAPER_DATA = PaperData()

PARTS = ("image", "text", "llm", "connector", "alignment")
PART_LABELS = {
    "image": "image tower",
    "text": "text tower",
    "llm": "LLM2Vec LLM",
    "connector": "connector",
    "alignment": "alignment head",  # per sample: its patch and text projections, and its scores for every text
}
# FlopCounterMode's names for ops that compute attention scores and their weighted sums.
ATTENTION_OPS = ("bmm", "scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention")


# --- counting on the meta device ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartFlops:
    """One part's FLOPs per item (a sample for the image tower, a text otherwise), batch 1."""

    part: str
    trains: bool
    tokens: int  # sequence length it runs (0: not a transformer)
    forward: float  # one forward pass
    train: float  # forward + backward (= forward when frozen)
    attention: str = "counted"  # "counted" by FlopCounterMode, "added" analytically, "-" (no attention)


@dataclass(frozen=True)
class ModelFlops:
    parts: dict[str, PartFlops]
    connector_width: int  # LLM2Vec connector's hidden width (part of the LLM cache's key), 0 without one
    notes: tuple[str, ...] = ()
    pair_flops: float = 0.0  # an alignment head's forward FLOPs to score one (image, text) pair (0: dot product)
    patch_cache_width: int = 0  # floats per image of a patch-token cache (an alignment head), 0 without one
    # a token-level loss's forward FLOPs per sample (SPARC: token projections, token x patch weights, grouped
    # patches, token x token logits), 0 without one
    sample_flops: float = 0.0


@contextmanager
def _meta_autocast() -> Iterator[None]:
    """transformers' rotary embedding opens torch.autocast(device_type=<the tensor's device>), which fails for
    "meta"; under this, that autocast is a no-op (it only disables autocast around a tiny outer product)."""
    real = torch.autocast

    def autocast(device_type: str, *args: Any, **kwargs: Any):
        return nullcontext() if device_type == "meta" else real(device_type, *args, **kwargs)

    torch.autocast = autocast
    try:
        yield
    finally:
        torch.autocast = real


def _count(run: Callable[[], Any]) -> tuple[float, float]:
    """(all FLOPs, attention-op FLOPs) of `run()` under FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with _meta_autocast(), FlopCounterMode(display=False) as counter:
        run()
    counts = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    attention = sum(n for op, n in counts.items() if any(name in op for name in ATTENTION_OPS))
    return float(counter.get_total_flops()), float(attention)


def _measure(
    part: str, module: torch.nn.Module, forward: Callable[[], torch.Tensor], tokens: int, shape: Any, notes: list[str]
) -> PartFlops:
    """Forward FLOPs, and forward + backward FLOPs where `module` has trainable parameters; attention checked."""
    trains = any(p.requires_grad for p in module.parameters())

    def forward_only():
        # With autograd on: under no_grad, FlopCounterMode's module tracker trips over views of trainable parameters
        # (timm's attention-pool latent). A graph on the meta device costs nothing, and is dropped here.
        forward()

    def forward_backward():
        out = forward()
        if out.requires_grad:
            out.float().sum().backward()

    fwd, attention = _count(forward_only)
    train = fwd
    if trains:
        train, _ = _count(forward_backward)
        for p in module.parameters():
            p.grad = None
    status = "-"
    if shape is not None:
        expected = shape.layers * 4 * tokens**2 * shape.width  # QK^T and AV: 2 FLOPs per multiply-add each
        status = "counted"
        if attention < 0.5 * expected:
            fwd += expected
            train += 3 * expected if trains else expected
            status = "added"
            notes.append(
                f"{PART_LABELS[part]}: FlopCounterMode saw {attention / 1e9:.2f} of the {expected / 1e9:.2f} GFLOP of "
                "attention on the meta device; the analytic count (4 x tokens^2 x width per layer; x3 with backward) "
                "is added"
            )
    return PartFlops(part, trains, tokens, fwd, train, status)


def _quiet_build(model_cfg: ModelConfig):
    from models.memory import model_on_meta

    logging.disable(logging.WARNING)  # open_clip's "No pretrained weights loaded": nothing is meant to load
    try:
        return model_on_meta(model_cfg)
    finally:
        logging.disable(logging.NOTSET)


@lru_cache(maxsize=32)
def model_flops(model_cfg: ModelConfig, llm_tokens: int) -> ModelFlops:
    """FLOPs of every part of `model_cfg`'s model, with its freezing, at batch 1 (cached per config)."""
    from models.llm2vec_text import LLM2VecTextTower
    from models.memory import TransformerShape, _image_shape, _native_text_shape

    model = _quiet_build(model_cfg)
    notes: list[str] = []
    parts: dict[str, PartFlops] = {}

    image = model.image_tower
    size = getattr(image, "image_size", None)
    size = (size, size) if isinstance(size, int) else tuple(size)
    pixels = torch.empty(1, 3, *size, device="meta")
    shape = _image_shape(image)
    parts["image"] = _measure("image", image, lambda: image(pixels), shape.tokens if shape else 0, shape, notes)
    if shape is None:
        notes.append(f"image tower ({type(image).__name__}): attention not checked (layout unknown)")

    tower = model.text_tower
    connector_width = 0
    if isinstance(tower, LLM2VecTextTower):
        llm = tower.llm2vec.model
        config = llm.config
        ids = torch.zeros(1, llm_tokens, dtype=torch.long, device="meta")
        mask = torch.ones(1, llm_tokens, dtype=torch.long, device="meta")
        llm_shape = TransformerShape(config.num_hidden_layers, config.hidden_size, config.intermediate_size, llm_tokens)

        def run_llm():
            return llm(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state

        parts["llm"] = _measure("llm", llm, run_llm, llm_tokens, llm_shape, notes)
        connector = tower.connector
        pooled = torch.empty(1, config.hidden_size, device="meta")
        parts["connector"] = _measure("connector", connector, lambda: connector(pooled), 0, None, notes)
        connector_width = int(connector[0].out_features)
    else:
        shape = _native_text_shape(tower)
        context = shape.tokens if shape else _context_length(tower)
        ids = torch.zeros(1, context, dtype=torch.long, device="meta")
        parts["text"] = _measure("text", tower, lambda: tower({"input_ids": ids}), context, shape, notes)
        if shape is None:
            notes.append(f"text tower ({type(tower).__name__}): attention not checked (layout unknown)")
    pair_flops = patch_width = sample_flops = 0
    if model.head is not None:  # its projections measured; its pair scores counted (~4 x patches x dim per pair)
        head = model.head
        tokens = torch.empty(1, head.patches, head.width, device="meta")
        text = torch.empty(1, head.text_projection[-1].in_features, device="meta")
        parts["alignment"] = _measure(
            "alignment", head, lambda: head.image_side(tokens).sum() + head.text_side(text).sum(), 0, None, notes
        )
        dim = head.text_projection[-1].in_features  # the embedding width
        pair_flops = 4.0 * head.patches * dim
        patch_width = head.patches * head.width
        if model.reads_text_tokens:  # SPARC: every text token (the LLM's, or the native context) x the patches
            length = llm_tokens if isinstance(tower, LLM2VecTextTower) else context
            sample_flops = 2.0 * length * dim * dim + 4.0 * length * head.patches * dim + 2.0 * length * length * dim
            if "connector" in parts:  # the connector maps every token too, not only the pooled state
                c = parts["connector"]
                parts["connector"] = replace(c, forward=c.forward * (1 + length), train=c.train * (1 + length))
    return ModelFlops(parts, connector_width, tuple(notes), pair_flops, patch_width, sample_flops)


def _context_length(tower: torch.nn.Module) -> int:
    for owner in (tower, getattr(tower, "text", None)):
        if owner is not None and getattr(owner, "context_length", None):
            return int(owner.context_length)
    return 77


# --- data ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataCounts:
    samples: int
    captions: int  # caption options (every gpt answer)
    samples_with_negative: int
    captions_with_negative: int
    source: str  # where the counts come from, in words
    measured: bool  # from the shards (True) or PAPER_DATA (False)


@lru_cache(maxsize=16)
def data_counts(shards: tuple[str, ...]) -> DataCounts:
    """Counts from the shard folders' sizes.json and manifest.json, or PAPER_DATA where a folder is missing."""
    folders = [Path(folder) for folder in shards]
    missing = [str(f) for f in folders if not (f / "sizes.json").is_file()]
    if missing or not folders:
        paper = PAPER_DATA
        return DataCounts(
            paper.samples,
            paper.samples,
            paper.samples_with_negative,
            paper.captions_with_negative,
            f"{paper.describe()} [missing: {', '.join(missing) or 'no shard folder'}]",
            False,
        )
    samples = captions = with_negative = captions_negative = 0
    manifests = 0
    for folder in folders:
        sizes = json.loads((folder / "sizes.json").read_text())
        n = sum(int(v) for v in sizes.values())
        samples += n
        try:
            manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError):
            manifest = {}
        negatives = manifest.get("hard_negatives") or {}
        if negatives:
            manifests += 1
        captions += int(negatives.get("captions", n))
        with_negative += int(negatives.get("samples_with_negative", 0))
        captions_negative += int(negatives.get("captions_with_negative", 0))
    source = f"{samples:,} samples in {', '.join(map(str, folders))} (sizes.json)"
    source += (
        f"; hard negatives for {with_negative:,} samples / {captions_negative:,} of {captions:,} captions (manifest)"
        if manifests
        else "; no manifest: no hard negatives counted"
    )
    return DataCounts(samples, captions, with_negative, captions_negative, source, True)


# --- one run ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PartCost:
    part: str
    trains: bool
    tokens: int
    attention: str
    forward_gflop: float  # per item
    train_gflop: float  # forward + backward per item (frozen: = forward)
    items_per_sample: float  # 1 image; texts per sample for the text parts (captions + real negatives)
    uncached_gflop: float  # per training sample, every part run
    cached_gflop: float  # per training sample, cached parts read from their cache
    cached: bool  # read from a cache in the cached estimate


@dataclass(frozen=True)
class CacheBuild:
    kind: str  # "image" or "text"
    key: str  # what makes it shareable (train/cache.py's key, from the config)
    what: str  # in words
    forwards: int
    gflop_per_forward: float
    pflop: float
    gpu_hours: float


@dataclass
class RunEstimate:
    name: str
    recipe: str
    gpu: str
    precision: str
    peak_tflops: float
    utilisation: float
    samples: int
    epochs: int
    steps: int
    global_batch: int
    micro_batch: int
    processes: int
    accumulation: int
    passes: int
    texts_per_sample: float  # 1 + the real hard negatives per sample (only those are encoded)
    parts: list[PartCost]
    caches: list[CacheBuild]
    uncached_pflop: float
    cached_training_pflop: float
    uncached_gpu_hours: float
    cached_training_gpu_hours: float
    assumptions: list[str] = field(default_factory=list)
    # The FLOP floor (`floor_pflop`): what the math needs. Every trainable part one forward + backward per trained
    # sample and text (real negatives only), no second pass, no recomputation; every frozen part whose outputs a
    # cache could hold once per input (`floor_caches`: the builds of cache=on, shared by key across runs); a frozen
    # part no cache can hold (new random crops every epoch) one forward per trained sample.
    floor_training_pflop: float = 0.0
    floor_caches: list[CacheBuild] = field(default_factory=list)

    @property
    def cache_gpu_hours(self) -> float:
        return sum(c.gpu_hours for c in self.caches)

    @property
    def cached_gpu_hours(self) -> float:
        return self.cached_training_gpu_hours + self.cache_gpu_hours

    @property
    def cached_pflop(self) -> float:
        return self.cached_training_pflop + sum(c.pflop for c in self.caches)

    @property
    def floor_pflop(self) -> float:
        return self.floor_training_pflop + sum(c.pflop for c in self.floor_caches)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out |= {"cache_gpu_hours": self.cache_gpu_hours, "cached_gpu_hours": self.cached_gpu_hours}
        out |= {"cached_pflop": self.cached_pflop, "floor_pflop": self.floor_pflop}
        return out


def gpu_peak(gpu: str, precision: str) -> float:
    """Dense peak FLOP/s of `gpu` (h100, h200, a100) at `precision`; ValueError naming the known GPUs otherwise."""
    name = gpu.strip().lower()
    if name not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}: one of {', '.join(sorted(GPUS))} (dense peaks in train.cost.GPUS)")
    if precision not in GPUS[name]:
        raise ValueError(f"precision {precision!r}: one of {', '.join(sorted(GPUS[name]))}")
    return GPUS[name][precision]


GPU_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "gpu_results.json"  # written by make gpu-check


def chosen_utilisation(cfg: RecipeConfig, gpu: str, given: float | None) -> tuple[float, str]:
    """(utilisation, where it comes from): `given`, else the MFU `make gpu-check` measured on this GPU kind for the
    step closest to `cfg`'s (a trainable image tower: the unlocked SigLIP step; an LLM2Vec tower: the 7B LLM step;
    else the locked CLIP step), else DEFAULT_UTILISATION."""
    if given is not None:
        return given, "given"
    try:
        results = json.loads(GPU_RESULTS.read_text())
    except (OSError, ValueError):
        results = None
    device = str((results or {}).get("device_name", ""))
    if results and gpu.strip().lower() in device.lower():
        image_trains = not cfg.model.image.locked or bool(cfg.model.image.unlocked_last_blocks)
        part = (
            "siglip_unlocked_neg"
            if image_trains
            else "siglip_llm2vec_neg"
            if cfg.model.text.tower == "llm2vec"
            else "clip_neg"
        )
        measured = (((results.get("parts") or {}).get(part) or {}).get("summary") or {}).get("mfu")
        if isinstance(measured, int | float) and 0 < measured <= 1:
            return float(measured), f"measured by make gpu-check on {device}, its {part} step ({GPU_RESULTS.name})"
    return DEFAULT_UTILISATION, "assumed; make gpu-check measures it on a GPU"


def check_utilisation(utilisation: float) -> float:
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation {utilisation}: a share of the peak in (0, 1], e.g. 0.4")
    return utilisation


def default_processes(cfg: RecipeConfig) -> int:
    """The paper's 4 processes where the global batch divides into 4 x micro-batches, else 1."""
    span = (cfg.data.batch_size or 1) * DEFAULT_PROCESSES
    return DEFAULT_PROCESSES if cfg.train.global_batch_size % span == 0 else 1


def _gpu_hours(pflop: float, peak: float, utilisation: float) -> float:
    return pflop * 1e15 / (peak * utilisation) / 3600


def _llm_tokens(cfg: RecipeConfig, assumptions: list[str]) -> tuple[int, int]:
    """(tokens per text of a cache build, of an uncached step) for the LLM2Vec LLM: measured on the shards with the
    recipe's tokenizer (train/text_lengths.py), else ASSUMED_LLM_TOKENS for both; capped at max_length."""
    max_length = cfg.model.text.llm2vec.max_length
    measured = _measured_llm_tokens(cfg)
    if measured is not None:
        build, step = round(measured.mean), round(measured.padded_mean)
        where = measured.describe() + "".join(f"; {note}" for note in measured.notes)
    else:
        build = step = ASSUMED_LLM_TOKENS
        where = "assumed: the shards or the recipe's tokenizer are not on this machine to measure them"
    capped = f", capped at max_length {max_length}" if max(build, step) > max_length else ""
    assumptions.append(f"LLM2Vec tokens per text: {min(build, max_length)} / {min(step, max_length)} ({where}{capped})")
    return min(build, max_length), min(step, max_length)


def _measured_llm_tokens(cfg: RecipeConfig):
    """train.text_lengths' measurement, once per LLM, shards and text rule (a sweep asks once per run)."""
    key = (cfg.model.text.llm2vec, tuple(cfg.data.shards), cfg.data.caption_policy, cfg.data.negative_rule,
           cfg.loss.uses_hard_negatives, cfg.seed, cfg.data.batch_size, cfg.data.unrecorded_shards)  # fmt: skip
    if key not in _MEASURED:
        from train.text_lengths import measure_llm_tokens

        _MEASURED[key] = measure_llm_tokens(cfg)
    return _MEASURED[key]


_MEASURED: dict[tuple, Any] = {}


def cache_keys(cfg: RecipeConfig, flops: ModelFlops) -> dict[str, str]:
    """The caches `cfg` trains from (kind -> key): train/cache.py's keys as far as the config decides them.

    Image: model name and weights, precision, shards (the transform follows from the model). Text: which texts
    (view), the tower, the LLM2Vec settings train/cache.py's key takes from the model's info (the connector's
    width among them), precision, shards."""
    if cfg.cache == "off":
        return {}
    model = cfg.model
    shards = [str(Path(s).resolve()) for s in cfg.data.shards]
    common = {"precision": cfg.train.precision, "shards": shards}
    keys = {}
    if image_cache_blocker(model, cfg.data.augment) is None and not _patch_cache_blocker(cfg, flops):
        image_model = [model.name, model.pretrained, model.released_gelu]
        output = {"output": f"patch_tokens@{model.head.layer}"} if flops.patch_cache_width else {}
        keys["image"] = json.dumps({"kind": "image", "model": image_model, **output, **common})
    if text_cache_blocker(model) is None:
        if model.text.tower == "llm2vec":
            llm = model.text.llm2vec
            tower = {
                "base_model": llm.base_model,
                "peft_adapter": llm.peft_adapter,
                "pooling": llm.pooling,
                "max_length": llm.max_length,
                "doc_max_length": llm.doc_max_length,
                "instruction": llm.instruction,
                "dtype": llm.dtype,
            }
        else:
            tower = {"model": [model.name, model.pretrained]}
        view = text_view(cfg.data.caption_policy)
        # the cache holds each caption's negative under the rule, whatever the loss (train/cache.py's key)
        negatives = cfg.data.negative_rule
        text = {"kind": "text", "view": view, "tower": model.text.tower, "negatives": negatives, **tower, **common}
        keys["text"] = json.dumps(text)
    return keys


def _patch_cache_blocker(cfg: RecipeConfig, flops: ModelFlops) -> str | None:
    """Why an alignment head's patch-token cache would not be built here (train/cache.py: it must fit on the disk of
    the cache folder); None: it would, or the model has no head."""
    if not flops.patch_cache_width:
        return None
    root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else resolve_cache_dir() / "features"
    return patch_cache_blocker(data_counts(tuple(cfg.data.shards)).samples, flops.patch_cache_width, root)


def estimate_run(
    cfg: RecipeConfig,
    *,
    name: str = "",
    recipe: str = "",
    processes: int | None = None,
    gpu: str = DEFAULT_GPU,
    utilisation: float | None = None,
) -> RunEstimate:
    """The cost of training `cfg` (a resolved recipe) on `processes` processes, with and without its caches.

    `name` and `recipe` label the run (default: the config's run_name). `utilisation` None: what `make gpu-check`
    measured on this GPU for the closest step (bench/gpu_results.json), else DEFAULT_UTILISATION."""
    utilisation, utilisation_source = chosen_utilisation(cfg, gpu, utilisation)
    check_utilisation(utilisation)
    precision = cfg.train.precision
    peak = gpu_peak(gpu, precision)
    processes = processes or default_processes(cfg)
    data = data_counts(tuple(cfg.data.shards))
    assumptions = [f"data: {data.source}"]
    build_tokens, step_tokens = _llm_tokens(cfg, assumptions) if cfg.model.text.tower == "llm2vec" else (0, 0)
    flops = model_flops(cfg.model, step_tokens)  # per step: each pass padded to its longest text
    build_flops = model_flops(cfg.model, build_tokens)  # a cache build batches texts by length: ~no padding
    assumptions += list(flops.notes)

    per_process = max(cfg.train.global_batch_size // processes, 1)
    plan = BatchPlan(data.samples, cfg.train.global_batch_size, cfg.data.batch_size or per_process, processes)
    problems = plan.problems()
    if problems:
        raise ValueError(f"{name or cfg.run_name}: " + "; ".join(problems))
    steps = plan.steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        steps = min(steps, cfg.train.max_steps)
    trained_samples = steps * plan.global_batch
    if cfg.data.batch_size == AUTO:  # as the trainer will choose on this GPU (train/batch_planner.py)
        chosen = plan_micro_batch(
            cfg, processes, GPU_MEMORY_BYTES[gpu.strip().lower()],
            released=released_parts(cfg, trained_samples, data.samples),
            texts_per_sample=2 if cfg.loss.uses_hard_negatives else 1,
        )  # fmt: skip
        plan = replace(plan, micro_batch=chosen.micro_batch)
        assumptions.append(f"micro-batch {chosen.how} (memory estimate, {gpu.lower()})")
    passes = 2 if plan.accumulation > 1 else 1
    texts = 1 + negatives_per_sample(cfg, data) if cfg.loss.uses_hard_negatives else 1
    recompute = 1 if cfg.model.grad_checkpointing else 0
    keys = possible_keys = cache_keys(replace(cfg, cache="on"), flops)
    if cfg.cache == "off":
        keys = {}
    if keys and cfg.cache == "auto" and trained_samples < data.samples:  # train/cache.py's rule: no build to repay
        assumptions.append(
            f"cache=auto: {trained_samples:,} trained samples, fewer than the {data.samples:,} a cache build encodes: "
            "the run builds no cache, so it is estimated uncached (a cache already built by a longer run is used; "
            "cache=on builds one)"
        )
        keys = {}
    cached_parts = set()
    if "image" in keys:
        cached_parts.add("image")
    if "text" in keys:
        cached_parts.add("llm" if cfg.model.text.tower == "llm2vec" else "text")

    parts = []
    for part in PARTS:
        if part not in flops.parts:
            continue
        f = flops.parts[part]
        items = 1 if part in ("image", "alignment") else texts
        if part == "alignment":  # per sample: its scores against every text of the global batch, x3 with backward
            pairs = plan.global_batch * texts
            extra = pairs * flops.pair_flops + flops.sample_flops
            f = replace(f, forward=f.forward + extra, train=f.train + 3 * extra)
        if f.trains:  # forward + backward, the two-pass step's extra forward, checkpointing's recomputed forward
            per_item = f.train + (passes - 1 + recompute) * f.forward
        elif part in ("text", "llm") and flops.sample_flops:  # a token-level loss runs the text tower every pass
            per_item = passes * f.forward
        else:  # frozen: once per step (the two-pass step reuses pass 1's outputs, train/finetune.py)
            per_item = f.forward
        uncached = items * per_item / 1e9
        cached = 0.0 if part in cached_parts else uncached
        parts.append(
            PartCost(
                part, f.trains, f.tokens, f.attention, f.forward / 1e9, f.train / 1e9, items, uncached, cached,
                part in cached_parts,
            )
        )  # fmt: skip
    uncached_pflop = trained_samples * sum(p.uncached_gflop for p in parts) / 1e6
    cached_pflop = trained_samples * sum(p.cached_gflop for p in parts) / 1e6
    cacheable = {"image"} if "image" in possible_keys else set()
    if "text" in possible_keys:
        cacheable.add("llm" if cfg.model.text.tower == "llm2vec" else "text")
    floor_gflop = sum(
        p.items_per_sample * (p.train_gflop if p.trains else p.forward_gflop)
        for p in parts
        if p.trains or p.part not in cacheable
    )
    caches = _cache_builds(cfg, keys, data, build_flops, peak, utilisation)
    floor_caches = _cache_builds(cfg, possible_keys, data, build_flops, peak, utilisation)

    if passes > 1:
        assumptions.append(
            f"accumulation {plan.accumulation} (global batch {plan.global_batch} = {plan.micro_batch} x {processes} "
            f"processes x {plan.accumulation}): two passes per step, one more forward of every trainable part (pass 2 "
            "reuses the frozen parts' outputs)"
        )
    if recompute:
        assumptions.append("gradient checkpointing: one more forward of each trainable tower")
    cached_per_sample = sum(p.cached_gflop for p in parts)
    if keys and cached_per_sample < 0.01 * sum(p.uncached_gflop for p in parts):
        assumptions.append(
            "from the caches only the trainable parts compute (under 1% of the uncached FLOPs): such steps are bound "
            "by reading cached features and the data loader, not by FLOPs, so their GPU-hours here are a lower bound"
        )
    if cfg.cache == "off":
        assumptions.append("cache=off: the cached figures equal the uncached ones")
    elif blocker := image_cache_blocker(cfg.model, cfg.data.augment) or _patch_cache_blocker(cfg, flops):
        assumptions.append(f"image tower runs every step ({blocker})")
    elif flops.patch_cache_width:
        size = data.samples * flops.patch_cache_width * 4 / 1e9
        assumptions.append(
            f"alignment head: the image cache holds the last block's patch tokens ({flops.patch_cache_width * 4 / 1e6:.2f} "
            f"MB per image, {size:,.1f} GB for {data.samples:,} samples), which fit on the cache folder's disk"
        )
    assumptions.append(
        f"GPU: {gpu.lower()} at {peak / 1e12:g} TFLOP/s dense {precision} x {utilisation:.0%} utilisation "
        f"({utilisation_source})"
    )
    return RunEstimate(
        name=name or cfg.run_name,
        recipe=recipe or cfg.run_name,
        gpu=gpu.lower(),
        precision=precision,
        peak_tflops=peak / 1e12,
        utilisation=utilisation,
        samples=data.samples,
        epochs=cfg.train.epochs,
        steps=steps,
        global_batch=plan.global_batch,
        micro_batch=plan.micro_batch,
        processes=processes,
        accumulation=plan.accumulation,
        passes=passes,
        texts_per_sample=texts,
        parts=parts,
        caches=caches,
        uncached_pflop=uncached_pflop,
        cached_training_pflop=cached_pflop,
        uncached_gpu_hours=_gpu_hours(uncached_pflop, peak, utilisation),
        cached_training_gpu_hours=_gpu_hours(cached_pflop, peak, utilisation),
        assumptions=assumptions,
        floor_training_pflop=trained_samples * floor_gflop / 1e6,
        floor_caches=floor_caches,
    )


def _cache_builds(
    cfg: RecipeConfig, keys: dict[str, str], data: DataCounts, flops: ModelFlops, peak: float, utilisation: float
) -> list[CacheBuild]:
    """The builds of the caches `keys` names: one forward of the frozen part per sample (image) or text."""
    caches = []
    if "image" in keys:
        f = flops.parts["image"].forward
        caches.append(_build("image", keys["image"], "image-feature cache: one image forward per sample", data.samples, f, peak, utilisation))  # fmt: skip
    if "text" in keys:
        view = text_view(cfg.data.caption_policy)
        if view == "concat":
            count, what = data.samples + data.samples_with_negative, "joined captions + hard negatives"
        else:
            count, what = data.captions + data.captions_with_negative, "caption options + hard negatives"
        part = "llm" if cfg.model.text.tower == "llm2vec" else "text"
        kind = "LLM cache: one LLM forward" if part == "llm" else "text cache: one text-tower forward"
        f = flops.parts[part].forward
        caches.append(_build("text", keys["text"], f"{kind} per text ({what})", count, f, peak, utilisation))
    return caches


def negatives_per_sample(cfg: RecipeConfig, data: DataCounts) -> float:
    """Hard negatives the text tower encodes per trained sample (only real ones are encoded, train/data.py): the
    share of samples with one under a joined caption, else of caption options with one (one option is drawn per
    sample; taken as uniform over the options)."""
    if text_view(cfg.data.caption_policy) == "concat":
        return data.samples_with_negative / max(data.samples, 1)
    return data.captions_with_negative / max(data.captions, 1)


def _build(kind: str, key: str, what: str, forwards: int, flops: float, peak: float, utilisation: float) -> CacheBuild:
    pflop = forwards * flops / 1e15
    return CacheBuild(kind, key, what, forwards, flops / 1e9, pflop, _gpu_hours(pflop, peak, utilisation))


# --- a sweep ------------------------------------------------------------------------------------------------------


@dataclass
class SharedCache:
    build: CacheBuild
    runs: list[str]


@dataclass
class SweepEstimate:
    name: str
    runs: list[RunEstimate]
    caches: list[SharedCache]  # each distinct cache once, with the runs that read it
    notes: list[str] = field(default_factory=list)

    @property
    def uncached_gpu_hours(self) -> float:
        return sum(r.uncached_gpu_hours for r in self.runs)

    @property
    def cached_training_gpu_hours(self) -> float:
        return sum(r.cached_training_gpu_hours for r in self.runs)

    @property
    def cache_gpu_hours(self) -> float:
        return sum(c.build.gpu_hours for c in self.caches)

    @property
    def cached_gpu_hours(self) -> float:
        return self.cached_training_gpu_hours + self.cache_gpu_hours

    @property
    def unshared_cache_gpu_hours(self) -> float:
        """What the cache builds would cost if every run built its own."""
        return sum(r.cache_gpu_hours for r in self.runs)

    @property
    def cached_pflop(self) -> float:
        return sum(r.cached_training_pflop for r in self.runs) + sum(c.build.pflop for c in self.caches)

    @property
    def floor_pflop(self) -> float:
        """The grid's FLOP floor (RunEstimate.floor_pflop): each possible cache's build once for the whole grid."""
        builds = {c.key: c.pflop for r in self.runs for c in r.floor_caches}
        return sum(r.floor_training_pflop for r in self.runs) + sum(builds.values())

    def floor_gpu_hours_at_peak(self) -> float:
        peak = self.runs[0].peak_tflops * 1e12 if self.runs else 1.0
        return _gpu_hours(self.floor_pflop, peak, 1.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": [r.to_json() for r in self.runs],
            "caches": [{**asdict(c.build), "runs": c.runs} for c in self.caches],
            "notes": self.notes,
            "totals": {
                "uncached_gpu_hours": self.uncached_gpu_hours,
                "cached_training_gpu_hours": self.cached_training_gpu_hours,
                "cache_gpu_hours": self.cache_gpu_hours,
                "cached_gpu_hours": self.cached_gpu_hours,
                "unshared_cache_gpu_hours": self.unshared_cache_gpu_hours,
                "cached_pflop": self.cached_pflop,
                "floor_pflop": self.floor_pflop,
                "floor_gpu_hours_at_peak": self.floor_gpu_hours_at_peak(),
                "cached_over_floor": self.cached_pflop / self.floor_pflop if self.floor_pflop else None,
            },
        }


def estimate_sweep(
    name: str,
    runs: Sequence[tuple[str, str, RecipeConfig]],
    *,
    processes: int | None = None,
    gpu: str = DEFAULT_GPU,
    utilisation: float | None = None,
) -> SweepEstimate:
    """Every run's estimate ((run name, recipe label, config) each); a cache several runs share (the same key) is
    counted once in the totals."""
    estimates = [
        estimate_run(cfg, name=run_name, recipe=recipe, processes=processes, gpu=gpu, utilisation=utilisation)
        for run_name, recipe, cfg in runs
    ]
    return combine(name, estimates)


def combine(name: str, estimates: Sequence[RunEstimate]) -> SweepEstimate:
    """Runs estimated apart as one sweep: each cache (by key) once, with the runs that read it."""
    shared: dict[str, SharedCache] = {}
    for est in estimates:
        for build in est.caches:
            shared.setdefault(build.key, SharedCache(build, [])).runs.append(est.name)
    return SweepEstimate(name, list(estimates), list(shared.values()), [])


def estimate_sweeps(
    sources: Sequence[str | Path], overrides: Sequence[str] = (), *, gpu: str = DEFAULT_GPU,
    utilisation: float | None = None,
) -> SweepEstimate:  # fmt: skip
    """Sweep files (or names) estimated together, each run on its sweep's processes: a cache two sweeps share is
    built once (the paper's grid: paper_table5 + paper_unlocked). Run names get their sweep's name in front when
    there are several."""
    from launch.plan import plan_sweep, sweep_dir_of
    from launch.sweep_config import load_sweep, sweep_path

    estimates, names = [], []
    for source in sources:
        spec = load_sweep(source)
        plan = plan_sweep(spec, sweep_path(source), sweep_dir_of(spec, None), list(overrides), evaluate=False)
        prefix = f"{spec.name}/" if len(sources) > 1 else ""
        names.append(spec.name)
        estimates += [
            estimate_run(run.cfg, name=prefix + run.name, recipe=run.recipe, processes=spec.resources.processes,
                         gpu=gpu, utilisation=utilisation)
            for run in plan.runs
        ]  # fmt: skip
    return combine(" + ".join(names), estimates)


def is_sweep_file(source: str | Path) -> bool:
    """A sweep YAML (a mapping with `recipes`), by path or by name in launch/sweeps/."""
    from launch.sweep_config import sweep_path

    path = sweep_path(source)
    if not path.is_file() or is_run_folder(source):
        return False
    try:
        data = load_yaml_file(path, "sweep")
    except ConfigError:
        return False
    return isinstance(data, dict) and "recipes" in data


def _g(value: float) -> str:
    if value == 0:
        return "0"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _h(value: float) -> str:
    return f"{value:,.1f}" if value >= 1 else f"{value:.3g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _gpu_label(est: RunEstimate) -> str:
    return f"{est.gpu.upper()} {est.precision} {est.peak_tflops:g} TFLOP/s x {est.utilisation:.0%}"


def part_table(est: RunEstimate) -> list[str]:
    rows = []
    for p in est.parts:
        label = PART_LABELS[p.part] + (" (attention added analytically)" if p.attention == "added" else "")
        rows.append(
            [
                label,
                "yes" if p.trains else "no",
                str(p.tokens) if p.tokens else "-",
                _g(p.forward_gflop),
                _g(p.train_gflop) if p.trains else "-",
                f"{p.items_per_sample:.3g}",
                _g(p.uncached_gflop),
                "0 (cache)" if p.cached else _g(p.cached_gflop),
            ]
        )
    rows.append(
        [
            "**all**", "", "", "", "", "",
            _g(sum(p.uncached_gflop for p in est.parts)), _g(sum(p.cached_gflop for p in est.parts)),
        ]
    )  # fmt: skip
    header = ["part", "trains", "tokens", "GFLOP fwd / item", "GFLOP fwd+bwd / item", "items / sample"]
    return _table([*header, "GFLOP / sample, uncached", "GFLOP / sample, cached"], rows)


def format_run(est: RunEstimate) -> str:
    lines = [f"### {est.name}", ""]
    lines += part_table(est)
    lines += [
        "",
        f"{est.samples:,} samples, {est.epochs} epochs, {est.steps:,} steps of {est.global_batch} "
        f"({est.micro_batch} x {est.processes} processes x {est.accumulation} accumulation, "
        f"{'two passes' if est.passes > 1 else 'one pass'} per step), {est.texts_per_sample:.3f} texts per sample (captions + real hard negatives)",
        "",
    ]
    rows = [
        ["training, every part run", _g(est.uncached_pflop), _h(est.uncached_gpu_hours)],
        ["training from the caches", _g(est.cached_training_pflop), _h(est.cached_training_gpu_hours)],
    ]
    rows += [[f"{c.what}: {c.forwards:,} x {_g(c.gflop_per_forward)} GFLOP", _g(c.pflop), _h(c.gpu_hours)] for c in est.caches]  # fmt: skip
    rows.append(
        [
            "**cached total** (training + cache builds)",
            _g(est.cached_training_pflop + sum(c.pflop for c in est.caches)),
            _h(est.cached_gpu_hours),
        ]
    )
    lines += _table(["", "PFLOP", f"GPU-hours ({_gpu_label(est)})"], rows)
    lines += ["", "Assumptions:"] + [f"- {a}" for a in est.assumptions]
    return "\n".join(lines)


def _cache_names(caches: Sequence[SharedCache]) -> dict[int, str]:
    """Short names for the table: "image 1", "LLM 1", "text 1" (a locked native text tower's), ..."""
    names, counts = {}, {}
    for cache in caches:
        kind = cache.build.kind
        if kind == "text":
            kind = "LLM" if json.loads(cache.build.key).get("tower") == "llm2vec" else "text"
        counts[kind] = counts.get(kind, 0) + 1
        names[id(cache)] = f"{kind} {counts[kind]}"
    return names


def format_sweep(sweep: SweepEstimate) -> str:
    if not sweep.runs:
        return f"## Cost of sweep {sweep.name}: no runs"
    first = sweep.runs[0]
    lines = [f"## Cost of sweep {sweep.name} ({_gpu_label(first)})", ""]
    cache_names = _cache_names(sweep.caches)
    by_key = {c.build.key: cache_names[id(c)] for c in sweep.caches}
    rows = []
    for est in sweep.runs:
        per_part = {p.part: p for p in est.parts}
        cells = [_g(per_part[part].uncached_gflop) if part in per_part else "-" for part in PARTS]
        rows.append(
            [
                est.name, f"{est.samples:,}", str(est.epochs), f"{est.steps:,}", str(est.accumulation), *cells,
                _g(sum(p.uncached_gflop for p in est.parts)), _g(sum(p.cached_gflop for p in est.parts)),
                _h(est.uncached_gpu_hours), _h(est.cached_training_gpu_hours),
                ", ".join(by_key[c.key] for c in est.caches) or "-",
            ]
        )  # fmt: skip
    header = ["run", "samples", "epochs", "steps", "accum."]
    header += [f"{PART_LABELS[p]} GFLOP/sample" for p in PARTS]
    header += ["GFLOP/sample uncached", "GFLOP/sample cached", "GPU-h uncached", "GPU-h cached (training)", "caches"]
    lines += _table(header, rows)
    lines += ["", "Caches, each built once for the runs that share it:", ""]
    cache_rows = [
        [cache_names[id(c)], c.build.what, ", ".join(c.runs), f"{c.build.forwards:,}", _g(c.build.gflop_per_forward),
         _h(c.build.gpu_hours)]
        for c in sweep.caches
    ]  # fmt: skip
    lines += _table(["cache", "what", "runs", "forwards", "GFLOP / forward", "GPU-h"], cache_rows)
    lines += ["", "Totals:", ""]
    total_rows = [
        ["uncached: every run runs every part", _h(sweep.uncached_gpu_hours)],
        ["cached: training", _h(sweep.cached_training_gpu_hours)],
        ["cached: cache builds, each shared cache once", _h(sweep.cache_gpu_hours)],
        ["**cached total**", _h(sweep.cached_gpu_hours)],
        ["(cache builds if every run built its own)", _h(sweep.unshared_cache_gpu_hours)],
    ]
    lines += _table(["", "GPU-hours"], total_rows)
    notes = list(dict.fromkeys([*sweep.notes, *(a for est in sweep.runs for a in est.assumptions)]))
    lines += ["", "Assumptions and notes:"] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def format_floor(sweep: SweepEstimate) -> str:
    """The FLOP floor of a run or sweep, and how far the estimates are from it."""
    floor = sweep.floor_pflop
    uncached = sum(r.uncached_pflop for r in sweep.runs)
    lines = [
        f"## FLOP floor of {sweep.name}",
        "",
        "What the math needs: every trainable part one forward + backward per trained sample and text (real "
        "negatives only); every frozen part a cache could hold once per input for the whole grid (each cache=on "
        "build once); a frozen part no cache can hold (new crops every epoch) once per trained sample.",
        "",
    ]
    rows = [
        ["FLOP floor", f"{floor * 1e15:.3g}", _h(sweep.floor_gpu_hours_at_peak()), "1.00x"],
        ["cached estimate (training + each shared cache once)", f"{sweep.cached_pflop * 1e15:.3g}",
         _h(_gpu_hours(sweep.cached_pflop, sweep.runs[0].peak_tflops * 1e12, 1.0)),
         f"{sweep.cached_pflop / floor:.2f}x" if floor else "-"],
        ["uncached estimate (every part every step)", f"{uncached * 1e15:.3g}",
         _h(_gpu_hours(uncached, sweep.runs[0].peak_tflops * 1e12, 1.0)), f"{uncached / floor:.2f}x" if floor else "-"],
    ]  # fmt: skip
    lines += _table(["", "FLOP", f"{sweep.runs[0].gpu.upper()}-hours at peak", "x floor"], rows)
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


# --- command line -------------------------------------------------------------------------------------------------


def add_cost_options(parser: argparse.ArgumentParser) -> None:
    """--gpu, --utilisation, --out and --floor, shared with launch.sweep --estimate."""
    parser.add_argument("--gpu", default=DEFAULT_GPU, help=f"one of {', '.join(sorted(GPUS))} (default {DEFAULT_GPU})")
    parser.add_argument(
        "--utilisation",
        type=float,
        default=None,
        help="share of the dense peak reached (default: measured by make gpu-check on this GPU kind, in "
        f"bench/gpu_results.json, else {DEFAULT_UTILISATION})",
    )
    parser.add_argument("--out", type=Path, help="also write the estimate as JSON to this file")
    parser.add_argument(
        "--floor", action="store_true", help="also print the FLOP floor and the estimates as multiples of it"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.cost", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        help="a recipe (file, name or run folder), or one or more sweeps (file or name; estimated together, a cache "
        "they share counted once), then key=value recipe overrides",
    )
    parser.add_argument(
        "--processes",
        type=int,
        help=f"training processes (GPUs) of a recipe; default {DEFAULT_PROCESSES} where the global batch divides, "
        "else 1 (a sweep's runs: its resources)",
    )
    add_cost_options(parser)
    args = parser.parse_intermixed_args(argv)
    sources = [a for a in args.inputs if "=" not in a]
    overrides = [a for a in args.inputs if "=" in a]
    try:
        gpu_peak(args.gpu, "bf16")
        if args.utilisation is not None:
            check_utilisation(args.utilisation)
        if not sources:
            raise ValueError("give a recipe or a sweep before the key=value overrides")
        sweeps = [s for s in sources if is_sweep_file(s)]
        if sweeps and len(sweeps) < len(sources):
            raise ValueError(f"give one recipe, or sweeps only: {', '.join(sorted(set(sources) - set(sweeps)))} "
                             "is not a sweep")  # fmt: skip
        if sweeps:
            sweep = estimate_sweeps(sweeps, overrides, gpu=args.gpu, utilisation=args.utilisation)
            printed, data = format_sweep(sweep), sweep.to_json()
        else:
            if len(sources) > 1:
                raise ValueError(f"one recipe at a time: {' '.join(sources)}")
            cfg = load_recipe(sources[0], overrides)
            est = estimate_run(cfg, processes=args.processes, gpu=args.gpu, utilisation=args.utilisation)
            sweep = combine(est.name, [est])
            printed, data = format_run(est), est.to_json()
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"train.cost: {err}", file=sys.stderr)
        return 2
    print(printed)
    if args.floor:
        print("\n" + format_floor(sweep))
    if args.out:
        write_json(args.out, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
