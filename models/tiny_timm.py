"""A tiny SigLIP-style timm ViT, registered with timm so open_clip's TimmModel builds it by name.

open_clip passes no architecture arguments to timm (only the model name, pooling and head), exactly as for
`vit_large_patch16_siglip_384` in ViT-L-16-SigLIP-384: so the tiny SigLIP needs a timm name of its own.
Same recipe as timm's SigLIP ViTs (no class token, attention-pool "map" head), only smaller.
"""

from __future__ import annotations

from typing import Any

TINY_SIGLIP_VIT = "clipablate_vit_tiny_patch8_siglip_64"
_ARCH = {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4}
_PRETRAINED_CFG = {"input_size": (3, 64, 64), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "num_classes": 0}

__all__ = ["TINY_SIGLIP_VIT", "clipablate_vit_tiny_patch8_siglip_64", "register_tiny_siglip_vit"]


def clipablate_vit_tiny_patch8_siglip_64(pretrained: bool = False, **kwargs: Any):
    """timm entry point (timm registers models under their function's name)."""
    from timm.models import build_model_with_cfg
    from timm.models.vision_transformer import VisionTransformer

    kwargs.pop("pretrained_cfg", None)  # timm has no config for this name: give ours rather than have timm warn
    arch = dict(_ARCH, class_token=False, global_pool="map")
    return build_model_with_cfg(
        VisionTransformer, TINY_SIGLIP_VIT, pretrained, pretrained_cfg=dict(_PRETRAINED_CFG), **dict(arch, **kwargs)
    )


def register_tiny_siglip_vit() -> str:
    """Registers the timm model (once per process) and returns its name."""
    import timm
    from timm.models import register_model

    if not timm.is_model(TINY_SIGLIP_VIT):
        register_model(clipablate_vit_tiny_patch8_siglip_64)
    return TINY_SIGLIP_VIT
