"""What trains: locking the image tower (optionally all but its last N blocks) and the native text tower.

`unlocked_last_blocks=N` means the same for both ViT families: the last N transformer blocks and everything
after them (final norm, pooling head, projection) train; the patch embedding, positional/class embeddings,
pre-norm and earlier blocks stay frozen. open_clip's own `lock_image_tower(unlocked_groups=N)` does not mean
this (for a native ViT its last "group" is only the projection; for timm it follows timm's grouping), so the
parameters are split here by name, and a parameter this split does not know is an error rather than a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class VitLayout:
    """Parameter-name prefixes of a ViT tower, in forward order: stem, blocks, tail."""

    family: str
    blocks: str  # the block list (nn.ModuleList / nn.Sequential)
    stem: tuple[str, ...]  # before the first block
    tail: tuple[str, ...]  # after the last block


VIT_LAYOUTS = (
    VitLayout(
        family="open_clip VisionTransformer (CLIP)",
        blocks="transformer.resblocks",
        stem=("conv1", "class_embedding", "positional_embedding", "ln_pre"),
        tail=("ln_post", "proj", "attn_pool", "attn_pool_contrastive", "ln_contrastive"),
    ),
    VitLayout(
        family="timm VisionTransformer in open_clip TimmModel (SigLIP)",
        blocks="trunk.blocks",
        stem=("trunk.cls_token", "trunk.reg_token", "trunk.pos_embed", "trunk.patch_embed", "trunk.norm_pre"),
        tail=("trunk.norm", "trunk.fc_norm", "trunk.attn_pool", "trunk.head", "head"),
    ),
)


def vit_layout(tower: nn.Module) -> VitLayout | None:
    for layout in VIT_LAYOUTS:
        try:
            blocks = tower.get_submodule(layout.blocks)
        except AttributeError:
            continue
        if isinstance(blocks, nn.ModuleList | nn.Sequential):
            return layout
    return None


def unlocked_parameter_names(tower: nn.Module, last_blocks: int) -> set[str]:
    """Names (relative to `tower`) of the parameters in its last `last_blocks` blocks and after them."""
    if last_blocks == 0:
        return set()
    layout = vit_layout(tower)
    if layout is None:
        raise ValueError(
            f"image.unlocked_last_blocks={last_blocks} needs a ViT image tower; {type(tower).__name__} is not one"
        )
    depth = len(tower.get_submodule(layout.blocks))
    if last_blocks > depth:
        raise ValueError(f"image.unlocked_last_blocks={last_blocks}, but the image tower has {depth} blocks")
    unlocked_blocks = {f"{layout.blocks}.{i}" for i in range(depth - last_blocks, depth)}
    names = set()
    for name, _ in tower.named_parameters():
        if _under(name, layout.blocks):
            block = ".".join(name.split(".")[: layout.blocks.count(".") + 2])
            if block in unlocked_blocks:
                names.add(name)
        elif any(_under(name, prefix) for prefix in layout.tail):
            names.add(name)
        elif not any(_under(name, prefix) for prefix in layout.stem):
            raise RuntimeError(f"{layout.family}: parameter {name!r} is neither before nor after the blocks")
    return names


def lock_image_tower(tower: nn.Module, unlocked_last_blocks: int = 0) -> None:
    """Freezes the tower except its last `unlocked_last_blocks` blocks and what follows them."""
    unlocked = unlocked_parameter_names(tower, unlocked_last_blocks)
    for name, param in tower.named_parameters():
        param.requires_grad = name in unlocked


def freeze(module: nn.Module) -> None:
    """All parameters frozen (unlike open_clip's lock_text_tower, no assertion about layer norms)."""
    module.requires_grad_(False)
    module.eval()


def keep_frozen_in_eval(module: nn.Module) -> None:
    """Puts every largest fully frozen submodule in eval mode; the others keep their mode."""
    for child in module.children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            child.eval()
        else:
            keep_frozen_in_eval(child)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")
