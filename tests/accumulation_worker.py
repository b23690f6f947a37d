"""Computes the loss and gradients of one global batch through `train.finetune.Trainer`, in float64, and saves them.

    python tests/accumulation_worker.py OUT.pt SHARDS MICRO_BATCH
    accelerate launch --config_file launch/accelerate/cpu_2proc.yaml tests/accumulation_worker.py ...

Used by tests/test_accumulation.py to compare 1 process x 1 micro-batch, 1 x 4 and 2 processes x 2.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from accelerate import Accelerator

from models import build_model
from train.config import load_recipe
from train.data import BatchPlan, Collate, ShardSamples, epoch_loader, index_shards
from train.finetune import Trainer
from train.process_group import use_cpu_group

GLOBAL_BATCH = 64
# (recipe, loss): all four losses, the LLM2Vec tower (its frozen LLM's outputs reused by the two-pass step), and a
# PACL head (patch-token image features, (batch, patches, dim), through the gather and the two-pass step), and a
# SPARC head (its per-sample token-level loss beside the global one).
CASES = [("tiny_clip_neg", "clip"), ("tiny_clip_neg", "negclip"), ("tiny_siglip_neg", "siglip"),
         ("tiny_siglip_neg", "siglip_neg"), ("tiny_clip_llm2vec_neg", "negclip"), ("tiny_clip_pacl_neg", "negclip"),
         ("tiny_siglip_pacl_neg", "siglip_neg"), ("tiny_clip_sparc_neg", "negclip")]  # fmt: skip


def main(out: str, shards: str, micro_batch: str) -> None:
    accelerator = Accelerator(cpu=use_cpu_group())
    results = {}
    for recipe, loss in CASES:
        results[f"{recipe}:{loss}"] = one_step(accelerator, recipe, loss, shards, micro_batch)
    if accelerator.is_main_process:
        torch.save(results, out)
    accelerator.wait_for_everyone()


def one_step(accelerator: Accelerator, recipe: str, loss_name: str, shards: str, micro_batch: str) -> dict:
    cfg = load_recipe(
        f"recipes/{recipe}.yaml",
        [f"data.shards=[{shards}]", f"data.batch_size={micro_batch}", f"train.global_batch_size={GLOBAL_BATCH}",
         "cache=off", "data.workers=0", "optim.warmup_steps=1", f"loss.name={loss_name}"],
    )  # fmt: skip
    torch.manual_seed(cfg.seed)
    bundle = build_model(cfg.model)
    model = bundle.model.double()
    index = index_shards(cfg.data.shards, unrecorded=cfg.data.unrecorded_shards)
    plan = BatchPlan(len(index), cfg.train.global_batch_size, cfg.data.batch_size, accelerator.num_processes)
    samples = ShardSamples(index, bundle.preprocess_train, cfg.data.caption_policy, cfg.seed)
    collate = Collate(bundle.tokenizer, with_negatives=cfg.loss.uses_hard_negatives)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, accelerator, model, plan, total_steps=10, run_dir=Path(run_dir))
        stream = epoch_loader(samples, plan, collate, epoch=0, rank=accelerator.process_index, workers=0)
        batches = []
        for _ in range(plan.accumulation):
            batch = next(stream)
            if batch.pixels is not None:
                batch.pixels = batch.pixels.double()
            batches.append(batch)
        loss = trainer.accumulate_gradients(batches)
        grads = {n: p.grad.detach().clone() for n, p in trainer.raw.named_parameters() if p.grad is not None}
    return {"loss": loss, "grads": grads, "accumulation": plan.accumulation}


if __name__ == "__main__":
    main(*sys.argv[1:])
