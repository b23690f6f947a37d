"""CLIP-like models for finetuning: open_clip models (or tiny stand-ins) with their own or an LLM2Vec text tower.

    bundle = build_model(ModelConfig(name="tiny-clip"))
    bundle.model(bundle.preprocess_eval(image)[None], bundle.tokenizer(["a ball left of a box"]))

Importing this package loads neither open_clip/timm nor llm2vec (they pull in wandb and accelerate): those are
imported when a model is built.
"""

from models.config import ModelConfig
from models.contrastive import ContrastiveModel
from models.factory import MODELS, ModelBundle, build_model
from models.open_clip_models import PAPER_MODELS, WeightsUnavailableError
from models.parameters import format_parameter_table, parameter_table

__all__ = [
    "MODELS",
    "PAPER_MODELS",
    "ContrastiveModel",
    "ModelBundle",
    "ModelConfig",
    "WeightsUnavailableError",
    "build_model",
    "format_parameter_table",
    "parameter_table",
]
