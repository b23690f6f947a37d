"""tiny-llava: a tiny LLaVA-1.5 with random weights, saved in the llava-hf folder format (config.json, weights,
processor files), so `eval.llava` loads it through transformers' Llava classes exactly as `llava-hf/llava-1.5-7b-hf`.

Tiny CLIP vision tower (transformers' CLIPVisionConfig) + LLaVA's 2-layer projector (Linear, GELU, Linear) + a tiny
Llama, with this project's locally trained byte-level BPE tokenizer plus the `<image>` and `<pad>` tokens. Nothing
is downloaded. `eval.llava --model tiny-llava` resolves to `<cache>/tiny-llava/`, built on first use;
`build_tiny_llava(folder)` writes such a folder anywhere.
"""

from __future__ import annotations

from pathlib import Path

from models.cache import build_once

TINY_LLAVA = "tiny-llava"
BUILD_VERSION = 1  # bump when a change here must invalidate cached folders
IMAGE_SIZE = 32
PATCH_SIZE = 8


def tiny_llava_folder(cache_dir: Path, *, seed: int = 0) -> Path:
    """`<cache>/tiny-llava/`, built on first use."""
    stamp = {"version": BUILD_VERSION, "seed": seed, "image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE}
    return build_once(cache_dir / TINY_LLAVA, lambda folder: build_tiny_llava(folder, seed=seed), stamp)


def build_tiny_llava(folder: Path | str, *, seed: int = 0) -> Path:
    import torch
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    from models.local_tokenizers import train_byte_level_tokenizer

    folder = Path(folder)
    tokenizer = train_byte_level_tokenizer(vocab_size=600)
    tokenizer.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<image>"]})
    tokenizer.padding_side = "left"
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=image_token,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    # Random init with std 0.02 gives near-uniform next-token distributions; a larger scale makes greedy outputs
    # (and perplexities) depend clearly on the input, so tests see distinct answers per image.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 2 and "embed" not in name:
                parameter.mul_(8.0)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_center_crop=True,
    )
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    processor.save_pretrained(folder)
    return folder
