"""CLIP-like models for finetuning: open_clip models (or tiny stand-ins) with their own or an LLM2Vec text tower.

    bundle = build_model(ModelConfig(name="tiny-clip"))
    bundle.model(bundle.preprocess_eval(image)[None], bundle.tokenizer(["a ball left of a box"]))
    bundle.notes                    # lines for the run log: random weights, stand-in tokenizers, tag preprocessing
    bundle.model.max_logit_scale    # clamp logit_scale to this while training: max(log 100, its pretrained value)
    bundle.model.connector          # an LLM2Vec tower's trainable connector (None for a native text tower)

Importing this package loads neither open_clip/timm nor llm2vec (they pull in wandb and accelerate): those are
imported when a model is built.
"""

from models.config import ModelConfig
from models.contrastive import ContrastiveModel, logit_scale_ceiling
from models.factory import MODELS, ModelBundle, build_model
from models.open_clip_models import PAPER_MODELS, RANDOM, WeightsUnavailableError
from models.parameters import format_parameter_table, grad_norm, parameter_table

__all__ = [
    "MODELS",
    "PAPER_MODELS",
    "RANDOM",
    "ContrastiveModel",
    "ModelBundle",
    "ModelConfig",
    "WeightsUnavailableError",
    "build_model",
    "format_parameter_table",
    "grad_norm",
    "logit_scale_ceiling",
    "parameter_table",
]
