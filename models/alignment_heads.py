"""Alignment heads beyond the dot product: how an image and a text are scored, from the image's patch tokens.

`dot` (no head): CLIP's cosine of the pooled image embedding and the text embedding.
`xattn`: a small multi-head cross-attention matching head (CrossAttentionHead): per head, the text's query attends
over the patches' keys; the attended values are compared with the text's output embedding.
`pacl` (Patch Aligned Contrastive Learning, Mukhoti et al., CVPR 2023): each patch token of the locked image tower's
last block is projected into the text space (LayerNorm, then a linear map plus a GELU MLP, as PACL's vision
embedder); the text embedding is projected too (LayerNorm, linear). For a pair (image i, text t) the text attends
over the image's patches, a_p = softmax_p(cos(v_ip, u_t) / temperature), and the score is the cosine of the
attended patch embedding with the text: cos(sum_p a_p v_ip, u_t). The score depends on the text, so eval scores
pairs (eval.scoring) and the losses take the head's `similarity` in place of the dot product; it has no weights of
its own, so every loss, the two-pass step and the gather across processes work on its inputs unchanged.

`sparc` (Bica et al., ICML 2024): PACL's projections, scored globally by the mean of the projected patches, and
trained with a token-level loss beside the global one (SparcHead).

The authors' release (lst627/CLIP-Embeds, Patch-Aligned-Contrastive-Learning/) weights patches with sigmoid(10 cos)
while training and sums them unweighted in eval; this is PACL as published (softmax weights, also in eval).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.image_tokens import BlockOutputs, resolve_layers, token_layout

HEADS = ("dot", "pacl", "xattn", "sparc")


class PatchProjection(nn.Module):
    """PACL's vision embedder: a linear map plus a one-hidden-layer GELU MLP, summed."""

    def __init__(self, width: int, dim: int):
        super().__init__()
        self.linear = nn.Linear(width, dim)
        self.mlp = nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + self.mlp(x)


class PatchAlignedHead(nn.Module):
    """PACL: trainable projections of the patch tokens and of the text embedding, and the text-attended score."""

    kind = "pacl"

    def __init__(
        self, width: int, embed_dim: int, prefix_tokens: int, patches: int, temperature: float, layer: int = -1
    ):
        super().__init__()
        self.width, self.prefix_tokens, self.patches = width, prefix_tokens, patches
        self.temperature, self.layer = temperature, layer
        self.image_projection = nn.Sequential(nn.LayerNorm(width), PatchProjection(width, embed_dim))
        self.text_projection = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim))

    def patch_tokens(self, tower: nn.Module, pixels: Tensor) -> Tensor:
        """(n, patches, width): the patch tokens of block `layer` (what a patch cache stores, flattened)."""
        with BlockOutputs(tower, [self.layer]) as hidden:
            tower(pixels)
        return hidden[self.layer][:, self.prefix_tokens :]

    def unflatten(self, tokens: Tensor) -> Tensor:
        """A patch cache's rows (n, patches x width) back to (n, patches, width); 3-D input as it is."""
        return tokens.reshape(len(tokens), self.patches, self.width) if tokens.ndim == 2 else tokens

    def image_side(self, tokens: Tensor) -> Tensor:
        return F.normalize(self.image_projection(self.unflatten(tokens)), dim=-1)

    def text_side(self, text: Tensor) -> Tensor:
        return F.normalize(self.text_projection(text), dim=-1)

    def similarity(self, image: Tensor, text: Tensor) -> Tensor:
        return patch_aligned_similarity(image, text, self.temperature)


class CrossAttentionHead(PatchAlignedHead):
    """A small multi-head cross-attention matching head: the text's query (one per head) attends over the patches'
    keys, the attended values are compared with the text's output embedding by cosine. Unlike PACL's single
    softmax, each head can attend to another object of a caption. Every projection is per side (keys and values from
    the patches, query and output from the text), so the pair score itself has no weights: the losses, the gather and
    eval take it as they take PACL's. Image features: (n, patches, 2 x dim) = [keys, values]; text: (n, 2 x dim) =
    [query, output]."""

    kind = "xattn"

    def __init__(
        self, width: int, embed_dim: int, prefix_tokens: int, patches: int, temperature: float, layer: int, heads: int
    ):
        super().__init__(width, embed_dim, prefix_tokens, patches, temperature, layer)
        if embed_dim % heads:
            raise ValueError(f"model.head.heads={heads} does not divide the embedding width {embed_dim}")
        self.heads = heads
        self.image_projection = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * embed_dim))
        self.text_projection = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, 2 * embed_dim))

    def image_side(self, tokens: Tensor) -> Tensor:
        return self.image_projection(self.unflatten(tokens))

    def text_side(self, text: Tensor) -> Tensor:
        return self.text_projection(text)

    def similarity(self, image: Tensor, text: Tensor) -> Tensor:
        return cross_attention_similarity(image, text, self.heads)


class SparcHead(PatchAlignedHead):
    """SPARC (Bica et al., ICML 2024): PACL's projections, a global score, and a token-level loss beside it.

    Global score (the losses, eval): cos(mean of the projected patches, projected text embedding).
    Fine-grained loss, per sample: each caption token weights the image's patches by their similarity to it
    (min-max normalised over the patches, zero below sparsity / patches, then normalised to sum 1); the weighted
    patches ("language-grouped" vision embeddings) and the tokens are contrasted within the caption, both ways
    (cross-entropy over the caption's own tokens, at `temperature`). It involves no other sample, so it adds to the
    global loss per sample (`fine_grained_losses`), exact under accumulation and several processes.
    Image features: (n, patches, dim), projected, not normalised (the token weights use raw similarities)."""

    kind = "sparc"

    def __init__(
        self, width: int, embed_dim: int, prefix_tokens: int, patches: int, temperature: float, layer: int,
        fine_weight: float, sparsity: float,
    ):  # fmt: skip
        super().__init__(width, embed_dim, prefix_tokens, patches, temperature, layer)
        self.fine_weight, self.threshold = fine_weight, sparsity / patches

    def image_side(self, tokens: Tensor) -> Tensor:
        return self.image_projection(self.unflatten(tokens))

    def token_side(self, tokens: Tensor) -> Tensor:
        """A caption's per-token embeddings (n, L, dim), through the text projection, not normalised."""
        return self.text_projection(tokens)

    def similarity(self, image: Tensor, text: Tensor) -> Tensor:
        return F.normalize(image.mean(dim=1), dim=-1) @ text.T

    def fine_grained_losses(self, patches: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        """(n,) each sample's fine-grained loss: patches (n, P, dim) from image_side, its caption's tokens (n, L, dim)
        from token_side, mask (n, L) the caption's own positions."""
        return sparc_fine_grained_losses(patches, tokens, mask, self.threshold, self.temperature)


def sparc_fine_grained_losses(
    patches: Tensor, tokens: Tensor, mask: Tensor, threshold: float, temperature: float
) -> Tensor:
    """SPARC's token-level loss of each sample (n,): mean over the caption's tokens of the two cross-entropies
    (grouped patches -> tokens, tokens -> grouped patches) among that caption's own tokens. In float32 at least,
    autocast or not: bf16 would round the min-max normalised weights and the threshold they are cut at."""
    precision = torch.promote_types(tokens.dtype, torch.float32)
    with torch.autocast(patches.device.type, enabled=False):
        return _sparc_losses(tokens.to(precision), patches.to(precision), mask, threshold, temperature)


def _sparc_losses(tokens: Tensor, patches: Tensor, mask: Tensor, threshold: float, temperature: float) -> Tensor:
    similarity = torch.einsum("ntd,npd->ntp", tokens, patches)
    low = similarity.amin(dim=-1, keepdim=True)
    high = similarity.amax(dim=-1, keepdim=True)
    similarity = (similarity - low) / (high - low + 1e-8)
    similarity = torch.where(similarity < threshold, torch.zeros_like(similarity), similarity)
    weights = similarity / (similarity.sum(dim=-1, keepdim=True) + 1e-8)
    grouped = F.normalize(torch.einsum("ntp,npd->ntd", weights, patches), dim=-1)
    words = F.normalize(tokens, dim=-1)
    logits = torch.einsum("nmd,nkd->nmk", grouped, words) / temperature
    # Padding is never a candidate (a large finite negative: a padding row's own loss is computed, then dropped)
    blocked = ~mask[:, None, :]
    labels = torch.arange(logits.shape[1], device=logits.device).expand(logits.shape[0], -1)

    def token_losses(scores: Tensor) -> Tensor:  # (n, L) cross-entropy of each row against its own token
        scores = scores.masked_fill(blocked, -1e9)
        return F.cross_entropy(scores.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)

    both = (token_losses(logits) + token_losses(logits.transpose(1, 2))) / 2
    valid = mask.to(both.dtype)
    return (both * valid).sum(dim=1) / valid.sum(dim=1).clamp_min(1)


def cross_attention_similarity(image: Tensor, text: Tensor, heads: int, chunk: int = 32) -> Tensor:
    """(n_images, n_texts): cos(multi-head attention(query_t; keys_i, values_i), output_t), images in chunks."""
    keys, values = image.chunk(2, dim=-1)
    query, output = text.chunk(2, dim=-1)
    n_t, dim = query.shape
    query = query.reshape(n_t, heads, dim // heads)
    output = F.normalize(output, dim=-1)
    rows = []
    for start in range(0, image.shape[0], chunk):
        k = keys[start : start + chunk].unflatten(-1, (heads, dim // heads))  # (i, p, h, d)
        v = values[start : start + chunk].unflatten(-1, (heads, dim // heads))
        weights = torch.softmax(torch.einsum("thd,iphd->ithp", query, k) / math.sqrt(dim // heads), dim=-1)
        attended = torch.einsum("ithp,iphd->ithd", weights, v).flatten(2)  # (i, t, dim)
        rows.append(torch.einsum("itd,td->it", F.normalize(attended, dim=-1), output))
    return torch.cat(rows) if rows else image.new_zeros(0, text.shape[0])


def patch_aligned_similarity(patches: Tensor, text: Tensor, temperature: float, chunk: int = 64) -> Tensor:
    """(n_images, n_texts) scores of normalised patch embeddings (n_images, P, D) against normalised texts (n_texts,
    D): cos(sum_p softmax_p(cos(v_p, u) / temperature) v_p, u). Computed in chunks of images: the attended
    embeddings are (chunk, n_texts, D) at a time."""
    rows = []
    for start in range(0, patches.shape[0], chunk):
        part = patches[start : start + chunk]
        cosines = torch.einsum("ipd,td->itp", part, text)
        weights = torch.softmax(cosines / temperature, dim=-1)
        attended = torch.einsum("itp,ipd->itd", weights, part)
        # cos(attended, u) with |u| = 1: (weights . cosines) / |attended|
        rows.append((weights * cosines).sum(-1) / attended.norm(dim=-1).clamp_min(1e-6))
    return torch.cat(rows) if rows else patches.new_zeros(0, text.shape[0])


def build_head(
    kind: str, tower: nn.Module, embed_dim: int, temperature: float, layer: int = -1, heads: int = 8,
    fine_weight: float = 2.0, sparsity: float = 1.0,
) -> nn.Module | None:  # fmt: skip
    """The head of `kind` for this image tower (None for the dot product)."""
    if kind == "dot":
        return None
    if kind not in HEADS:
        raise ValueError(f"unknown model.head.kind {kind!r}; known: {', '.join(HEADS)}")
    layout = token_layout(tower)
    size = getattr(tower, "image_size", None) or tower.trunk.patch_embed.img_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    patch = _patch_size(tower)
    patches = math.prod(s // p for s, p in zip(size, patch, strict=True))
    resolve_layers([layer], len(layout.blocks))  # a clear error for a block the tower does not have
    if kind == "xattn":
        return CrossAttentionHead(layout.width, embed_dim, layout.prefix_tokens, patches, temperature, layer, heads)
    if kind == "sparc":
        return SparcHead(
            layout.width, embed_dim, layout.prefix_tokens, patches, temperature, layer, fine_weight, sparsity
        )
    return PatchAlignedHead(layout.width, embed_dim, layout.prefix_tokens, patches, temperature, layer)


def _patch_size(tower: nn.Module) -> tuple[int, int]:
    if hasattr(tower, "conv1"):  # open_clip VisionTransformer
        kernel = tower.conv1.kernel_size
    else:  # timm ViT
        kernel = tower.trunk.patch_embed.patch_size
    return (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)


def dot_similarity(image: Tensor, text: Tensor) -> Tensor:
    return image @ text.T


Similarity = Callable[[Tensor, Tensor], Tensor]
