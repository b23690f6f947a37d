"""Contrastive losses for finetuning CLIP-like models: CLIP, SigLIP and their hard-negative variants.

`negclip` / `siglip_neg` add the left/right-swapped hard-negative captions of each sample (paper Section 4.2,
following NegCLIP, Yuksekgonul et al. 2023) as extra text candidates for every image.

Every loss is the loss of the GLOBAL batch. Under torch.distributed (world size > 1) each rank gathers the
features of all ranks with a differentiable all_gather, in rank order, and computes the whole global loss, so
all ranks hold the same value and, after DDP averages gradients, the single-process gradients of the global
batch (see `gather_global_batch`). NegCLIP's public code only supports one GPU because its labels assume the
local batch; here labels are built on the gathered batch, so they stay right for any number of ranks.
"""

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

Similarity = Callable[[Tensor, Tensor], Tensor]  # (images, texts) -> (n_images, n_texts) scores


@dataclass(frozen=True)
class GlobalBatch:
    """Features of the whole batch across ranks, in rank order."""

    image_features: Tensor  # (B_global, D), or (B_global, patches, D) for an alignment head
    text_features: Tensor  # (B_global, D)
    # (n_valid, D): only the real hard negatives, in sample order; None when the loss does not use them.
    valid_negative_features: Tensor | None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_gather_rows(local_rows: Tensor) -> Tensor:
    """Concatenate every rank's (n_r, C) tensor in rank order, differentiably; n_r may differ between ranks."""
    from torch.distributed.nn.functional import all_gather  # needs a distributed build; only reached under dist

    world_size = dist.get_world_size()
    # all_gather needs equal shapes, but local batches can differ (e.g. a last partial batch without
    # drop_last): share the sizes (one tiny collective), pad to the largest, and cut the padding off again.
    local_count = torch.tensor([local_rows.shape[0]], device=local_rows.device, dtype=torch.long)
    counts = [torch.empty_like(local_count) for _ in range(world_size)]
    dist.all_gather(counts, local_count)
    row_counts = [int(count.item()) for count in counts]
    max_rows = max(row_counts)
    if local_rows.shape[0] < max_rows:
        local_rows = F.pad(local_rows, (0, 0, 0, max_rows - local_rows.shape[0]))  # backward drops the padding
    with warnings.catch_warnings():
        # Deprecated in favour of _functional_collectives, but it is the stable autograd-aware gather that
        # works on gloo as well as NCCL.
        warnings.filterwarnings("ignore", message=r".*all_gather is deprecated", category=FutureWarning)
        per_rank = all_gather(local_rows)
    return torch.cat([rows[:count] for rows, count in zip(per_rank, row_counts, strict=True)])


def gather_global_batch(
    image_features: Tensor,
    text_features: Tensor,
    negative_features: Tensor | None = None,
    negative_mask: Tensor | None = None,
) -> GlobalBatch:
    """Global batch from this rank's local batch; the identity (plus negative selection) in a single process.

    Why gradients come out exact: every rank computes the same global loss L from the gathered features.
    The backward of all_gather sums, over all ranks, the gradient each rank computed for its copy of rank r's
    rows and returns that sum to rank r, so rank r receives W * dL/d(features_r) (W identical copies of L).
    Backprop then gives rank r W times the part of dL/dparams that flows through its own samples, and DDP's
    average over ranks gives (1/W) * sum_r W * dL/dparams|_r = dL/dparams, the single-process gradient on the
    global batch. logit_scale / logit_bias enter every rank's L directly, so each rank already holds the full
    dL/dscale and their average is that same value.
    """
    has_negatives = negative_features is not None and negative_mask is not None
    if not is_distributed():
        valid_negatives = negative_features[negative_mask] if has_negatives else None
        return GlobalBatch(image_features, text_features, valid_negatives)

    # An alignment head's image features are (batch, patches, dim): they travel as flat rows.
    image_shape = image_features.shape[1:]
    image_width = int(torch.Size(image_shape).numel())
    dim = text_features.shape[1]
    # One differentiable collective carries everything; the mask rides along as a 0/1 column (exact in any
    # float dtype, and it gets no gradient). Padding rows get mask 0, so they can never count as negatives.
    columns = [image_features.reshape(len(image_features), image_width), text_features]
    if has_negatives:
        columns += [negative_features, negative_mask.to(negative_features.dtype).unsqueeze(1)]
    gathered = _all_gather_rows(torch.cat(columns, dim=1))
    valid_negatives = None
    if has_negatives:
        global_mask = gathered[:, image_width + 2 * dim] > 0.5
        valid_negatives = gathered[:, image_width + dim : image_width + 2 * dim][global_mask]
    image = gathered[:, :image_width].reshape(len(gathered), *image_shape)
    return GlobalBatch(image, gathered[:, image_width : image_width + dim], valid_negatives)


def _image_to_text_logits(
    batch: GlobalBatch, logit_scale: Tensor, logit_bias: Tensor | None, similarity: Similarity | None = None
) -> Tensor:
    """(B, B + n_valid) logits: column j < B is caption j, the remaining columns are the valid hard negatives."""
    candidates = batch.text_features
    negatives = batch.valid_negative_features
    # Skipping an empty concat keeps the no-negative case bit-identical to the plain loss.
    if negatives is not None and negatives.shape[0] > 0:
        candidates = torch.cat([candidates, negatives])
    if similarity is None:  # (s * I) @ T^T, in this order, as before (the float rounding of every existing run)
        logits = logit_scale * batch.image_features @ candidates.T
    else:
        logits = logit_scale * similarity(batch.image_features, candidates)
    if logit_bias is not None:
        logits = logits + logit_bias
    return logits


def _check_inputs(
    loss_name: str,
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor | None,
    negative_features: Tensor | None,
    negative_mask: Tensor | None,
    uses_hard_negatives: bool,
    patches: bool = False,
) -> None:
    # Purely local checks: every rank runs the same code, so they fail on all ranks alike, before any collective.
    if image_features.ndim != (3 if patches else 2):
        expected = "(batch, patches, dim) with a patch head" if patches else "(batch, dim)"
        raise ValueError(f"{loss_name}: image_features must be {expected}, got shape {tuple(image_features.shape)}")
    rows_and_width = (image_features.shape[0], image_features.shape[-1])
    if text_features.ndim != 2 or tuple(text_features.shape) != rows_and_width:
        raise ValueError(
            f"{loss_name}: text_features shape {tuple(text_features.shape)} "
            f"!= image_features shape {tuple(image_features.shape)}"
        )
    if logit_scale.numel() != 1:
        raise ValueError(f"{loss_name}: logit_scale must be a scalar tensor, got shape {tuple(logit_scale.shape)}")
    if logit_bias is not None and logit_bias.numel() != 1:
        raise ValueError(f"{loss_name}: logit_bias must be a scalar tensor, got shape {tuple(logit_bias.shape)}")
    if not uses_hard_negatives:
        return
    if negative_features is None or negative_mask is None:
        missing = [
            name
            for name, value in (("negative_features", negative_features), ("negative_mask", negative_mask))
            if value is None
        ]
        raise ValueError(
            f"{loss_name} trains with hard-negative captions: pass negative_features (batch, dim) and "
            f"negative_mask (batch,) bool; missing: {', '.join(missing)}"
        )
    if negative_features.shape != text_features.shape:
        raise ValueError(
            f"{loss_name}: negative_features shape {tuple(negative_features.shape)} "
            f"!= text_features shape {tuple(text_features.shape)}"
        )
    if negative_mask.dtype != torch.bool:
        raise ValueError(f"{loss_name}: negative_mask must be a bool tensor, got {negative_mask.dtype}")
    if negative_mask.shape != (text_features.shape[0],):
        raise ValueError(
            f"{loss_name}: negative_mask shape {tuple(negative_mask.shape)} != ({text_features.shape[0]},)"
        )


class GlobalBatchLoss(nn.Module):
    """Validates the local batch, gathers the global batch, and computes `global_loss` on it.

    `similarity` (default: the dot product) scores images against texts: an alignment head's pair score
    (models/alignment_heads.py) takes (batch, patches, dim) image features; it has no weights of its own."""

    uses_hard_negatives: ClassVar[bool] = False

    def __init__(self, similarity: Similarity | None = None):
        super().__init__()
        self.similarity = similarity

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor,
        logit_bias: Tensor | None = None,
        negative_features: Tensor | None = None,
        negative_mask: Tensor | None = None,
    ) -> Tensor:
        loss_name = type(self).__name__
        _check_inputs(
            loss_name,
            image_features,
            text_features,
            logit_scale,
            logit_bias,
            negative_features,
            negative_mask,
            self.uses_hard_negatives,
            patches=self.similarity is not None,
        )
        if not self.uses_hard_negatives:  # ignored, and not worth gathering
            negative_features = negative_mask = None
        batch = gather_global_batch(image_features, text_features, negative_features, negative_mask)
        if batch.image_features.shape[0] == 0:
            raise ValueError(f"{loss_name}: the global batch is empty")
        return self.global_loss(batch, logit_scale, logit_bias)

    def global_loss(self, batch: GlobalBatch, logit_scale: Tensor, logit_bias: Tensor | None) -> Tensor:
        raise NotImplementedError


class ClipLoss(GlobalBatchLoss):
    """Symmetric InfoNCE: (CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag)) / 2 over the global batch."""

    def global_loss(self, batch: GlobalBatch, logit_scale: Tensor, logit_bias: Tensor | None) -> Tensor:
        batch_size = batch.image_features.shape[0]
        # logit_bias (if any) is added like open_clip does; a constant shift leaves softmax CE unchanged.
        logits_per_image = _image_to_text_logits(batch, logit_scale, logit_bias, self.similarity)
        # Hard negatives have no image, hence no row in the text->image direction.
        logits_per_text = logits_per_image[:, :batch_size].T
        labels = torch.arange(batch_size, device=logits_per_image.device)
        return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


class NegClipLoss(ClipLoss):
    """NegCLIP: the valid hard-negative captions are extra columns of image->text only.

    logits_per_image = s·I·[T; N_valid]ᵀ with diagonal labels; logits_per_text = s·T·Iᵀ. Without any valid
    negative it is exactly `ClipLoss`.
    """

    uses_hard_negatives = True


class SigLipLoss(GlobalBatchLoss):
    """Pairwise sigmoid: -Σ_ij logσ(z_ij (s·I_i·T_j + b)) / B_global, z = +1 on the diagonal and -1 elsewhere."""

    def global_loss(self, batch: GlobalBatch, logit_scale: Tensor, logit_bias: Tensor | None) -> Tensor:
        batch_size = batch.image_features.shape[0]
        logits = _image_to_text_logits(batch, logit_scale, logit_bias, self.similarity)
        # diagonal() of the (B, B + n) matrix is exactly the B matching pairs; every other pair is negative.
        pair_signs = -torch.ones_like(logits)
        pair_signs.diagonal().fill_(1.0)
        # Normalised by the number of images, like open_clip's SigLipLoss (negatives add terms, not images).
        return -F.logsigmoid(pair_signs * logits).sum() / batch_size


class SigLipNegLoss(SigLipLoss):
    """SigLIP with every valid hard-negative caption as an extra negative pair for every image.

    Still normalised by B_global; without any valid negative it is exactly `SigLipLoss`.
    """

    uses_hard_negatives = True


LOSSES: dict[str, type[nn.Module]] = {
    "clip": ClipLoss,
    "siglip": SigLipLoss,
    "negclip": NegClipLoss,
    "siglip_neg": SigLipNegLoss,
}


def build_loss(name: str, similarity: Similarity | None = None) -> nn.Module:
    try:
        loss_class = LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}") from None
    return loss_class(similarity)
