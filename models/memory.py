"""GPU memory per device for training a ContrastiveModel: an estimate before training starts, and whether it fits.

    est = estimate_for_model(model, cfg.model, micro_batch=128, precision="bf16", num_processes=4, zero_stage=0,
                             accumulation=2)
    print(format_memory_estimate(est))
    problems = check_fits(est, device_total_bytes(accelerator.device))

Weights, gradients and optimizer states are exact counts of the model's parameters: weights at their storage dtype
(the open_clip towers and the connector in fp32, the LLM at `text.llm2vec.dtype`); fp32 gradients and AdamW's two
fp32 moments for each trainable parameter. (DeepSpeed's bf16 mode keeps bf16 weights and gradients plus an fp32
master copy instead: the same 16 bytes per trainable parameter.) Under DeepSpeed ZeRO with N processes, stage 1
divides the optimizer states by N, stage 2 the gradients too, stage 3 all weights too. Plain DDP (stage 0, N > 1)
keeps a second copy of the gradients in its all-reduce buckets.

Activations are a rough formula per transformer tower:

    bytes = layers kept x sequences x tokens x (8 x width + 2 x mlp_width) x bytes per value

`8 x width + 2 x mlp_width` (= 16 x width for a ViT's 4x MLP) is what backward needs of one pre-norm block
(Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models": 34 bytes per token and
width at 16 bits, less the dropout masks CLIP does not have); a gated MLP (Llama's SwiGLU) keeps 4 x mlp_width.
It assumes fused attention (PyTorch's scaled_dot_product_attention on GPU), which keeps no heads x tokens^2 scores.
Layers kept: a trainable tower keeps every block from its first trainable one on; with gradient checkpointing only
those blocks' inputs (1 x width per token) plus one block recomputed in backward; a frozen tower runs without a
graph and holds one block's tensors at a time, for the LLM one chunk of captions at a time. Bytes per value: 2
under bf16/fp16 autocast, 4 in fp32 (never more than the tower's own weights). Sequences: the micro-batch for the
image tower, micro-batch x texts per sample (2 with hard negatives) for the text tower. Token counts are the
towers' full lengths (the LLM's `max_length`, an upper bound). The connector, logit scale and the loss's logits
are left out: each is well under 1% of the total.

Gradient accumulation (train/finetune.py) runs in two passes: every micro-batch's features without gradients, the
loss of the global batch on them, then each micro-batch again with gradients. So activations are those of ONE
micro-batch whatever the accumulation, plus the features of the whole local batch and their gradients, kept from
pass 1 through pass 2:

    feature bytes = 2 x accumulation x micro_batch x (1 + texts per sample) x embed dim x 4

(features and their gradients, counted at fp32; a few MiB even for the paper's batches: 512 x 3 x 1024 x 8 bytes is
12 MiB). With accumulation 1 the step runs in one pass and keeps no such copy.

Parameters are counted on the built model, or without building it on PyTorch's meta device (`model_on_meta`),
which creates every parameter with its shape and dtype but no storage: a 7B LLM in two seconds and no memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from models.alignment_heads import build_head
from models.cache import resolve_cache_dir
from models.config import LLM2VecConfig, ModelConfig
from models.contrastive import ContrastiveModel
from models.factory import apply_freezing, check_config
from models.freezing import vit_layout
from models.llm2vec_text import DTYPES, RANDOM_LLM_ARCHS, LLM2VecTextTower
from models.native_text import ClipTextTower, CustomTextTower, native_text_tower
from models.open_clip_models import PAPER_MODELS, is_open_clip_name
from models.parameters import PARTS
from models.tiny_llm2vec import TINY_LLM2VEC, tiny_llm2vec_folder
from models.tiny_open_clip import TINY_OPEN_CLIP, tiny_open_clip_folder

if TYPE_CHECKING:
    from transformers import PretrainedConfig

GIB = 1024**3
GRADIENT_BYTES = 4  # per trainable parameter: fp32 gradients
OPTIMIZER_BYTES = 8  # per trainable parameter: AdamW's exp_avg and exp_avg_sq, fp32
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}  # per activation value under the recipe's precision
FEATURE_BYTES = 4  # per value of a feature (and of its gradient) kept between the two passes of accumulation
MIB = 1024**2
# Share of the device an estimate may not fill: the CUDA context, allocator fragmentation, the formula's error.
DEFAULT_HEADROOM = 0.1

# The LLMs of the paper recipes, so that their size is known offline without their config.json. The MNTP model
# is Llama-2-7b-chat-hf (dimensions of meta-llama/Llama-2-7b-chat-hf's config.json) with its LoRA merged.
PAPER_LLM_ARCHITECTURES: dict[str, dict[str, Any]] = {
    "McGill-NLP/LLM2Vec-Llama-2-7b-chat-hf-mntp": {
        k: v for k, v in RANDOM_LLM_ARCHS["llama-2-7b-chat"].config.items() if not k.endswith("_token_id")
    },
}


@dataclass(frozen=True)
class TransformerShape:
    """What the activation formula needs of one tower's stack of transformer blocks."""

    layers: int
    width: int
    mlp_width: int
    tokens: int  # sequence length per sample
    gated_mlp: bool = False  # SwiGLU (Llama, Mistral): gate and up projections, the activation, their product
    kept_layers: int = 0  # blocks whose activations backward needs: from the first trainable block on (0 = frozen)

    @property
    def values_per_token(self) -> int:
        """Activation values one block keeps per token for backward (module docstring)."""
        return 8 * self.width + (4 if self.gated_mlp else 2) * self.mlp_width


@dataclass(frozen=True)
class PartSpec:
    """One part of the model (models.parameters.PARTS) as the estimate sees it."""

    part: str
    trainable_params: int
    frozen_params: int
    trainable_weight_bytes: int
    frozen_weight_bytes: int
    shape: TransformerShape | None = None  # None: no activations counted (connector, logit scale, unknown tower)
    sequences_per_sample: int = 1  # sequences this part runs per sample of the micro-batch
    chunk: int = 0  # most sequences per forward pass (the LLM's chunk_size); 0 = all at once
    value_bytes: int = 4  # bytes per value of the part's weights: its activations are never wider


@dataclass(frozen=True)
class PartMemory:
    part: str
    trainable_params: int
    frozen_params: int
    weight_bytes: int  # trainable + frozen, at their storage dtype, after ZeRO-3 sharding
    frozen_weight_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int
    activations_kept: str  # what the activation figure counts, in words

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    parts: tuple[PartMemory, ...]
    micro_batch: int
    precision: str
    num_processes: int
    zero_stage: int
    grad_checkpointing: bool
    notes: tuple[str, ...] = ()  # what the estimate could not count
    accumulation: int = 1  # micro-batches per optimizer step and process (two passes when > 1)
    feature_bytes: int = 0  # two-pass accumulation: the local batch's features and their gradients (0 in one pass)

    @property
    def weight_bytes(self) -> int:
        return sum(p.weight_bytes for p in self.parts)

    @property
    def gradient_bytes(self) -> int:
        return sum(p.gradient_bytes for p in self.parts)

    @property
    def optimizer_bytes(self) -> int:
        return sum(p.optimizer_bytes for p in self.parts)

    @property
    def activation_bytes(self) -> int:
        return sum(p.activation_bytes for p in self.parts)

    @property
    def total_bytes(self) -> int:
        return (
            self.weight_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes + self.feature_bytes
        )


def feature_cache_bytes(accumulation: int, micro_batch: int, texts_per_sample: int, embed_dim: int) -> int:
    """Bytes two-pass accumulation keeps from pass 1 to pass 2: every local sample's image feature and text features
    (captions and hard negatives) and the loss's gradients of them, at fp32; 0 for one pass (accumulation 1)."""
    if accumulation <= 1:
        return 0
    return 2 * accumulation * micro_batch * (1 + texts_per_sample) * embed_dim * FEATURE_BYTES


def estimate_training_memory(
    parts: Sequence[PartSpec],
    *,
    micro_batch: int,
    precision: str,
    num_processes: int = 1,
    zero_stage: int = 0,
    grad_checkpointing: bool = False,
    notes: Sequence[str] = (),
    accumulation: int = 1,
    texts_per_sample: int = 1,
    embed_dim: int = 0,
) -> MemoryEstimate:
    """Per-device bytes of each part: weights, gradients, AdamW states and activations of one micro-batch, plus
    (accumulation > 1) the two-pass step's features of the local batch (`embed_dim` wide; 0 = not counted)."""
    if micro_batch <= 0 or num_processes <= 0 or accumulation <= 0:
        raise ValueError(
            f"micro_batch={micro_batch}, num_processes={num_processes} and accumulation={accumulation} must be > 0"
        )
    if precision not in ACTIVATION_BYTES:
        raise ValueError(f"precision={precision!r}: one of {sorted(ACTIVATION_BYTES)}")
    if zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"zero_stage={zero_stage}: DeepSpeed ZeRO has stages 0 to 3")
    n = num_processes
    out = []
    for spec in parts:
        weights = spec.trainable_weight_bytes + spec.frozen_weight_bytes
        frozen_weights = spec.frozen_weight_bytes
        gradients = spec.trainable_params * GRADIENT_BYTES
        optimizer = spec.trainable_params * OPTIMIZER_BYTES
        if zero_stage >= 1:
            optimizer = _ceil_div(optimizer, n)
        if zero_stage >= 2:
            gradients = _ceil_div(gradients, n)
        if zero_stage == 3:
            weights, frozen_weights = _ceil_div(weights, n), _ceil_div(frozen_weights, n)
        if zero_stage == 0 and n > 1:
            gradients *= 2  # DDP's all-reduce buckets hold a copy (gradient_as_bucket_view is off by default)
        activations, kept = _activations(spec, micro_batch, precision, grad_checkpointing)
        out.append(
            PartMemory(
                part=spec.part,
                trainable_params=spec.trainable_params,
                frozen_params=spec.frozen_params,
                weight_bytes=weights,
                frozen_weight_bytes=frozen_weights,
                gradient_bytes=gradients,
                optimizer_bytes=optimizer,
                activation_bytes=activations,
                activations_kept=kept,
            )
        )
    return MemoryEstimate(
        tuple(out),
        micro_batch,
        precision,
        num_processes,
        zero_stage,
        grad_checkpointing,
        tuple(notes),
        accumulation=accumulation,
        feature_bytes=feature_cache_bytes(accumulation, micro_batch, texts_per_sample, embed_dim),
    )


def _activations(spec: PartSpec, micro_batch: int, precision: str, grad_checkpointing: bool) -> tuple[int, str]:
    shape = spec.shape
    if shape is None:
        return 0, "-"
    sequences = micro_batch * spec.sequences_per_sample
    per_pass = min(sequences, spec.chunk) if spec.chunk else sequences
    value_bytes = min(ACTIVATION_BYTES[precision], spec.value_bytes)
    block = per_pass * shape.tokens * shape.values_per_token * value_bytes
    if shape.kept_layers == 0:
        chunked = f", {per_pass} of {sequences} seqs per pass" if per_pass < sequences else ""
        return block, f"1 block (frozen){chunked}"
    if grad_checkpointing:
        inputs = shape.kept_layers * sequences * shape.tokens * shape.width * value_bytes
        return inputs + block, f"{shape.kept_layers} block inputs + 1 block (checkpointing)"
    return shape.kept_layers * block, f"{shape.kept_layers} of {shape.layers} blocks"


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# --- from a model -------------------------------------------------------------------------------------------------


def estimate_for_model(
    model: nn.Module,
    model_cfg: ModelConfig,
    micro_batch: int,
    precision: str,
    num_processes: int = 1,
    zero_stage: int = 0,
    *,
    texts_per_sample: int = 1,
    accumulation: int = 1,
    released: frozenset[str] = frozenset(),
) -> MemoryEstimate:
    """The estimate for a built (or meta-device) ContrastiveModel, possibly wrapped by DDP.

    `released`: the frozen parts ("image", "text", "llm") whose outputs come from a feature cache; training frees
    them (ContrastiveModel.release_frozen_parts), so they hold neither weights nor activations.

    `precision` is the recipe's (fp32, bf16, fp16); `texts_per_sample` is 2 when hard negatives share the text
    batch; `accumulation` is the micro-batches per optimizer step and process (global batch // (micro-batch x
    processes)): activations stay those of one micro-batch, the two-pass step adds the local batch's features.
    Gradient checkpointing, the LLM's chunk size and caption length come from `model_cfg`.
    """
    while isinstance(getattr(model, "module", None), nn.Module):  # DDP / DeepSpeed wrappers
        model = model.module
    if not isinstance(model, ContrastiveModel):
        raise TypeError(f"estimate_for_model needs a ContrastiveModel, got {type(model).__name__}")
    notes = []
    specs = []
    for part, counts in _parameter_counts(model).items():
        if part in released:
            notes.append(f"{part}: outputs from the feature cache, the part is freed (no weights, no activations)")
            continue
        shape, per_sample, chunk = None, 1, 0
        if part == "image":
            shape = _image_shape(model.image_tower)
        elif part == "text":
            shape, per_sample = _native_text_shape(model.text_tower), texts_per_sample
        elif part == "llm":
            shape, per_sample = _llm_shape(model.text_tower, model_cfg.text.llm2vec), texts_per_sample
            chunk = model_cfg.text.llm2vec.chunk_size
        if shape is None and part in ("image", "text"):
            tower = model.image_tower if part == "image" else model.text_tower
            notes.append(
                f"{part} tower ({type(tower).__name__}) is not a transformer this knows: activations not counted"
            )
        specs.append(PartSpec(part=part, shape=shape, sequences_per_sample=per_sample, chunk=chunk, **counts))
    embed_dim = _embed_dim(model)
    if embed_dim == 0 and accumulation > 1:
        notes.append("embedding width unknown: the two-pass step's features are not counted")
    return estimate_training_memory(
        specs,
        micro_batch=micro_batch,
        precision=precision,
        num_processes=num_processes,
        zero_stage=zero_stage,
        grad_checkpointing=model_cfg.grad_checkpointing,
        notes=notes,
        accumulation=accumulation,
        texts_per_sample=texts_per_sample,
        embed_dim=embed_dim,
    )


def _embed_dim(model: ContrastiveModel) -> int:
    """Width of the shared embedding: the text tower's projection (native) or connector output (LLM2Vec), else the
    image tower's `output_dim` (open_clip's ViT); 0 when neither is found."""
    tower = model.text_tower
    if isinstance(tower, LLM2VecTextTower):
        linears = [m for m in tower.connector.modules() if isinstance(m, nn.Linear)]
        if linears:
            return linears[-1].out_features
    projection = getattr(getattr(tower, "text", tower), "text_projection", None)
    if isinstance(projection, nn.Linear):
        return projection.out_features
    if isinstance(projection, torch.Tensor) and projection.ndim == 2:
        return int(projection.shape[-1])
    return int(getattr(model.image_tower, "output_dim", 0) or 0)


def _parameter_counts(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per part (models.parameters.PARTS order): trainable/frozen parameters and bytes, widest value size."""
    counts: dict[str, dict[str, int]] = {}
    for name, param in model.named_parameters():
        part = next((part for part, prefix in PARTS if name.startswith(prefix)), "other")
        row = counts.setdefault(
            part,
            {"trainable_params": 0, "frozen_params": 0, "trainable_weight_bytes": 0, "frozen_weight_bytes": 0},
        )
        kind = "trainable" if param.requires_grad else "frozen"
        row[f"{kind}_params"] += param.numel()
        row[f"{kind}_weight_bytes"] += param.numel() * param.element_size()
        row["value_bytes"] = max(row.get("value_bytes", 0), param.element_size())
    order = [part for part, _ in PARTS] + ["other"]
    return dict(sorted(counts.items(), key=lambda item: order.index(item[0])))


def _image_shape(tower: nn.Module) -> TransformerShape | None:
    layout = vit_layout(tower)
    if layout is None:
        return None
    trunk = getattr(tower, "trunk", None)
    if trunk is not None:  # timm ViT (SigLIP): patches plus class/register tokens
        tokens = trunk.patch_embed.num_patches + trunk.num_prefix_tokens
    else:  # open_clip's own ViT: one position per token, class token included
        tokens = tower.positional_embedding.shape[0]
    return _blocks_shape(tower.get_submodule(layout.blocks), tokens)


def _native_text_shape(tower: nn.Module) -> TransformerShape | None:
    if isinstance(tower, ClipTextTower):
        return _blocks_shape(tower.transformer.resblocks, tower.positional_embedding.shape[0])
    text = getattr(tower, "text", None)
    if isinstance(tower, CustomTextTower) and hasattr(text, "transformer"):  # open_clip TextTransformer
        return _blocks_shape(text.transformer.resblocks, text.positional_embedding.shape[0])
    return None  # an HF text encoder: no layout known here


def _llm_shape(tower: nn.Module, llm: LLM2VecConfig) -> TransformerShape | None:
    if not isinstance(tower, LLM2VecTextTower):
        return None
    config = tower.llm2vec.model.config
    return TransformerShape(
        layers=config.num_hidden_layers,
        width=config.hidden_size,
        mlp_width=config.intermediate_size,
        tokens=llm.max_length,
        gated_mlp=True,  # every LLM llm2vec supports (Llama, Mistral, Gemma, Qwen2) has a gated MLP
    )


def _blocks_shape(blocks: nn.Module, tokens: int) -> TransformerShape:
    first = blocks[0]
    width = next(m.normalized_shape[0] for m in first.modules() if isinstance(m, nn.LayerNorm))
    mlp_width = max(m.out_features for m in first.mlp.modules() if isinstance(m, nn.Linear))
    trainable = [i for i, block in enumerate(blocks) if any(p.requires_grad for p in block.parameters())]
    kept = len(blocks) - trainable[0] if trainable else 0
    return TransformerShape(layers=len(blocks), width=width, mlp_width=mlp_width, tokens=tokens, kept_layers=kept)


# --- without weights: the model on the meta device ----------------------------------------------------------------


def estimate_for_config(
    model_cfg: ModelConfig,
    micro_batch: int,
    precision: str,
    num_processes: int = 1,
    zero_stage: int = 0,
    *,
    texts_per_sample: int = 1,
    accumulation: int = 1,
    released: frozenset[str] = frozenset(),
    llm_config: PretrainedConfig | None = None,
    cache_dir: Path | None = None,
) -> MemoryEstimate:
    """The estimate before anything is loaded: the model of `model_cfg` built on the meta device."""
    model = model_on_meta(model_cfg, llm_config=llm_config, cache_dir=cache_dir)
    return estimate_for_model(
        model,
        model_cfg,
        micro_batch,
        precision,
        num_processes,
        zero_stage,
        texts_per_sample=texts_per_sample,
        accumulation=accumulation,
        released=released,
    )


def model_on_meta(
    model_cfg: ModelConfig, *, llm_config: PretrainedConfig | None = None, cache_dir: Path | None = None
) -> ContrastiveModel:
    """The ContrastiveModel of `model_cfg` with the recipe's freezing, every tensor on the meta device (no storage).

    The LLM's architecture is `llm_config`, else PAPER_LLM_ARCHITECTURES, else its config.json (a local folder or
    the Hugging Face cache). A PEFT adapter's own LoRA weights (peft_adapter, a few million) are not counted.
    """
    import open_clip  # here, not at module level: it imports timm, which imports wandb

    check_config(model_cfg)
    cache = resolve_cache_dir(cache_dir)
    name = _open_clip_name(model_cfg, cache)
    embed_dim = open_clip.get_model_config(name)["embed_dim"]
    llm = model_cfg.text.llm2vec
    if model_cfg.text.tower == "llm2vec" and llm_config is None:
        # Outside the meta context: reading the architecture may first have to build a tiny stand-in folder on disk.
        llm_config = llm_architecture(llm.base_model, cache)
    with torch.device("meta"):  # construction itself allocates nothing
        clip = open_clip.create_model(name, pretrained=None, load_weights=False, device="meta")
        if model_cfg.text.tower == "native":
            text_tower = native_text_tower(clip)
        else:
            encoder = _llm2vec_on_meta(llm, llm_config)
            text_tower = LLM2VecTextTower(encoder, embed_dim, model_cfg.text.connector.hidden_dim, llm.chunk_size)
        head = build_head(
            model_cfg.head.kind,
            clip.visual,
            embed_dim,
            model_cfg.head.temperature,
            model_cfg.head.layer,
            model_cfg.head.heads,
        )
        model = ContrastiveModel(clip.visual, text_tower, clip.logit_scale, clip.logit_bias, head=head)
    apply_freezing(model, model_cfg)
    return model


def llm_architecture(base_model: str, cache_dir: Path | None = None) -> PretrainedConfig:
    """The HF config of an LLM2Vec base model, without its weights."""
    from transformers import CONFIG_MAPPING, AutoConfig

    from models.llm2vec_text import random_llm_config

    if (config := random_llm_config(base_model)) is not None:  # random:llama-2-7b-chat[:layers]
        return config
    if base_model in PAPER_LLM_ARCHITECTURES:
        dims = dict(PAPER_LLM_ARCHITECTURES[base_model])
        return CONFIG_MAPPING[dims.pop("model_type")](**dims)
    source = str(tiny_llm2vec_folder(resolve_cache_dir(cache_dir))) if base_model == TINY_LLM2VEC else base_model
    try:
        return AutoConfig.from_pretrained(source)
    except OSError as err:
        raise FileNotFoundError(
            f"text.llm2vec.base_model={base_model}: its config.json is neither local nor in the Hugging Face cache, "
            "so its size is unknown; pass llm_config= (a transformers config) or estimate after building the model"
        ) from err


def _llm2vec_on_meta(llm: LLM2VecConfig, config: PretrainedConfig) -> Any:
    from llm2vec import LLM2Vec

    # llm2vec's own choice of bidirectional class (LlamaBiModel, MistralBiModel, ...), as from_pretrained makes it.
    model_class = LLM2Vec._get_model_class(type(config).__name__, enable_bidirectional=True)
    model = model_class._from_config(config, torch_dtype=DTYPES[llm.dtype])
    return LLM2Vec(model, tokenizer=None, pooling_mode=llm.pooling, max_length=llm.max_length)


def _open_clip_name(cfg: ModelConfig, cache: Path) -> str:
    if cfg.name in PAPER_MODELS:
        return PAPER_MODELS[cfg.name].open_clip_name
    if cfg.name in TINY_OPEN_CLIP:
        from models.tiny_timm import register_tiny_siglip_vit

        register_tiny_siglip_vit()
        return f"local-dir:{tiny_open_clip_folder(TINY_OPEN_CLIP[cfg.name], cache)}"
    if not is_open_clip_name(cfg.name):
        raise ValueError(f"unknown model.name={cfg.name!r}: a preset or an open_clip model name")
    return cfg.name


# --- report and check ---------------------------------------------------------------------------------------------


def format_memory_estimate(est: MemoryEstimate) -> str:
    """A fixed-width table (GiB per device) with a total line and what the estimate assumed."""
    head = (
        f"GPU memory per device (estimate): micro-batch {est.micro_batch}, {est.precision}, "
        f"{est.num_processes} process{'es' if est.num_processes > 1 else ''}, ZeRO stage {est.zero_stage}, "
        f"gradient checkpointing {'on' if est.grad_checkpointing else 'off'}"
        + (f", accumulation {est.accumulation}" if est.accumulation > 1 else "")
    )
    cols = f"{'part':<10} {'trainable':>13} {'frozen':>13} {'weights':>8} {'grads':>8} {'AdamW':>8} {'activ.':>8}"
    cols += f" {'total':>8}  activations kept"
    lines = [head, cols]
    for p in est.parts:
        lines.append(
            f"{p.part:<10} {p.trainable_params:>13,} {p.frozen_params:>13,} {_gib(p.weight_bytes)} "
            f"{_gib(p.gradient_bytes)} {_gib(p.optimizer_bytes)} {_gib(p.activation_bytes)} {_gib(p.total_bytes)}"
            f"  {p.activations_kept}"
        )
    trainable = sum(p.trainable_params for p in est.parts)
    frozen = sum(p.frozen_params for p in est.parts)
    lines.append("-" * len(cols))
    lines.append(
        f"{'all':<10} {trainable:>13,} {frozen:>13,} {_gib(est.weight_bytes)} {_gib(est.gradient_bytes)} "
        f"{_gib(est.optimizer_bytes)} {_gib(est.activation_bytes)} {_gib(est.total_bytes)}  (GiB)"
    )
    if est.accumulation > 1:
        lines.append(f"note: {accumulation_note(est)} (in the total)")
    lines += [f"note: {note}" for note in est.notes]
    return "\n".join(lines)


def format_memory_line(est: MemoryEstimate) -> str:
    """The estimate's totals in one line, for a CPU run (no device to fit, no table)."""
    return (
        f"memory estimate per process (as on a GPU): weights {est.weight_bytes / GIB:.2f}, grads "
        f"{est.gradient_bytes / GIB:.2f}, AdamW {est.optimizer_bytes / GIB:.2f}, activations "
        f"{est.activation_bytes / GIB:.2f}, total {est.total_bytes / GIB:.2f} GiB"
    )


def accumulation_note(est: MemoryEstimate) -> str:
    """What two-pass accumulation adds, in words (for accumulation > 1)."""
    return (
        f"two-pass accumulation: activations of one micro-batch of {est.micro_batch}; "
        f"+{est.feature_bytes / MIB:.1f} MiB of features ({est.accumulation} x {est.micro_batch} samples' features "
        "and their gradients)"
    )


def _gib(n: int) -> str:
    return f"{n / GIB:>8.2f}"


def check_fits(est: MemoryEstimate, device_bytes: int, *, headroom: float = DEFAULT_HEADROOM) -> list[str]:
    """Problems (empty when the estimate fits `device_bytes` less `headroom`): what dominates and what to change."""
    usable = int(device_bytes * (1 - headroom))
    if est.total_bytes <= usable:
        return []
    items = sorted(_items(est), key=lambda item: -item[1])
    largest = [item for item in items if item[1] > 0][:3]
    described = ", ".join(f"{label} {size / GIB:.1f} GiB" for label, size, _ in largest)
    remedies = list(dict.fromkeys(remedy for _, _, remedies in largest[:2] for remedy in remedies))
    return [
        f"estimated GPU memory {est.total_bytes / GIB:.1f} GiB per device exceeds the {usable / GIB:.1f} GiB usable "
        f"of {device_bytes / GIB:.1f} GiB ({headroom:.0%} kept free); largest: {described}. To fit: "
        + "; ".join(remedies)
    ]


def _items(est: MemoryEstimate) -> list[tuple[str, int, list[str]]]:
    """(what, bytes, how to shrink it) for every memory item of the estimate."""
    n, stage = est.num_processes, est.zero_stage
    micro = (
        f"lower the micro-batch (per-device batch, now {est.micro_batch} x accumulation {est.accumulation}; more "
        "gradient accumulation keeps the global batch, and its two passes keep the activations of one micro-batch "
        "only)"
    )
    checkpointing = [] if est.grad_checkpointing else ["turn on gradient checkpointing (model.grad_checkpointing)"]
    shard_state = (
        f"DeepSpeed ZeRO stage 2 to split gradients and AdamW states over the {n} processes"
        if n > 1 and stage < 2
        else "more GPUs under DeepSpeed ZeRO stage 2 (gradients and AdamW states split across them)"
    )
    shard_weights = "DeepSpeed ZeRO stage 3 over more GPUs (splits the weights)" if stage < 3 else "a larger device"
    out = []
    for p in est.parts:
        frozen_weights = p.frozen_weight_bytes
        trainable_weights = p.weight_bytes - frozen_weights
        if p.part == "llm":
            full_width = frozen_weights > 2 * p.frozen_params * (1 if stage < 3 else 1 / n)  # fp32 weights
            frozen_remedies = ["load the LLM in bf16 (model.text.llm2vec.dtype=bf16)"] if full_width else []
            frozen_remedies.append(shard_weights)
            activation_remedies = ["lower model.text.llm2vec.chunk_size (captions per LLM pass)", micro]
        else:
            frozen_remedies = [shard_weights]
            activation_remedies = [micro, *([] if "frozen" in p.activations_kept else checkpointing)]
        state = p.gradient_bytes + p.optimizer_bytes + trainable_weights
        lock = _lock_remedy(p.part)
        out += [
            (f"{p.part} frozen weights", frozen_weights, frozen_remedies),
            (f"{p.part} trainable weights, gradients and AdamW states", state, [shard_state, *lock]),
            (f"{p.part} activations", p.activation_bytes, activation_remedies),
        ]
    features = f"two-pass features of {est.accumulation} micro-batches"
    out.append((features, est.feature_bytes, ["lower the accumulation (train.global_batch_size)"]))
    return out


def _lock_remedy(part: str) -> list[str]:
    if part == "image":
        return ["lock the image tower (model.image.locked=true, model.image.unlocked_last_blocks=K to train K blocks)"]
    if part == "text":
        return ["lock the text tower (model.text.locked=true)"]
    return []


def device_total_bytes(device: torch.device | str) -> int | None:
    """Total memory of a CUDA device; None elsewhere (a CPU run has no device limit to check)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory
