"""Finetune a CLIP-like model on image-caption shards: the paper's Section 4 recipe.

    accelerate launch train/finetune.py recipes/clip_neg.yaml [key.sub=value ...]
    python train/finetune.py recipes/tiny_clip_neg.yaml train.max_steps=20

`main(cfg)` is the plan, top to bottom: run folder, model, data, loss, optimizer, resume, train, checkpoint.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm import tqdm

from models import build_model, format_parameter_table, parameter_table
from models.memory import check_fits, device_total_bytes, estimate_for_config, format_memory_estimate
from train.cache import CachedCollate, CachedShardSamples, prepare_recipe_caches
from train.checkpoints import (
    ENGINE,
    finish_checkpoint,
    list_checkpoints,
    load_training_state,
    load_weights,
    resolve_resume,
    save_checkpoint,
    start_checkpoint,
    trainable_state,
)
from train.config import OptimConfig, RecipeConfig, load_recipe
from train.data import BatchPlan, Collate, ShardSamples, epoch_loader, index_shards
from train.losses import build_loss
from train.run_dir import MetricsLog, RunDirError, check_run_dir, write_caches_record, write_run_start
from train.tracking import Tracker
from train.typed_config import ConfigError, flatten, to_plain, to_yaml

MAX_LOGIT_SCALE = math.log(100)
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped on request with a checkpoint; rerun with train.resume=latest


class NonFiniteLoss(RuntimeError):
    pass


class Preempted(RuntimeError):
    pass


class StopRequest:
    """SIGTERM or SIGUSR1 (a scheduler's warning before its time limit) asks for a checkpoint and an exit.

    The handler only sets a flag; the loop checks it between optimizer steps, agreed across processes, so
    every process saves together (saving is collective under DeepSpeed) and none from inside a handler.
    """

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._request)

    def _request(self, signum, frame) -> None:
        self.requested = True

    def agreed(self, accelerator: Accelerator) -> bool:
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([float(self.requested)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


@dataclass
class Position:
    """Where training stands in the data stream; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    step_in_epoch: int = 0  # optimizer steps done within the current epoch


def main(cfg: RecipeConfig, argv: list[str]) -> None:
    accelerator = Accelerator(mixed_precision=cfg.train.accelerate_mixed_precision, cpu=use_cpu_group())
    is_main = accelerator.is_main_process
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    run_dir = check_run_dir(cfg)
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    if is_main:
        write_run_start(run_dir, cfg, argv)
    torch.manual_seed(cfg.seed)

    check_memory(cfg, accelerator)  # before any weights load: a 7B tower that cannot fit fails in seconds
    bundle = build_model(cfg.model)  # applies the recipe's freezing and gradient checkpointing
    model = bundle.model
    if is_main:
        print(format_parameter_table(parameter_table(model)))

    index = index_shards(cfg.data.shards)
    plan = BatchPlan(len(index), cfg.train.global_batch_size, cfg.data.batch_size, accelerator.num_processes)
    if plan.problems():
        raise ConfigError("batch plan", plan.problems())
    if deepspeed:
        configure_deepspeed(accelerator, plan, cfg.optim.grad_clip_norm)
    total_steps = plan.steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    if cfg.optim.warmup_steps >= total_steps:
        raise ConfigError("batch plan", [f"optim.warmup_steps {cfg.optim.warmup_steps} >= {total_steps} steps"])
    caches = prepare_recipe_caches(cfg, bundle, index, accelerator)
    if is_main:
        print("\n".join(caches.notes))
        write_caches_record(run_dir, caches)
    transform = bundle.preprocess_train if cfg.data.augment else bundle.preprocess_eval
    if caches.any:
        samples = CachedShardSamples(index, transform, cfg.data.caption_policy, cfg.seed, caches)
        collate = CachedCollate(bundle.tokenizer, cfg.loss.uses_hard_negatives, caches)
    else:
        samples = ShardSamples(index, transform, cfg.data.caption_policy, cfg.seed)
        collate = Collate(bundle.tokenizer, with_negatives=cfg.loss.uses_hard_negatives)

    loss_fn = build_loss(cfg.loss.name)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
    # The scheduler stays unprepared: accelerate's wrapper would step it once per process per optimizer step.
    model, optimizer = accelerator.prepare(model, optimizer)

    position = Position()
    checkpoints = run_dir / "checkpoints"
    resume_from = resolve_resume(checkpoints, cfg.train.resume)
    if resume_from is not None:
        if deepspeed:  # collective: every rank reads its own ZeRO partition
            accelerator.load_state(str(resume_from / ENGINE))
        else:
            load_weights(resume_from, accelerator.unwrap_model(model))
        state = load_training_state(resume_from, None if deepspeed else optimizer, scheduler)
        position = Position(**state["position"])
        if is_main:
            print(f"resumed from {resume_from} at step {position.step} (epoch {position.epoch})")

    tracker = Tracker(cfg.wandb, cfg.run_name, run_dir, flatten(to_plain(cfg)), enabled=is_main)
    metrics = MetricsLog(run_dir / "metrics.jsonl")
    if is_main:
        print(
            f"{len(index)} samples, {plan.steps_per_epoch} steps/epoch, {total_steps} steps, global batch "
            f"{plan.global_batch} = {plan.micro_batch} x {plan.world_size} processes x {plan.accumulation} accumulation"
        )

    def checkpoint(name: str) -> None:
        accelerator.wait_for_everyone()
        state = {"step": position.step, "position": vars(position)}
        if deepspeed:  # the optimizer states are partitioned across ranks: every rank writes its own
            tmp = start_checkpoint(checkpoints, name) if is_main else None
            accelerator.wait_for_everyone()
            accelerator.save_state(str(checkpoints / f".tmp-{name}" / ENGINE))
            full = accelerator.get_state_dict(model)  # collective under ZeRO-3 (gathers the 16-bit weights)
            if is_main:
                weights = trainable_state(accelerator.unwrap_model(model), full)
                finish_checkpoint(
                    checkpoints, name, tmp, weights=weights, optimizer=None, scheduler=scheduler, state=state,
                    config_yaml=to_yaml(cfg),
                )  # fmt: skip
        elif is_main:
            save_checkpoint(
                checkpoints,
                name,
                model=accelerator.unwrap_model(model),
                optimizer=optimizer,
                scheduler=scheduler,
                state=state,
                config_yaml=to_yaml(cfg),
            )
        accelerator.wait_for_everyone()

    stop = StopRequest()
    bar = tqdm(
        total=total_steps,
        initial=position.step,
        disable=not is_main,
        desc=cfg.run_name,
        dynamic_ncols=True,
        mininterval=0.1 if sys.stderr.isatty() else 30,  # cluster log files get a line every 30 s, not every step
    )
    window = {"loss": 0.0, "steps": 0, "samples": 0, "wait": 0.0, "lr": 0.0, "start": time.perf_counter()}
    model.train()
    while position.step < total_steps:
        stream = epoch_loader(
            samples,
            plan,
            collate,
            epoch=position.epoch,
            rank=accelerator.process_index,
            start_step=position.step_in_epoch,
            workers=cfg.data.workers,
        )
        while position.step_in_epoch < plan.steps_per_epoch and position.step < total_steps:
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            loss, wait = train_step(model, loss_fn, optimizer, scheduler, stream, plan, accelerator, cfg, position)
            position.step += 1
            position.step_in_epoch += 1
            window["loss"] += loss
            window["steps"] += 1
            window["samples"] += plan.global_batch
            window["wait"] += wait
            window["lr"] = lr
            bar.update(1)
            if position.step % cfg.train.log_every_steps == 0 or position.step == total_steps:
                record = log_window(window, position, accelerator.unwrap_model(model))
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", sps=record["samples_per_s"])
                if is_main:
                    metrics.write(record)
                    tracker.log(record, step=position.step)
            saved = cfg.train.checkpoint_every_steps and position.step % cfg.train.checkpoint_every_steps == 0
            if saved:
                checkpoint(f"step_{position.step}")
            if stop.agreed(accelerator):
                if not saved:
                    checkpoint(f"step_{position.step}")
                bar.close()
                tracker.finish()
                raise Preempted(f"stopped on a signal at step {position.step}; checkpoint step_{position.step} written")
        if position.step_in_epoch == plan.steps_per_epoch:
            position.epoch += 1
            position.step_in_epoch = 0
            checkpoint(f"epoch_{position.epoch}")
        elif position.step == total_steps:
            checkpoint(f"step_{position.step}")
    bar.close()
    tracker.finish()
    if is_main:
        done = [p.name for p in list_checkpoints(checkpoints)]
        print(f"run folder: {run_dir}  checkpoints: {', '.join(done)}")


def use_cpu_group() -> bool:
    """On GPU-less hosts several launched processes form one gloo group instead of N lone runs; DeepSpeed, which
    brings its own CPU backend, is the exception."""
    return not torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true"


def check_memory(cfg: RecipeConfig, accelerator: Accelerator) -> None:
    """Prints the per-device memory estimate; raises ConfigError when it exceeds the GPU (train.check_memory)."""
    plugin = accelerator.state.deepspeed_plugin
    estimate = estimate_for_config(
        cfg.model,
        cfg.data.batch_size,
        cfg.train.precision,
        accelerator.num_processes,
        plugin.zero_stage if plugin is not None else 0,
        texts_per_sample=2 if cfg.loss.uses_hard_negatives else 1,
    )
    if accelerator.is_main_process:
        print(format_memory_estimate(estimate))
    device_bytes = device_total_bytes(accelerator.device)
    problems = check_fits(estimate, device_bytes) if device_bytes else []
    if problems and cfg.train.check_memory:
        raise ConfigError("memory estimate (train.check_memory=false to start anyway)", problems)
    if problems and accelerator.is_main_process:
        print("warning: " + "; ".join(problems), file=sys.stderr)


def train_step(model, loss_fn, optimizer, scheduler, stream, plan, accelerator, cfg, position) -> tuple[float, float]:
    """One optimizer step over `plan.accumulation` micro-batches; returns (mean loss, seconds waiting for data)."""
    total, wait = 0.0, 0.0
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    for micro in range(plan.accumulation):
        started = time.perf_counter()
        batch = next(stream).to(accelerator.device)
        wait += time.perf_counter() - started
        last = micro == plan.accumulation - 1
        sync = nullcontext() if last or plan.world_size == 1 else accelerator.no_sync(model)
        with sync, accelerator.autocast():
            out = model(batch.pixels, batch.text, image_frozen=batch.image_frozen, text_frozen=batch.text_frozen)
            text = out["text_features"]
            n = len(batch)
            loss = loss_fn(
                out["image_features"],
                text[:n],
                out["logit_scale"],
                out["logit_bias"],
                negative_features=text[n:] if batch.negative_mask is not None else None,
                negative_mask=batch.negative_mask,
            )
        if not torch.isfinite(loss):
            raise NonFiniteLoss(
                f"loss is {loss.item()} at step {position.step + 1} (epoch {position.epoch}); "
                f"batch sample keys on rank {accelerator.process_index}: {batch.keys}"
            )
        if deepspeed:
            # accelerate marks DeepSpeed's accumulation boundary (where the engine steps) by its sync flag, which
            # only accelerator.accumulate() would otherwise set; DeepSpeed divides by the accumulation itself.
            accelerator.gradient_state._set_sync_gradients(last)
            accelerator.backward(loss)
        else:
            accelerator.backward(loss / plan.accumulation)
        total += loss.item()
    if cfg.optim.grad_clip_norm:
        accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
    optimizer.step()  # under DeepSpeed a no-op: the engine stepped in backward, at the accumulation boundary
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    clamp_logit_scale(accelerator.unwrap_model(model).logit_scale, deepspeed)
    return total / plan.accumulation, wait


def clamp_logit_scale(param: torch.nn.Parameter, deepspeed: bool) -> None:
    """As open_clip: keep the temperature in [1, 100]. Under DeepSpeed the fp32 master copy is what steps on."""
    with torch.no_grad():
        if deepspeed:
            from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

            safe_set_full_fp32_param(param, safe_get_full_fp32_param(param).clamp(0, MAX_LOGIT_SCALE))
        if param.numel():  # a ZeRO-3 partitioned parameter is empty here; its master copy was clamped above
            param.clamp_(0, MAX_LOGIT_SCALE)


def configure_deepspeed(accelerator: Accelerator, plan: BatchPlan, grad_clip_norm: float) -> None:
    """DeepSpeed steps by its own config: give it the recipe's batch plan and clipping so both agree."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = plan.micro_batch
    config["gradient_accumulation_steps"] = plan.accumulation
    config["train_batch_size"] = plan.global_batch
    config["gradient_clipping"] = grad_clip_norm  # 0 = none
    accelerator.gradient_accumulation_steps = plan.accumulation


def log_window(window: dict, position: Position, model) -> dict:
    elapsed = time.perf_counter() - window["start"]
    record = {
        "step": position.step,
        "epoch": position.epoch,
        "loss": window["loss"] / window["steps"],
        "lr": window["lr"],
        "logit_scale": model.logit_scale.exp().item(),
        "samples_per_s": round(window["samples"] / elapsed, 1),
        "data_wait_share": round(window["wait"] / elapsed, 3),
    }
    window.update(loss=0.0, steps=0, samples=0, wait=0.0, start=time.perf_counter())
    return record


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; norms, biases and the logit scale/bias (all < 2-D) get no weight decay, as in open_clip."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "logit_" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """Linear warmup, then cosine to zero (or constant), stepped once per optimizer step."""

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cli(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        cfg = load_recipe(argv[0], argv[1:])
        main(cfg, argv)
    except (ConfigError, RunDirError, NonFiniteLoss, FileNotFoundError) as err:
        print(f"finetune: {err}", file=sys.stderr)
        return 1
    except Preempted as err:
        print(f"finetune: {err}; continue with train.resume=latest", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
