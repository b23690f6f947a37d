"""Original-layout LLaVA checkpoints -> llava-hf folders that eval.llava runs, once.

    python -m models.convert_llava SRC DST [--vision-tower DIR_OR_HUB_NAME]

SRC is a checkpoint in the layout of the LLaVA code base (haotian-liu/LLaVA): `liuhaotian/llava-v1.5-7b` and the
LLaVA++ checkpoints of the paper's Tables 12/13 (`MBZUAI/LLaVA-Phi-3-mini-4k-instruct`,
`MBZUAI/LLaVA-Meta-Llama-3-8B-Instruct`): a language model's config with `mm_*` keys, its weights with
`model.mm_projector.{0,2}`, and its tokenizer; the vision tower is not in it but named by `mm_vision_tower` (an
openai CLIP vision model, read from a local folder or the Hugging Face cache, offline).

What is carried over, each from the checkpoint:
- `mm_vision_select_layer` -> vision_feature_layer; `mm_vision_select_feature` patch -> "default" (CLS dropped),
  cls_patch -> "full", and cls (the authors' token ablation: the CLS token alone) -> "full" with
  `clipablate.select_feature: cls`, which eval.llava applies;
- the chat template: the tokenizer's own (Phi-3, Llama-3 instruct); a checkpoint without one (LLaVA-1.5, whose code
  picks Vicuna's conversation by name) gets LLaVA-1.5's `conv_vicuna_v1`, system message included, and the
  converted config says which;
- `<image>` (and `<pad>` where the tokenizer has none) are added as special tokens; their embedding and output rows
  are the mean of the others, and eval.llava never lets the model produce them (`clipablate.suppressed_tokens`), so
  greedy answers and option log-probabilities are those of the original vocabulary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

# The LLaVA code base's model class -> the transformers model type of its language model.
TEXT_MODEL_TYPES = {
    "LlavaLlamaForCausalLM": "llama",
    "LlavaMistralForCausalLM": "mistral",
    "LlavaPhiForCausalLM": "phi3",
    "LlavaPhi3ForCausalLM": "phi3",
}
SELECT_FEATURES = {"patch": "default", "cls_patch": "full", "cls": "full"}
VICUNA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)
# LLaVA-1.5's conv_vicuna_v1 as a chat template: "{system} USER: {message} ASSISTANT:" (its own system message
# unless one is given).
VICUNA_V1_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}"
    '{% else %}{{ "' + VICUNA_V1_SYSTEM + ' " }}{% endif %}'
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ 'USER: ' + m['content'] + ' ' }}"
    "{% elif m['role'] == 'assistant' %}{{ 'ASSISTANT: ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")


class ConversionError(ValueError):
    """The source is not an original-layout LLaVA checkpoint, or its vision tower cannot be found."""


def is_original_layout(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except ValueError:
        return False
    return isinstance(data, dict) and ("mm_vision_tower" in data or "mm_projector_type" in data)


def read_state_dict(folder: Path) -> dict[str, Any]:
    """Every tensor of the folder's weight files (safetensors or torch .bin shards)."""
    import torch
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    files = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise ConversionError(f"{folder}: no weights (*.safetensors or *.bin)")
    for path in files:
        state.update(load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=True))
    return state


def resolve_vision_tower(name: str) -> Path:
    """A local folder, else the Hugging Face cache (offline)."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not in the local cache
        raise ConversionError(
            f"vision tower {name!r} is neither a local folder nor in the local Hugging Face cache: run "
            f"`huggingface-cli download {name}` where the hub is reachable, or pass --vision-tower with its folder"
        ) from None


def text_config(source: dict[str, Any]):
    """The language model's transformers config from an original-layout config (its `mm_*` keys dropped)."""
    from transformers import AutoConfig

    architecture = (source.get("architectures") or [""])[0]
    model_type = TEXT_MODEL_TYPES.get(architecture)
    if model_type is None:
        raise ConversionError(
            f"architecture {architecture!r} is not one of the LLaVA code base's ({', '.join(TEXT_MODEL_TYPES)})"
        )
    skip = {"architectures", "model_type", "_name_or_path", "transformers_version", "auto_map"}
    fields = {k: v for k, v in source.items() if not k.startswith("mm_") and k not in skip}
    fields = {k: v for k, v in fields.items() if not k.startswith(("image_", "tune_", "freeze_", "use_mm"))}
    return AutoConfig.for_model(model_type, **fields)


def convert_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Original keys -> LlavaForConditionalGeneration's (language model, projector, vision tower if saved)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".inv_freq"):
            continue
        if key.startswith("model.mm_projector.0."):
            new = "multi_modal_projector.linear_1." + key.removeprefix("model.mm_projector.0.")
        elif key.startswith("model.mm_projector.2."):
            new = "multi_modal_projector.linear_2." + key.removeprefix("model.mm_projector.2.")
        elif key.startswith("model.vision_tower.vision_tower."):
            new = "vision_tower." + key.removeprefix("model.vision_tower.vision_tower.")
        elif key.startswith("model."):
            new = "language_model.model." + key.removeprefix("model.")
        elif key.startswith("lm_head."):
            new = "language_model." + key
        else:
            raise ConversionError(f"unexpected weight {key!r} in an original-layout LLaVA checkpoint")
        out[new] = value
    return out


def convert(src: Path | str, dst: Path | str, *, vision_tower: str = "") -> Path:
    """Writes the llava-hf folder `dst` from the original-layout checkpoint `src`; returns `dst`."""
    import torch
    from transformers import (
        AddedToken,
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    src, dst = Path(src), Path(dst)
    source = json.loads((src / "config.json").read_text())
    if "mm_vision_tower" not in source and not vision_tower:
        raise ConversionError(f"{src}: config.json has no mm_vision_tower: not an original-layout LLaVA checkpoint")
    feature = source.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURES:
        raise ConversionError(
            f"{src}: mm_vision_select_feature {feature!r}: expected one of {', '.join(SELECT_FEATURES)}"
        )
    if source.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ConversionError(f"{src}: mm_projector_type {source['mm_projector_type']!r}: only mlp2x_gelu is supported")
    vision_folder = resolve_vision_tower(vision_tower or source["mm_vision_tower"])

    tokenizer = AutoTokenizer.from_pretrained(src)
    original_vocab = len(tokenizer)
    template = "checkpoint" if tokenizer.chat_template else "llava-1.5 conv_vicuna_v1 (the checkpoint has none)"
    if not tokenizer.chat_template:
        tokenizer.chat_template = VICUNA_V1_TEMPLATE
    tokenizer.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    added = list(range(original_vocab, len(tokenizer)))

    text = text_config(source)
    vision = CLIPVisionConfig.from_pretrained(vision_folder)
    config = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="gelu",
        vision_feature_select_strategy=SELECT_FEATURES[feature],
        vision_feature_layer=int(source.get("mm_vision_select_layer", -2)),
        pad_token_id=tokenizer.pad_token_id,
    )
    # eager attention: transformers 4.44 builds Phi-3 without SDPA (the saved config does not pin it)
    config._attn_implementation = "eager"
    model = LlavaForConditionalGeneration(config)
    weights = convert_state_dict(read_state_dict(src))
    if "language_model.lm_head.weight" not in weights and getattr(text, "tie_word_embeddings", False):
        weights["language_model.lm_head.weight"] = weights["language_model.model.embed_tokens.weight"]
    vision_weights = read_state_dict(vision_folder)
    for key, value in vision_weights.items():
        if key.startswith("vision_model."):
            weights.setdefault(f"vision_tower.{key}", value)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    missing = [k for k in missing if not k.endswith(".inv_freq")]
    if missing or unexpected:
        raise ConversionError(f"{src}: weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():  # the added tokens' rows: the mean of the original ones (they are never produced)
        for matrix in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
            matrix[original_vocab:] = matrix[:original_vocab].mean(dim=0)
    model.config.clipablate = {
        "converted_from": str(src.resolve()),
        "vision_tower": str(vision_folder.resolve()),
        "select_feature": feature,
        "chat_template": template,
        "suppressed_tokens": added,
        "image_aspect_ratio": source.get("image_aspect_ratio", "pad"),
    }
    image_processor = CLIPImageProcessor.from_pretrained(vision_folder)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, safe_serialization=True)
    LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(dst)
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.convert_llava", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="original-layout LLaVA checkpoint folder")
    parser.add_argument("dst", type=Path, help="llava-hf folder to write")
    parser.add_argument("--vision-tower", default="", help="default: the checkpoint's mm_vision_tower")
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.dst, vision_tower=args.vision_tower)
    except (ConversionError, FileNotFoundError, OSError) as err:
        print(f"convert_llava: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (python -m eval.llava --model {out} ...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
