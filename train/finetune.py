"""Finetune a CLIP-like model on image-caption shards: the paper's Section 4 recipe.

    accelerate launch train/finetune.py recipes/clip_neg.yaml [key.sub=value ...]
    python train/finetune.py tiny_clip_neg train.max_steps=20        # a recipe's name stands for its file
    python train/finetune.py runs/tiny_clip_neg train.max_steps=40   # a run folder: continue that run

The recipe keys, their defaults and a comment each: `python -m train.config RECIPE` prints a recipe resolved (every
key), train/config.py and models/config.py document them; a wrong key is reported with the valid ones beside it.

`main(cfg)` holds the run folder's lock (one writer per run); `train_run` is the plan, top to bottom: every check
that can fail before anything is written, run folder, model, data, trainer, resume, train. `Trainer` holds the
optimizer step and the checkpoints.

The loss of every optimizer step is the contrastive loss of the whole global batch, whatever the micro-batch and
the number of processes. With accumulation (several micro-batches per process and step) the step runs in two
passes, as GradCache and open_clip's accum_freq do: the features of every micro-batch without gradients, the loss
of the global batch on those features (gathered across processes) and its gradient with respect to each feature,
then each micro-batch again with gradients, back-propagating that feature gradient. Both passes of a micro-batch
see the same pixels (crops are seeded per sample) and the same random state (dropout).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from tqdm import tqdm

from data_prep.folder_lock import FolderBusy, FolderLock
from models import build_model, format_parameter_table, parameter_table
from models.contrastive import LOG_100
from models.memory import (
    check_fits,
    device_total_bytes,
    estimate_for_config,
    format_memory_estimate,
    format_memory_line,
)
from train.batch_planner import AUTO, plan_micro_batch, released_parts
from train.cache import CacheDamaged, prepare_recipe_caches, recipe_training_data
from train.checkpoints import (
    ENGINE,
    CheckpointError,
    finish_checkpoint,
    list_checkpoints,
    load_training_state,
    load_weights,
    resolve_resume,
    save_checkpoint,
    start_checkpoint,
    trainable_state,
)
from train.config import OptimConfig, RecipeConfig, is_run_folder, load_recipe
from train.cpu_threads import apply_threads, choose_threads, processes_on_host
from train.data import Batch, BatchPlan, ShardError, epoch_loader, index_shards, negatives_by_sample
from train.losses import build_loss
from train.process_group import use_cpu_group
from train.run_dir import MetricsLog, RunDirError, check_run_dir, write_caches_record, write_run_start
from train.tracking import Tracker
from train.typed_config import ConfigError, flatten, to_plain, to_yaml

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped on request with a checkpoint; rerun with train.resume=latest
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a Ctrl-C


class NonFinite(RuntimeError):
    """A non-finite loss, gradient or weight: the step is not applied and no checkpoint is written."""


NonFiniteLoss = NonFinite  # the name earlier versions raised


class Preempted(RuntimeError):
    pass


class StopRequest:
    """SIGTERM, SIGUSR1 (a scheduler's warning before its time limit) or a first Ctrl-C (SIGINT) asks for a
    checkpoint and an exit; a second Ctrl-C stops at once (KeyboardInterrupt, reported in one line by `cli`).

    The handler only sets a flag; the loop checks it between optimizer steps, agreed across processes, so
    every process saves together (saving is collective under DeepSpeed) and none from inside a handler.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self._previous = {sig: signal.signal(sig, self._request) for sig in self.SIGNALS}

    def _request(self, signum, frame) -> None:
        if signum == signal.SIGINT:
            if self.requested:
                raise KeyboardInterrupt  # the second Ctrl-C: stop now, without a checkpoint
            print(
                "\nfinetune: Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again stops at once)",
                file=sys.stderr,
                flush=True,
            )
        self.requested = True

    def restore(self) -> None:
        """The handlers from before: a caller that runs training in-process (a sweep, a notebook, the tests) must
        not keep a SIGTERM handler that only sets a flag, or its later subprocess pools cannot be terminated."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def agreed(self, accelerator: Accelerator) -> bool:
        return any_process(accelerator, self.requested)


@dataclass
class Position:
    """Where training stands in the data stream; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch
    step_in_epoch: int = 0  # optimizer steps done within the current epoch


@dataclass
class StepResult:
    loss: float  # the global batch's loss
    wait: float  # seconds spent waiting for data
    grad_norm: float  # of all trainable parameters, before clipping
    connector_grad_norm: float | None  # of the LLM2Vec connector, None without one
    skipped: bool = False  # fp16: the gradient scaler skipped the step (inf/NaN gradients); the weights are unchanged
    negatives: int = 0  # hard negatives in the global batch's loss
    negatives_identical: int = 0  # dropped: their tokens equal their caption's after truncation
    texts: int = 0  # texts the text tower encoded for the global batch: its captions plus its real negatives
    token_loss: float | None = None  # SPARC: the mean token-level term (in `loss` x model.head.fine_weight)


def enable_cpu_fp16(accelerator: Accelerator) -> None:
    """precision fp16 on a CPU process: accelerate would silently run fp32 there (it keeps no gradient scaler on
    CPU); turn on its own fp16 path, autocast and loss scaling, with torch's CPU GradScaler, so a CPU run trains as
    a GPU run under `--precision amp` does (the path the tests exercise)."""
    if accelerator.mixed_precision != "fp16" or accelerator.device.type != "cpu" or accelerator.native_amp:
        return
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return  # DeepSpeed scales fp16 losses itself
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu")


def main(cfg: RecipeConfig, argv: list[str]) -> None:
    accelerator = Accelerator(mixed_precision=cfg.train.accelerate_mixed_precision, cpu=use_cpu_group())
    enable_cpu_fp16(accelerator)
    # One writer per run folder: a second finetune of the same run stops here, before it writes anything.
    lock = FolderLock(Path(cfg.output_dir) / cfg.run_name, "finetune") if accelerator.is_main_process else None
    if lock is not None:
        lock.acquire()
    try:
        train_run(cfg, argv, accelerator)
    finally:
        if lock is not None:
            lock.release()


def train_run(cfg: RecipeConfig, argv: list[str], accelerator: Accelerator) -> None:
    is_main = accelerator.is_main_process
    threads = choose_threads(cfg.train.cpu_threads, processes_on_host(accelerator.num_processes), cfg.data.workers)
    apply_threads(threads)  # its share of the cores: torch's default of all of them oversubscribes a shared machine
    run_dir = check_run_dir(cfg)
    index = index_shards(
        cfg.data.shards, unrecorded=cfg.data.unrecorded_shards
    )  # a damaged shard stops the run here, before anything is written
    plan, total_steps = plan_steps(cfg, len(index), accelerator.num_processes)
    # The frozen parts whose outputs will come from a cache: freed once the caches are ready, so not counted.
    released = released_parts(cfg, total_steps * plan.global_batch, len(index))
    plan = choose_micro_batch(cfg, accelerator, plan, released)
    shown = check_memory(cfg, accelerator, plan, released)  # before any weights load: what cannot fit fails fast
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    if is_main:
        write_run_start(run_dir, cfg, argv, threads.as_record())

    torch.manual_seed(cfg.seed)
    bundle = build_model(cfg.model)  # applies the recipe's freezing and gradient checkpointing
    if is_main:
        if not shown:  # one parameter table: the memory estimate's (GPU) or this one (CPU)
            print(format_parameter_table(parameter_table(bundle.model)))
        for note in bundle.notes:  # e.g. a stand-in tokenizer in place of one that needs the hub
            print(f"note: {note}")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        configure_deepspeed(accelerator, plan, cfg.optim.grad_clip_norm)
    caches = prepare_recipe_caches(cfg, bundle, index, accelerator, trained_samples=total_steps * plan.global_batch)
    freed = bundle.model.release_frozen_parts(image=caches.image is not None, text=caches.text is not None)
    if is_main:
        print("\n".join(caches.notes))
        if freed:
            print(f"freed (their outputs come from the cache): {', '.join(freed)}")
        write_caches_record(run_dir, caches)
    if freed and torch.cuda.is_available():
        torch.cuda.empty_cache()
    samples, collate = recipe_training_data(cfg, bundle, index, caches)

    trainer = Trainer(cfg, accelerator, bundle.model, plan, total_steps, run_dir, Path(argv[0]).stem if argv else "")
    trainer.resume()
    if is_main:
        print(
            f"{len(index)} samples, {plan.steps_per_epoch} steps/epoch, {total_steps} steps, global batch "
            f"{plan.global_batch} = {plan.micro_batch} x {plan.world_size} processes x {plan.accumulation} "
            f"accumulation{' (two-pass: the loss is that of the whole global batch)' if plan.accumulation > 1 else ''}"
        )
    trainer.fit(samples, collate)


def plan_steps(cfg: RecipeConfig, samples: int, num_processes: int) -> tuple[BatchPlan, int]:
    """The batch plan and the number of optimizer steps, or ConfigError with every problem. With data.batch_size 0
    (auto) the micro-batch is the whole per-process batch here; `choose_micro_batch` then fits it to the device."""
    micro = cfg.data.batch_size or max(cfg.train.global_batch_size // num_processes, 1)
    plan = BatchPlan(samples, cfg.train.global_batch_size, micro, num_processes)
    problems = plan.problems()
    total_steps = plan.steps_per_epoch * cfg.train.epochs
    if cfg.train.max_steps:
        total_steps = min(total_steps, cfg.train.max_steps)
    if not problems and cfg.optim.warmup_steps >= total_steps:
        problems.append(f"optim.warmup_steps {cfg.optim.warmup_steps} >= {total_steps} steps")
    if problems:
        raise ConfigError("batch plan", problems)
    return plan, total_steps


def choose_micro_batch(
    cfg: RecipeConfig, accelerator: Accelerator, plan: BatchPlan, released: frozenset[str]
) -> BatchPlan:
    """`plan` with data.batch_size 0 (auto) resolved: the largest micro-batch that fits this device (CPU: one
    pass); the recipe's micro-batch otherwise."""
    if cfg.data.batch_size != AUTO:
        return plan
    plugin = accelerator.state.deepspeed_plugin
    chosen = plan_micro_batch(
        cfg, accelerator.num_processes, device_total_bytes(accelerator.device),
        zero_stage=plugin.zero_stage if plugin is not None else 0, released=released,
        texts_per_sample=2 if cfg.loss.uses_hard_negatives else 1,
    )  # fmt: skip
    if accelerator.is_main_process:
        print(f"micro-batch: {chosen.how}")
    return replace(plan, micro_batch=chosen.micro_batch)


def check_memory(
    cfg: RecipeConfig, accelerator: Accelerator, plan: BatchPlan, released: frozenset[str] = frozenset()
) -> bool:
    """On a GPU, prints the per-device memory estimate (with the parameters of each part) and returns True; raises
    ConfigError when it exceeds the GPU (train.check_memory). On a CPU there is nothing to fit: False, no table.
    `released`: the frozen parts training frees (their outputs come from a cache)."""
    plugin = accelerator.state.deepspeed_plugin
    estimate = estimate_for_config(
        cfg.model,
        plan.micro_batch,
        cfg.train.precision,
        accelerator.num_processes,
        plugin.zero_stage if plugin is not None else 0,
        texts_per_sample=2 if cfg.loss.uses_hard_negatives else 1,
        accumulation=plan.accumulation,
        released=released,
    )
    device_bytes = device_total_bytes(accelerator.device)
    if not device_bytes:  # a CPU run: nothing to fit, one line instead of the GPU table
        if accelerator.is_main_process:
            print(format_memory_line(estimate))
        return False
    if accelerator.is_main_process:
        print(format_memory_estimate(estimate))
    problems = check_fits(estimate, device_bytes)
    if problems and cfg.train.check_memory:
        raise ConfigError("memory estimate (train.check_memory=false to start anyway)", problems)
    if problems and accelerator.is_main_process:
        print("warning: " + "; ".join(problems), file=sys.stderr)
    return True


class Trainer:
    """The optimizer, the schedule, the training loop, one optimizer step, and the checkpoints of one run."""

    def __init__(
        self,
        cfg: RecipeConfig,
        accelerator: Accelerator,
        model: torch.nn.Module,
        plan: BatchPlan,
        total_steps: int,
        run_dir: Path,
        recipe: str = "",  # the recipe's name, for W&B tags
    ) -> None:
        self.cfg, self.accelerator, self.plan, self.total_steps = cfg, accelerator, plan, total_steps
        self.recipe = recipe
        self.is_main = accelerator.is_main_process
        self.deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
        # An alignment head scores pairs itself (no weights of its own: the loss may call it outside the wrapper)
        self.loss_fn = build_loss(cfg.loss.name, model.head.similarity if model.head is not None else None)
        # train.logit_scale_clamp: ln 100 for every model (the release), or no lower than the pretrained value
        self.logit_scale_ceiling = LOG_100 if cfg.train.logit_scale_clamp == "log100" else model.max_logit_scale
        if cfg.train.compile:
            compiled = model.compile_trainable_parts()
            if self.is_main:
                print(f"torch.compile (train.compile): {', '.join(compiled) or 'nothing trains'}")
        optimizer = build_optimizer(model, cfg.optim)
        # The scheduler stays unprepared: accelerate's wrapper would step it once per process per optimizer step.
        self.scheduler = build_scheduler(optimizer, cfg.optim, total_steps)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.raw = accelerator.unwrap_model(self.model)
        self.trainable = [p for p in self.raw.parameters() if p.requires_grad]
        connector = getattr(self.raw, "connector", None)
        self.connector = [p for p in connector.parameters() if p.requires_grad] if connector is not None else []
        self.position = Position()
        self.last_token_loss: float | None = None  # SPARC: the last step's mean token-level term
        self.run_dir = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")

    # --- the loop ---------------------------------------------------------------------------------------------

    def resume(self) -> None:
        """Loads `train.resume`'s checkpoint, if any, and drops the metrics logged after it (they are redone)."""
        resume_from = resolve_resume(self.checkpoints, self.cfg.train.resume)
        if resume_from is None:
            return
        if self.deepspeed:  # collective: every rank reads its own ZeRO partition
            self.accelerator.load_state(str(resume_from / ENGINE))
        else:
            load_weights(resume_from, self.raw)
        state = load_training_state(resume_from, None if self.deepspeed else self.optimizer, self.scheduler)
        self.position = Position(**state["position"])
        schedule_note = self._resume_schedule(state.get("schedule_steps"))
        if self.is_main:
            dropped = self.metrics.keep_until(self.position.step)
            print(
                f"resumed from {resume_from} at step {self.position.step} (epoch {self.position.epoch})"
                + (f"; {dropped} metrics lines after that step dropped" if dropped else "")
                + (f"; {schedule_note}" if schedule_note else "")
            )

    def _resume_schedule(self, recorded: int | None) -> str:
        """The lr schedule's length after a resume: the first start's (`recorded`, from the checkpoint) unless
        train.stretch_schedule; returns what a user should know about it ("" when nothing changed)."""
        schedule: Schedule = self.scheduler.lr_lambdas[0]
        if recorded is None or recorded == self.total_steps:  # checkpoints before the key: the current total
            return ""
        if not self.cfg.train.stretch_schedule:
            schedule.total_steps = recorded
            if self.total_steps > recorded:
                return (
                    f"the lr schedule keeps its length of {recorded} steps from the first start, so steps "
                    f"{recorded + 1}-{self.total_steps} run at its final lr (train.stretch_schedule=true spreads it "
                    f"over {self.total_steps})"
                )
            return ""
        # stretched: the lr of the next step comes from the new length, not from the optimizer's restored value
        schedule.total_steps = self.total_steps
        step = self.scheduler.last_epoch
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs, strict=True):
            group["lr"] = base * schedule(step)
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        return f"the lr schedule is stretched from {recorded} to {self.total_steps} steps (train.stretch_schedule)"

    def fit(self, samples, collate) -> None:
        stop = StopRequest()
        try:
            self._fit(samples, collate, stop)
        finally:
            stop.restore()

    def _fit(self, samples, collate, stop: StopRequest) -> None:
        cfg, plan, position = self.cfg, self.plan, self.position
        # Nothing left to train (a finished run resumed): no W&B run either.
        enabled = self.is_main and position.step < self.total_steps
        tracker = Tracker(cfg.wandb, cfg.run_name, self.run_dir, flatten(to_plain(cfg)), enabled, self.recipe)
        bar = tqdm(
            total=self.total_steps,
            initial=position.step,
            disable=not self.is_main,
            desc=cfg.run_name,
            dynamic_ncols=True,
            mininterval=0.1 if sys.stderr.isatty() else 30,  # cluster log files get a line every 30 s, not every step
        )
        window = LogWindow()
        self.model.train()
        while position.step < self.total_steps:
            stream = epoch_loader(
                samples,
                plan,
                collate,
                epoch=position.epoch,
                rank=self.accelerator.process_index,
                start_step=position.step_in_epoch,
                workers=cfg.data.workers,
            )
            while position.step_in_epoch < plan.steps_per_epoch and position.step < self.total_steps:
                lr = self.scheduler.get_last_lr()[0]  # the rate this step uses
                result = self.step(stream)
                position.step += 1
                position.step_in_epoch += 1
                window.add(result, lr, plan.global_batch)
                bar.update(1)
                if position.step % cfg.train.log_every_steps == 0 or position.step == self.total_steps:
                    record = window.record(
                        position,
                        self.raw,
                        fp16=cfg.train.precision == "fp16",
                        negatives=cfg.loss.uses_hard_negatives,
                    )
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", sps=record["samples_per_s"])
                    if self.is_main:
                        self.metrics.write(record)
                        tracker.log(record, step=position.step)
                saved = cfg.train.checkpoint_every_steps and position.step % cfg.train.checkpoint_every_steps == 0
                if saved:
                    self.checkpoint(f"step_{position.step}")
                if stop.agreed(self.accelerator):
                    if not saved:
                        self.checkpoint(f"step_{position.step}")
                    bar.close()
                    tracker.finish()
                    raise Preempted(
                        f"stopped on a signal at step {position.step}; checkpoint step_{position.step} written"
                    )
            if position.step_in_epoch == plan.steps_per_epoch:
                position.epoch += 1
                position.step_in_epoch = 0
                self.checkpoint(f"epoch_{position.epoch}")
            elif position.step == self.total_steps:
                self.checkpoint(f"step_{position.step}")
        bar.close()
        tracker.finish()
        if self.is_main:
            done = [p.name for p in list_checkpoints(self.checkpoints)]
            print(f"run folder: {self.run_dir}  checkpoints: {', '.join(done)}")

    # --- one optimizer step -----------------------------------------------------------------------------------

    def step(self, stream) -> StepResult:
        """One optimizer step on the global batch; nothing is applied unless loss and gradients are finite."""
        batches, wait = [], 0.0
        for _ in range(self.plan.accumulation):
            started = time.perf_counter()
            batches.append(next(stream).to(self.accelerator.device))
            wait += time.perf_counter() - started
        loss = self.accumulate_gradients(batches)
        grad_norm, connector_norm = self._gradient_norms(batches)
        if self.cfg.optim.grad_clip_norm and not self.deepspeed:  # DeepSpeed clips in its step, by its config
            # The gradients are already all-reduced (and unscaled under fp16), so the local norm is the global one.
            torch.nn.utils.clip_grads_with_norm_(self.trainable, self.cfg.optim.grad_clip_norm, torch.tensor(grad_norm))
        skipped = False
        if self.deepspeed:
            self.model.step()  # the engine: clipping, optimizer step, zero_grad
        else:
            self.optimizer.step()  # under fp16 the scaler's step: skipped when the gradients hold inf/NaN
            skipped = bool(getattr(self.optimizer, "step_was_skipped", False))
            self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()  # a skipped step still advances the schedule, as open_clip's per-step schedule does
        clamp_logit_scale(self.raw.logit_scale, self.logit_scale_ceiling, self.deepspeed)
        negatives, identical, texts = self._text_counts(batches)
        token_loss = self.last_token_loss if self.raw.reads_text_tokens else None
        return StepResult(loss, wait, grad_norm, connector_norm, skipped, negatives, identical, texts, token_loss)

    def _text_counts(self, batches: list[Batch]) -> tuple[int, int, int]:
        """Over the global batch (all processes): hard negatives in the loss, those dropped as identical to their
        caption, and the texts encoded (each micro-batch's rows as fed to the text tower, counted once per step)."""
        with_negatives = batches[0].negative_mask is not None
        local = [
            sum(int(b.negative_mask.sum()) for b in batches) if with_negatives else 0,
            sum(b.negatives_identical for b in batches),
            sum(b.texts_encoded for b in batches),
        ]
        if self.accelerator.num_processes > 1:  # one small all-reduce per step
            local = self.accelerator.reduce(torch.tensor(local, device=self.accelerator.device), reduction="sum")
        return int(local[0]), int(local[1]), int(local[2])

    def accumulate_gradients(self, batches: list[Batch]) -> float:
        """The global batch's loss; its gradients are in the parameters' `.grad` (all-reduced), not yet applied."""
        if len(batches) == 1:
            return self._step_in_one_pass(batches[0])
        return self._step_in_two_passes(batches)

    def _step_in_one_pass(self, batch: Batch) -> float:
        with self.accelerator.autocast():
            out = self.model_outputs(batch)
            loss = self._loss(out, batch)
            fine = self.raw.fine_grained_losses(out, len(batch))
        if fine is None:
            self._check_finite_loss(loss, [batch])
            self._backward(loss, last=True)
            return loss.item()
        fine_term = FineGrainedTerm.of(self.raw.head.fine_weight, [len(batch)], self.accelerator)
        total = loss.detach() + fine_term.weight * self._token_loss(fine_term, fine.detach().sum())
        self._check_finite_loss(total, [batch])
        self._backward(loss + fine_term.backward(fine), last=True)
        return total.item()

    def _step_in_two_passes(self, batches: list[Batch]) -> float:
        random_states = []
        features = []
        fine_sum = torch.zeros(())  # a token-level loss (SPARC): the sum of the samples' terms, for the reported loss
        with torch.no_grad():  # pass 1: features only, no activations kept
            for batch in batches:
                random_states.append(random_state())
                with self.accelerator.autocast():
                    features.append(self.model_outputs(batch, keep_frozen=True))
                    fine = self.raw.fine_grained_losses(features[-1], len(batch))
                fine_sum = fine_sum + (fine.sum() if fine is not None else 0.0)
        fine_term = None
        if self.raw.reads_text_tokens:
            fine_term = FineGrainedTerm.of(self.raw.head.fine_weight, [len(b) for b in batches], self.accelerator)
        # Pass 2 starts every micro-batch from pass 1's outputs of the frozen parts (a locked image tower, the
        # LLM2Vec LLM): the same values, without running those parts again.
        batches = [reuse_frozen(batch, out) for batch, out in zip(batches, features, strict=True)]
        leaves = FeatureLeaves.of(features, batches)
        with self.accelerator.autocast():
            loss = self.loss_fn(
                leaves.image,
                leaves.text,
                leaves.scale,
                leaves.bias,
                negative_features=leaves.negatives_by_sample(),
                negative_mask=leaves.negative_mask,
            )
        reported = loss.detach() + fine_term.weight * self._token_loss(fine_term, fine_sum) if fine_term else loss
        self._check_finite_loss(reported, batches)
        # d(global loss)/d(this process's features); under several processes the gather's backward is collective.
        grads = leaves.gradients(loss)
        last_micro = len(batches) - 1
        for micro, batch in enumerate(batches):  # pass 2: each micro-batch with gradients, one at a time
            set_random_state(random_states[micro])
            last = micro == last_micro
            sync = self.accelerator.no_sync(self.model) if not last and not self.deepspeed else nullcontext()
            with sync:
                with self.accelerator.autocast():
                    out = self.model_outputs(batch)
                surrogate = grads.surrogate(micro, out)
                if fine_term is not None:  # per sample: this micro-batch's own part, straight through autograd
                    surrogate = surrogate + fine_term.backward(self.raw.fine_grained_losses(out, len(batch)))
                self._backward(surrogate, last=last)
        return reported.item()

    def _token_loss(self, term: FineGrainedTerm, local_sum: torch.Tensor) -> torch.Tensor:
        """The global batch's mean token-level term, also kept for the metrics line (`token_loss`)."""
        mean = term.mean(local_sum, self.accelerator)
        self.last_token_loss = mean.item()
        return mean

    def model_outputs(self, batch: Batch, keep_frozen: bool = False) -> dict[str, torch.Tensor | None]:
        return self.model(
            batch.pixels,
            batch.text,
            image_frozen=batch.image_frozen,
            text_frozen=batch.text_frozen,
            keep_frozen=keep_frozen,
        )

    def _loss(self, out: dict, batch: Batch) -> torch.Tensor:
        n, mask = len(batch), batch.negative_mask
        text = out["text_features"]
        return self.loss_fn(
            out["image_features"],
            text[:n],
            out["logit_scale"],
            out["logit_bias"],
            negative_features=negatives_by_sample(text[n:], mask) if mask is not None else None,
            negative_mask=mask,
        )

    def _backward(self, loss: torch.Tensor, *, last: bool) -> None:
        if self.deepspeed:
            # The engine reduces gradients at the boundary; scale_wrt_gas=False because `loss` already is this
            # micro-batch's share of the global loss (DeepSpeed would otherwise divide by the accumulation).
            self.model.set_gradient_accumulation_boundary(is_boundary=last)
            self.model.backward(loss, scale_wrt_gas=False)
        else:
            self.accelerator.backward(loss)

    def _check_finite_loss(self, loss: torch.Tensor, batches: list[Batch]) -> None:
        if not torch.isfinite(loss):
            raise NonFinite(
                f"loss is {loss.item()} at step {self.position.step + 1} (epoch {self.position.epoch}); "
                f"batch sample keys on rank {self.accelerator.process_index}: {sample_keys(batches)}"
            )

    def _gradient_norms(self, batches: list[Batch]) -> tuple[float, float | None]:
        """Norms of the summed gradients (all-reduced: the same on every process); NonFinite if any is not finite.

        Under fp16 the gradient scaler skips a step with inf gradients by design, so nothing is raised there.
        """
        if self.deepspeed:
            from deepspeed.utils import safe_get_full_grad

            def grad(p):  # collective under ZeRO-3: every process asks for every parameter, in the same order
                return safe_get_full_grad(p)
        else:
            self.accelerator.unscale_gradients()  # fp16: norms of the true gradients (a no-op otherwise)

            def grad(p):
                return p.grad

        total = grad_norm([grad(p) for p in self.trainable])
        connector = grad_norm([grad(p) for p in self.connector]) if self.connector else None
        if not torch.isfinite(total) and self.cfg.train.precision != "fp16":
            raise NonFinite(
                f"gradients are not finite (norm {total.item()}) at step {self.position.step + 1} "
                f"(epoch {self.position.epoch}); the step was not applied; batch sample keys on rank "
                f"{self.accelerator.process_index}: {sample_keys(batches)}"
            )
        return total.item(), None if connector is None else connector.item()

    # --- checkpoints ------------------------------------------------------------------------------------------

    def checkpoint(self, name: str) -> None:
        """Writes `name` atomically and points `latest` at it; never with non-finite weights (NonFinite instead)."""
        accelerator, position = self.accelerator, self.position
        accelerator.wait_for_everyone()
        bad = [n for n, p in self.raw.named_parameters() if p.requires_grad and p.numel() and not p.isfinite().all()]
        if any_process(accelerator, bool(bad)):
            raise NonFinite(
                f"weights are not finite after step {position.step} ({', '.join(bad[:5]) or 'on another process'}); "
                f"checkpoint {name} not written, latest still names the last good one"
            )
        state = {"step": position.step, "position": vars(position),
                 "schedule_steps": self.scheduler.lr_lambdas[0].total_steps}  # fmt: skip
        if self.deepspeed:  # the optimizer states are partitioned across ranks: every rank writes its own
            tmp = start_checkpoint(self.checkpoints, name) if self.is_main else None
            accelerator.wait_for_everyone()
            accelerator.save_state(str(self.checkpoints / f".tmp-{name}" / ENGINE))
            full = accelerator.get_state_dict(self.model)  # collective under ZeRO-3 (gathers the 16-bit weights)
            if self.is_main:
                weights = trainable_state(self.raw, full)
                if not all(w.isfinite().all() for w in weights.values()):  # ZeRO-3: only the gathered copy shows it
                    raise NonFinite(f"weights are not finite after step {position.step}; checkpoint {name} not written")
                finish_checkpoint(
                    self.checkpoints, name, tmp, weights=weights, optimizer=None, scheduler=self.scheduler,
                    state=state, config_yaml=to_yaml(self.cfg),
                )  # fmt: skip
        elif self.is_main:
            save_checkpoint(
                self.checkpoints,
                name,
                model=self.raw,
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                state=state,
                config_yaml=to_yaml(self.cfg),
            )
        accelerator.wait_for_everyone()


# --- the two-pass step's features ---------------------------------------------------------------------------------


@dataclass
class FeatureLeaves:
    """This process's features of every micro-batch, concatenated, as leaves the global loss differentiates."""

    image: torch.Tensor  # (n, D)
    text: torch.Tensor  # (n, D): the captions
    negatives: torch.Tensor | None  # (k, D): the real hard negatives, in sample order
    negative_mask: torch.Tensor | None  # (n,) bool: the samples that have one
    scale: torch.Tensor  # exp(logit_scale), a leaf: every process's loss holds it directly
    bias: torch.Tensor | None
    rows: list[int]  # samples per micro-batch
    negative_rows: list[int]  # hard negatives per micro-batch

    @classmethod
    def of(cls, outputs: list[dict], batches: list[Batch]) -> FeatureLeaves:
        rows = [len(b) for b in batches]
        with_negatives = batches[0].negative_mask is not None
        text = [out["text_features"] for out in outputs]

        def leaf(tensor):
            return tensor.detach().requires_grad_(True)

        bias = outputs[0]["logit_bias"]
        return cls(
            image=leaf(torch.cat([out["image_features"] for out in outputs])),
            text=leaf(torch.cat([t[:n] for t, n in zip(text, rows, strict=True)])),
            negatives=leaf(torch.cat([t[n:] for t, n in zip(text, rows, strict=True)])) if with_negatives else None,
            negative_mask=torch.cat([b.negative_mask for b in batches]) if with_negatives else None,
            scale=leaf(outputs[0]["logit_scale"]),
            bias=None if bias is None else leaf(bias),
            rows=rows,
            negative_rows=[int(b.negative_mask.sum()) for b in batches] if with_negatives else [0] * len(rows),
        )

    def negatives_by_sample(self) -> torch.Tensor | None:
        return None if self.negatives is None else negatives_by_sample(self.negatives, self.negative_mask)

    def gradients(self, loss: torch.Tensor) -> FeatureGradients:
        inputs = [t for t in (self.image, self.text, self.negatives, self.scale, self.bias) if t is not None]
        found = iter(torch.autograd.grad(loss, inputs, allow_unused=True))
        image, text = next(found), next(found)
        negatives = next(found) if self.negatives is not None else None
        scale = next(found)
        bias = next(found) if self.bias is not None else None
        return FeatureGradients(image, text, negatives, scale, bias, self.rows, self.negative_rows)


@dataclass
class FeatureGradients:
    image: torch.Tensor | None
    text: torch.Tensor | None
    negatives: torch.Tensor | None  # (k, D), as FeatureLeaves.negatives
    scale: torch.Tensor | None
    bias: torch.Tensor | None
    rows: list[int]
    negative_rows: list[int]
    starts: list[int] = field(init=False)
    negative_starts: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.starts = [sum(self.rows[:i]) for i in range(len(self.rows))]
        self.negative_starts = [sum(self.negative_rows[:i]) for i in range(len(self.negative_rows))]

    def surrogate(self, micro: int, out: dict) -> torch.Tensor:
        """A scalar whose gradient through `out` is the global loss's gradient through this micro-batch.

        The logit scale and bias enter the loss once per step; their gradient is split evenly over the micro-batches
        (summed by accumulation), so every trainable parameter gets a gradient in every backward pass, as ZeRO-3's
        gradient partitioning expects.
        """
        n, start = self.rows[micro], self.starts[micro]
        part = slice(start, start + n)
        share = 1.0 / len(self.rows)
        text = out["text_features"]
        terms = [
            _dot(out["image_features"], self.image, part),
            _dot(text[:n], self.text, part),
            _dot(out["logit_scale"], self.scale, share=share),
        ]
        if self.negatives is not None:
            first = self.negative_starts[micro]
            terms.append(_dot(text[n:], self.negatives, slice(first, first + self.negative_rows[micro])))
        if out["logit_bias"] is not None:
            terms.append(_dot(out["logit_bias"], self.bias, share=share))
        return torch.stack([t.float() for t in terms]).sum()


@dataclass(frozen=True)
class FineGrainedTerm:
    """A per-sample loss term (SPARC's token-level loss) added to the global loss: weight x its mean over the
    global batch. Each sample's term involves no other sample, so each process differentiates only its own, and
    scaling by the number of processes undoes the average DDP takes of the gradients."""

    weight: float
    global_rows: int  # samples in the global batch (every micro-batch of every process)
    processes: int

    @classmethod
    def of(cls, weight: float, rows: list[int], accelerator: Accelerator) -> FineGrainedTerm:
        count = torch.tensor(sum(rows), device=accelerator.device)
        if accelerator.num_processes > 1:
            count = accelerator.reduce(count, reduction="sum")
        return cls(weight, int(count), accelerator.num_processes)

    def backward(self, losses: torch.Tensor) -> torch.Tensor:
        """What this process back-propagates for its samples' (n,) terms."""
        return losses.sum() * (self.weight * self.processes / self.global_rows)

    def mean(self, local_sum: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
        """The term's mean over the global batch (unweighted), the same on every process (one all-reduce)."""
        total = local_sum.to(accelerator.device)
        if self.processes > 1:
            total = accelerator.reduce(total, reduction="sum")
        return total / self.global_rows


def reuse_frozen(batch: Batch, out: dict) -> Batch:
    """`batch` with the frozen parts' outputs of a pass over it (`keep_frozen`) in place of their inputs."""
    image, text = out.pop("image_frozen", None), out.pop("text_frozen", None)
    if image is None and text is None:
        return batch
    return replace(
        batch,
        pixels=None if image is not None else batch.pixels,
        image_frozen=image if image is not None else batch.image_frozen,
        text=None if text is not None else batch.text,
        text_frozen=text if text is not None else batch.text_frozen,
    )


def _dot(output: torch.Tensor, grad: torch.Tensor | None, rows: slice | None = None, share: float = 1.0):
    if grad is None:  # the loss does not depend on it (e.g. the bias of a CLIP loss)
        return output.sum() * 0
    grad = grad[rows] if rows is not None else grad
    return (output * (grad * share).to(output.dtype)).sum()


def random_state() -> tuple:
    """The random state dropout draws from: CPU and, where present, the current CUDA device."""
    return torch.get_rng_state(), torch.cuda.get_rng_state() if torch.cuda.is_available() else None


def set_random_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda)


# --- small pieces -------------------------------------------------------------------------------------------------


def any_process(accelerator: Accelerator, flag: bool) -> bool:
    """Whether `flag` holds on any process (a collective: every process must call it)."""
    if accelerator.num_processes == 1:
        return flag
    tensor = torch.tensor([float(flag)], device=accelerator.device)
    return bool(accelerator.reduce(tensor, reduction="sum").item() > 0)


def sample_keys(batches: list[Batch]) -> list[str]:
    return [key for batch in batches for key in batch.keys]


def grad_norm(grads: list[torch.Tensor | None]) -> torch.Tensor:
    present = [g.detach().float() for g in grads if g is not None]
    if not present:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))


def clamp_logit_scale(param: torch.nn.Parameter, ceiling: float, deepspeed: bool) -> None:
    """As open_clip: keep the temperature in [1, e^ceiling], where the ceiling is log 100 or, by
    train.logit_scale_clamp, the pretrained value if that is higher (models.contrastive). Under DeepSpeed the fp32
    master copy is what steps on."""
    with torch.no_grad():
        if deepspeed:
            from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

            safe_set_full_fp32_param(param, safe_get_full_fp32_param(param).clamp(0, ceiling))
        if param.numel():  # a ZeRO-3 partitioned parameter is empty here; its master copy was clamped above
            param.clamp_(0, ceiling)


def configure_deepspeed(accelerator: Accelerator, plan: BatchPlan, grad_clip_norm: float) -> None:
    """DeepSpeed steps by its own config: give it the recipe's batch plan and clipping so both agree."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = plan.micro_batch
    config["gradient_accumulation_steps"] = plan.accumulation
    config["train_batch_size"] = plan.global_batch
    config["gradient_clipping"] = grad_clip_norm  # 0 = none
    accelerator.gradient_accumulation_steps = plan.accumulation


class LogWindow:
    """Sums over the steps since the last metrics line."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.loss = self.wait = self.grad_norm = self.connector_grad_norm = 0.0
        self.steps = self.samples = self.skipped = self.negatives = self.negatives_identical = self.texts = 0
        self.lr = 0.0
        self.has_connector = False
        self.token_loss, self.has_token_loss = 0.0, False
        self.start = time.perf_counter()

    def add(self, result: StepResult, lr: float, samples: int) -> None:
        self.loss += result.loss
        self.wait += result.wait
        self.grad_norm += result.grad_norm
        if result.connector_grad_norm is not None:
            self.has_connector = True
            self.connector_grad_norm += result.connector_grad_norm
        if result.token_loss is not None:
            self.has_token_loss = True
            self.token_loss += result.token_loss
        self.steps += 1
        self.samples += samples
        self.lr = lr
        self.skipped += result.skipped
        self.negatives += result.negatives
        self.negatives_identical += result.negatives_identical
        self.texts += result.texts

    def record(self, position: Position, model, *, fp16: bool = False, negatives: bool = False) -> dict:
        elapsed = time.perf_counter() - self.start
        record = {
            "step": position.step,
            "epoch": position.epoch,
            "loss": self.loss / self.steps,
            "lr": self.lr,
            "logit_scale": model.logit_scale.exp().item(),
            "grad_norm": self.grad_norm / self.steps,
            "samples_per_s": round(self.samples / elapsed, 1),
            "texts_per_step": self.texts / self.steps,  # captions + real negatives the text tower encoded
            "data_wait_share": round(self.wait / elapsed, 3),
        }
        if self.has_connector:
            record["connector_grad_norm"] = self.connector_grad_norm / self.steps
        if self.has_token_loss:  # SPARC's token-level term, unweighted: loss = global + fine_weight x this
            record["token_loss"] = self.token_loss / self.steps
        if negatives:  # per step: real negatives in the loss, and those dropped as equal to their caption's tokens
            record["negatives_per_step"] = self.negatives / self.steps
            record["negatives_identical"] = self.negatives_identical
        if fp16:  # steps in this window the gradient scaler skipped (inf/NaN gradients): normal under fp16
            record["skipped_steps"] = self.skipped
        self.reset()
        return record


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW; norms, biases and the logit scale/bias (all < 2-D) get no weight decay, as in open_clip."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "logit_" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


@dataclass
class Schedule:
    """Linear warmup, then cosine to zero over `total_steps` (or constant): the lr factor of an optimizer step.
    `total_steps` is the schedule's length, which a resume may keep from the first start (train.stretch_schedule)."""

    warmup_steps: int
    kind: str
    total_steps: int

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """A LambdaLR over Schedule (its `lr_lambdas[0]`), stepped once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule(cfg.warmup_steps, cfg.schedule, total_steps))


def cli(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(__doc__)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    overrides = argv[1:]
    if is_run_folder(argv[0]) and not any(o.startswith("train.resume=") for o in overrides):
        overrides = [*overrides, "train.resume=latest"]  # a run folder given: continue that run
    try:
        cfg = load_recipe(argv[0], overrides, paths="error")
        main(cfg, argv)
    except ConfigError as err:  # the recipe (or what it names) is wrong: exit 2, as every tool's config error
        if int(os.environ.get("RANK", "0") or 0) == 0:  # under accelerate launch every process finds it: say it once
            print(f"finetune: {err}", file=sys.stderr)
        return 2
    except (
        RunDirError, NonFinite, ShardError, FileNotFoundError, CheckpointError, FolderBusy, CacheDamaged,
    ) as err:  # fmt: skip
        # A DataLoader worker's error arrives wrapped in torch's "Caught ... Original Traceback"; its last line
        # is the message.
        message = str(err).strip().splitlines()[-1] if "Original Traceback" in str(err) else str(err)
        print(f"finetune: {message}", file=sys.stderr)
        return 1
    except Preempted as err:
        print(f"finetune: {err}; continue with train.resume=latest", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:  # Ctrl-C twice, or once before training started: no traceback
        print(
            "finetune: interrupted; the last checkpoint written stays (train.resume=latest continues)", file=sys.stderr
        )
        return INTERRUPTED_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
