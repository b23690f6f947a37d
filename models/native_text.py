"""The model's own (open_clip) text encoder as a tower, and open_clip's tokenizer returning a batch dict.

open_clip keeps CLIP's text encoder as loose attributes of `CLIP` (token_embedding, transformer, ...) but
CustomTextCLIP's as one module (`.text`); both become a module here that takes the tokenizer's dict and runs
open_clip's own encoding code. Attribute names are open_clip's, so state-dict keys map back one to one:
`text_tower.<key>` is `<key>` of CLIP and `text.<key>` of CustomTextCLIP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

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

    def forward_tokens(self, text: dict[str, Tensor]) -> TextTokens:
        """CLIP.encode_text's steps, keeping every position: the pooled embedding (= forward) and each token's
        final state through the same projection. CLIP pads with 0 (its start and end tokens are not 0)."""
        from open_clip.transformer import text_global_pool

        ids = text["input_ids"]
        cast_dtype = self.transformer.get_cast_dtype()
        x = self.token_embedding(ids).to(cast_dtype) + self.positional_embedding.to(cast_dtype)
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        pooled = text_global_pool(x, ids, self.text_pool_type, eos_token_id=self.text_eos_id)
        return TextTokens(project(pooled, self.text_projection), project(x, self.text_projection), ids != 0)

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

    def forward_tokens(self, text: dict[str, Tensor]) -> TextTokens:
        """open_clip's TextTransformer with output_tokens: the pooled embedding (= forward) and each token's final
        state, through the same projection; padding (the tower's pad_id) is masked out."""
        from open_clip.transformer import TextTransformer

        if not isinstance(self.text, TextTransformer):
            raise ValueError(
                f"token-level text features need open_clip's TextTransformer, not {type(self.text).__name__}"
            )
        ids = text["input_ids"]
        self.text.output_tokens = True
        try:
            pooled, tokens = self.text(ids)
        finally:
            self.text.output_tokens = False
        return TextTokens(
            pooled, project(tokens, self.text.text_projection), ids[:, : tokens.shape[1]] != self.text.pad_id
        )

    # The feature cache's split of the tower: all of it is the frozen part (when it is locked), nothing follows.
    frozen_features = forward

    def project(self, frozen: Tensor) -> Tensor:
        return frozen

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.text.set_grad_checkpointing(enable)


@dataclass(frozen=True)
class TextTokens:
    """A text tower's outputs per token, for a token-level loss (SPARC): all in the tower's embedding space."""

    pooled: Tensor  # (B, D): what the tower's forward returns
    tokens: Tensor  # (B, L, D): every position's final state through the tower's output projection
    mask: Tensor  # (B, L) bool: the caption's own positions (not padding)


def project(x: Tensor, projection: nn.Module | Tensor | None) -> Tensor:
    """open_clip's text output projection (a Linear or a matrix), applied to the last dimension."""
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def native_text_tower(open_clip_model: nn.Module) -> nn.Module:
    return CustomTextTower(open_clip_model) if hasattr(open_clip_model, "text") else ClipTextTower(open_clip_model)


class NativeTokenizer:
    """open_clip's tokenizer of the model; returns {"input_ids": (B, context_length)} like every tokenizer here."""

    def __init__(self, open_clip_tokenizer: Callable[[list[str]], Tensor]):
        self.open_clip_tokenizer = open_clip_tokenizer

    def __call__(self, texts: Sequence[str]) -> dict[str, Tensor]:
        return {"input_ids": self.open_clip_tokenizer(list(texts)).to(torch.long)}
