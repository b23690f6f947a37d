"""The image tower's token sequence at any transformer block: what probes and patch-token heads read.

    with BlockOutputs(model.image_tower, layers=[-1, 2]) as hidden:
        pooled = model.image_tower(pixels)       # the tower runs once, as in training and eval
    hidden[-1]                                   # (B, prefix + patches, width): the last block's output

Both image-tower kinds the project builds are covered: open_clip's VisionTransformer (CLIP; one class token before
the patches) and open_clip's TimmModel around a timm ViT (SigLIP; `num_prefix_tokens`, 0 for SigLIP's map-pooled
trunk). A block's output is the residual stream before the final LayerNorm, the input of the tower's own pooling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class TokenLayout:
    blocks: nn.ModuleList  # the transformer blocks, input to output
    prefix_tokens: int  # class (and register) tokens before the patch tokens
    batch_first: bool  # False: the blocks see (tokens, batch, width), open_clip's old layout
    width: int  # the residual stream's width

    @property
    def has_cls(self) -> bool:
        return self.prefix_tokens > 0


def token_layout(tower: nn.Module) -> TokenLayout:
    """Where an image tower's blocks and prefix tokens are; ValueError naming the tower when it has none."""
    transformer = getattr(tower, "transformer", None)
    if transformer is not None and hasattr(transformer, "resblocks"):  # open_clip VisionTransformer
        return TokenLayout(
            transformer.resblocks, 1, bool(getattr(transformer, "batch_first", True)), int(transformer.width)
        )
    trunk = getattr(tower, "trunk", None)
    if trunk is not None and hasattr(trunk, "blocks"):  # open_clip TimmModel around a timm ViT
        return TokenLayout(trunk.blocks, int(getattr(trunk, "num_prefix_tokens", 0)), True, int(trunk.embed_dim))
    raise ValueError(f"image tower {type(tower).__name__} has no transformer blocks to read tokens from")


def resolve_layers(layers: Sequence[int], depth: int) -> list[int]:
    """Block indices as given (negative from the end: -1 is the last block) -> 0-based, checked, in given order."""
    resolved = []
    for layer in layers:
        index = layer + depth if layer < 0 else layer
        if not 0 <= index < depth:
            raise ValueError(f"layer {layer}: the image tower has {depth} blocks (0..{depth - 1}, or -1..-{depth})")
        resolved.append(index)
    return resolved


class BlockOutputs(dict):
    """Context manager: while open, each forward of the tower stores the output of the requested blocks, keyed by
    the layer number as requested, as (batch, tokens, width)."""

    def __init__(self, tower: nn.Module, layers: Sequence[int]):
        super().__init__()
        self.layout = token_layout(tower)
        self._wanted = dict(zip(layers, resolve_layers(layers, len(self.layout.blocks)), strict=True))
        self._handles: list = []

    def __enter__(self) -> BlockOutputs:
        for key, index in self._wanted.items():
            self._handles.append(self.layout.blocks[index].register_forward_hook(self._keeper(key)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _keeper(self, key: int):
        def keep(_module: nn.Module, _inputs: tuple, output: Tensor | tuple) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            self[key] = hidden if self.layout.batch_first else hidden.transpose(0, 1)

        return keep
