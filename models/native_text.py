"""The model's own (open_clip) text encoder as a tower, and open_clip's tokenizer returning a batch dict.

open_clip keeps CLIP's text encoder as loose attributes of `CLIP` (token_embedding, transformer, ...) but
CustomTextCLIP's as one module (`.text`); both become a module here that takes the tokenizer's dict and runs
open_clip's own encoding code. Attribute names are open_clip's, so state-dict keys map back one to one:
`text_tower.<key>` is `<key>` of CLIP and `text.<key>` of CustomTextCLIP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

# The parts of open_clip's CLIP that make up its text encoder (CLIP.encode_text reads exactly these).
CLIP_TEXT_MODULES = ("token_embedding", "transformer", "ln_final")
CLIP_TEXT_PARAMETERS = ("positional_embedding", "text_projection")  # text_projection may also be an nn.Linear


class ClipTextTower(nn.Module):
    """open_clip CLIP's text encoder, moved out of the CLIP module."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        from open_clip.model import CLIP

        self._encode_text = CLIP.encode_text  # open_clip's function, run on these same attributes
        for name in CLIP_TEXT_MODULES + CLIP_TEXT_PARAMETERS:
            setattr(self, name, getattr(clip, name))
        self.text_pool_type = clip.text_pool_type
        self.text_eos_id = getattr(clip, "text_eos_id", None)
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def forward(self, text: dict[str, Tensor]) -> Tensor:
        return self._encode_text(self, text["input_ids"], normalize=False)

    # The feature cache's split of the tower: all of it is the frozen part (when it is locked), nothing follows.
    frozen_features = forward

    def project(self, frozen: Tensor) -> Tensor:
        return frozen

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.transformer.grad_checkpointing = enable  # as CLIP.set_grad_checkpointing


class CustomTextTower(nn.Module):
    """open_clip CustomTextCLIP's text encoder (`.text`): a TextTransformer or an HF text model."""

    def __init__(self, custom_text_clip: nn.Module):
        super().__init__()
        self.text = custom_text_clip.text

    def forward(self, text: dict[str, Tensor]) -> Tensor:
        return self.text(text["input_ids"])  # = CustomTextCLIP.encode_text without normalization

    # The feature cache's split of the tower: all of it is the frozen part (when it is locked), nothing follows.
    frozen_features = forward

    def project(self, frozen: Tensor) -> Tensor:
        return frozen

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.text.set_grad_checkpointing(enable)


def native_text_tower(open_clip_model: nn.Module) -> nn.Module:
    return CustomTextTower(open_clip_model) if hasattr(open_clip_model, "text") else ClipTextTower(open_clip_model)


class NativeTokenizer:
    """open_clip's tokenizer of the model; returns {"input_ids": (B, context_length)} like every tokenizer here."""

    def __init__(self, open_clip_tokenizer: Callable[[list[str]], Tensor]):
        self.open_clip_tokenizer = open_clip_tokenizer

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return {"input_ids": self.open_clip_tokenizer(list(texts)).to(torch.long)}
