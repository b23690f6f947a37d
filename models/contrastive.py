"""ContrastiveModel: an image tower and a text tower mapped into one embedding space, plus the logit scale/bias.

The towers are open_clip's own modules (the visual tower; the text encoder, or an LLM2Vec tower in its place),
so the model computes exactly what open_clip computes; only the text input is a dict for every tower kind.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from models.freezing import keep_frozen_in_eval
from models.native_text import ClipTextTower, CustomTextTower

LOG_100 = math.log(100)  # CLIP's clamp of the logit scale: an inverse temperature of at most 100


def logit_scale_ceiling(initial: float) -> float:
    """The clamp for a finetuned logit scale: log(100) as CLIP, or the pretrained value where that is higher
    (SigLIP's learned scale exceeds 100; clamping it to log(100) would change the model before any step)."""
    return max(LOG_100, float(initial))


class ContrastiveModel(nn.Module):
    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: nn.Module,
        logit_scale: nn.Parameter,
        logit_bias: nn.Parameter | None = None,
        head: nn.Module | None = None,
    ):
        super().__init__()
        self.image_tower = image_tower  # pixels (B, 3, H, W) -> (B, D)
        self.text_tower = text_tower  # tokenizer dict -> (B, D)
        # None: CLIP's dot product of pooled embeddings; else an alignment head on the patch tokens
        # (models/alignment_heads.py): image features are then (B, patches, D) and scores come from `similarity`
        self.head = head
        self.logit_scale = logit_scale  # log of the inverse temperature, as open_clip
        self.register_parameter("logit_bias", logit_bias)  # SigLIP's bias; None for CLIP
        # The ceiling to clamp logit_scale to while training: max(log 100, its value at build). A plain float, fixed
        # here, so a resumed run clamps as the original; a model on the meta device (memory estimates) gets log 100.
        self.max_logit_scale = LOG_100 if logit_scale.is_meta else logit_scale_ceiling(logit_scale.detach().max())

    @property
    def connector(self) -> nn.Module | None:
        """The trainable connector of an LLM2Vec text tower (log its gradient norm), None for a native tower."""
        return getattr(self.text_tower, "connector", None)

    def encode_image(self, pixels: Tensor, normalize: bool = True) -> Tensor:
        """(B, D) pooled embeddings; with a head, (B, patches, D) projected patch tokens (always normalised)."""
        if self.head is not None:
            return self.head.image_side(self.frozen_image_features(pixels))
        features = self.image_tower(pixels)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: dict[str, Tensor], normalize: bool = True) -> Tensor:
        features = self.text_tower(text)
        if self.head is not None:
            return self.head.text_side(features)
        return F.normalize(features, dim=-1) if normalize else features

    def similarity(self, image_features: Tensor, text_features: Tensor) -> Tensor:
        """(n_images, n_texts) scores of encoded images and texts: cosines, or the head's pair scores."""
        if self.head is not None:
            return self.head.similarity(image_features, text_features)
        return image_features @ text_features.T

    def frozen_image_features(self, pixels: Tensor) -> Tensor:
        """What a locked image tower contributes, what an image cache stores: the pooled embedding, or with a head
        the patch tokens of the block it reads (model.head.layer)."""
        if self.head is not None:
            return self.head.patch_tokens(self.image_tower, pixels)
        return self.image_tower(pixels)

    def frozen_text_features(self, text: dict[str, Tensor]) -> Tensor:
        """The output of the text tower's frozen part (the LLM2Vec LLM, or a whole locked native tower).

        This is what a feature cache stores; `forward(text_frozen=...)` finishes the tower from it.
        """
        return self.text_tower.frozen_features(text)

    def forward(
        self,
        pixels: Tensor | None,
        text: dict[str, Tensor] | None,
        *,
        image_frozen: Tensor | None = None,
        text_frozen: Tensor | None = None,
        keep_frozen: bool = False,
    ) -> dict[str, Tensor | None]:
        """Normalized features of both towers, the exp'd logit scale and the logit bias (None for CLIP).

        `image_frozen` (a locked image tower's outputs) replaces `pixels`; `text_frozen` (frozen_text_features)
        replaces `text`: cached outputs of frozen parts give the same features without running those parts.
        `keep_frozen` also returns the outputs of the parts that are frozen as "image_frozen" / "text_frozen" (None
        for a part that trains), for a second pass over the same batch to start from (the two-pass step).
        """
        image = self.frozen_image_features(pixels) if image_frozen is None else image_frozen
        text_frozen_part = keep_frozen and text_frozen is None and self.frozen_parts()[1]
        if text_frozen_part:
            text_frozen = self.text_tower.frozen_features(text)
        tokens = None
        if self.reads_text_tokens:  # SPARC: the tower runs whole, keeping every position
            tokens = self.text_tower.forward_tokens(text)
            text_out = tokens.pooled
        else:
            text_out = self.text_tower(text) if text_frozen is None else self.text_tower.project(text_frozen)
        if self.head is not None:
            image_features, text_features = self.head.image_side(image), self.head.text_side(text_out)
        else:
            image_features, text_features = F.normalize(image, dim=-1), F.normalize(text_out, dim=-1)
        out = {
            "image_features": image_features,
            "text_features": text_features,
            "logit_scale": self.logit_scale.exp(),
            "logit_bias": self.logit_bias,
        }
        if tokens is not None:  # every text row's tokens (captions, then hard negatives) and their mask
            out["text_tokens"], out["token_mask"] = self.head.token_side(tokens.tokens), tokens.mask
        if keep_frozen:
            image_locked, text_locked = self.frozen_parts()
            out["image_frozen"] = image.detach() if image_locked else None
            out["text_frozen"] = text_frozen.detach() if text_locked and text_frozen is not None else None
        return out

    def release_frozen_parts(self, image: bool = False, text: bool = False) -> list[str]:
        """Frees the frozen parts whose outputs come from a feature cache (their weights leave the model and the
        device): the locked image tower, the LLM2Vec LLM or a locked native text tower. Training then passes their
        cached outputs (`image_frozen`, `text_frozen`); calling a released part raises. Returns what was freed."""
        freed = []
        if image and self.frozen_parts()[0]:
            self.image_tower = ReleasedPart("the image tower")
            freed.append("image tower")
        if text and self.frozen_parts()[1]:
            if self.connector is not None:  # LLM2Vec: the LLM goes, the connector (trainable) stays
                self.text_tower.llm2vec = ReleasedPart("the LLM2Vec LLM")
                freed.append("LLM2Vec LLM")
            else:
                self.text_tower = ReleasedPart("the text tower")
                freed.append("text tower")
        return freed

    def compile_trainable_parts(self) -> list[str]:
        """torch.compile (in place: the same module, the same state_dict names) each part that trains: a tower
        with trainable weights, or only the connector of an LLM2Vec tower (its LLM is frozen). Dynamic shapes: the
        text batch's rows vary with its hard negatives. Returns what was compiled."""
        compiled = []
        if any(p.requires_grad for p in self.image_tower.parameters()):
            self.image_tower.compile(dynamic=True)
            compiled.append("image tower")
        if self.connector is not None:
            self.connector.compile(dynamic=True)
            compiled.append("connector")
        elif any(p.requires_grad for p in self.text_tower.parameters()):
            self.text_tower.compile(dynamic=True)
            compiled.append("text tower")
        return compiled

    @property
    def reads_text_tokens(self) -> bool:
        """A token-level loss (SPARC) needs every token's output, so the text tower runs whole every pass."""
        return self.head is not None and hasattr(self.head, "fine_grained_losses")

    def fine_grained_losses(self, out: dict, rows: int) -> Tensor | None:
        """(rows,) each caption's token-level loss from `forward`'s outputs (its first `rows` texts are the
        captions); None without a token-level loss."""
        if "text_tokens" not in out:
            return None
        return self.head.fine_grained_losses(out["image_features"], out["text_tokens"][:rows], out["token_mask"][:rows])

    def frozen_parts(self) -> tuple[bool, bool]:
        """(the whole image tower is frozen, the text tower has a frozen part whose output the rest starts from):
        the parts whose outputs a cache or a second pass can reuse (not the text tower's under a token-level
        loss: its pooled output alone is not enough)."""
        image = not any(p.requires_grad for p in self.image_tower.parameters())
        text = self.connector is not None or not any(p.requires_grad for p in self.text_tower.parameters())
        return image, text and not self.reads_text_tokens

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward, for towers that train (a frozen tower keeps none anyway)."""
        for tower in (self.image_tower, self.text_tower):
            if any(p.requires_grad for p in tower.parameters()):
                tower.set_grad_checkpointing(enable)

    def open_clip_state_dict(self) -> dict[str, Tensor]:
        """The weights under open_clip's own names: a file of them loads with model.pretrained=<file> (or in open_clip)."""
        if self.head is not None:
            raise ValueError("open_clip has no alignment head: only a model scored by the dot product maps back")
        if not isinstance(self.text_tower, ClipTextTower | CustomTextTower):
            raise ValueError("open_clip has no LLM2Vec text tower: only a model with its own text tower maps back")
        renamed = {}
        for key, value in self.state_dict().items():
            if key.startswith("image_tower."):
                key = "visual." + key.removeprefix("image_tower.")
            renamed[key.removeprefix("text_tower.")] = value  # native_text keeps open_clip's attribute names
        return renamed

    def train(self, mode: bool = True) -> ContrastiveModel:
        """As nn.Module.train, but frozen parts stay in eval mode (no dropout, fixed norm statistics)."""
        super().train(mode)
        if mode:
            keep_frozen_in_eval(self)
        return self


class ReleasedPart(nn.Module):
    """Stands for a frozen part freed because its outputs come from a feature cache: no weights; its output is
    passed in (`image_frozen`, `text_frozen`), so running it is a bug and says so."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def forward(self, *args, **kwargs):
        raise RuntimeError(f"{self.what} was freed (its outputs come from the feature cache); pass them instead")

    frozen_features = forward

    def project(self, frozen: Tensor) -> Tensor:  # a native text tower: its whole output is the frozen part
        return frozen

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Nothing to recompute: no weights."""
