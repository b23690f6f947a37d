"""The micro-batch of a run: the recipe's `data.batch_size`, or with `data.batch_size: 0` (auto) the largest that fits.

The loss and gradients are those of the global batch for any micro-batch (the two-pass step), so the micro-batch
only trades memory for speed: one pass per step (micro-batch = global batch / processes) pays no second forward of
the trainable parts. Auto takes the largest divisor of the per-process batch whose memory estimate
(models/memory.py) fits the device less its headroom, counting the frozen parts whose outputs come from a feature
cache as freed (training frees them). On a CPU (no device limit) auto is one pass.

    plan = plan_micro_batch(cfg, processes=4, device_bytes=80 * 2**30)
    plan.micro_batch, plan.estimate, plan.tried
"""

from __future__ import annotations

from dataclasses import dataclass, field

from models.memory import MemoryEstimate, check_fits, estimate_for_model, model_on_meta
from train.cache import image_cache_blocker, text_cache_blocker
from train.config import RecipeConfig

AUTO = 0  # data.batch_size: 0 = the planner picks


def released_parts(cfg: RecipeConfig, trained_samples: int | None, samples: int | None) -> frozenset[str]:
    """The memory estimate's parts a run frees because their outputs come from a cache, predicted from the config
    (train/cache.py's rules; cache=auto builds one only when trained_samples >= samples). A cache=auto run too
    short to build one may still find one built: it then frees the part though this says no (the safe side)."""
    if cfg.cache == "off":
        return frozenset()
    if cfg.cache == "auto" and trained_samples is not None and samples is not None and trained_samples < samples:
        return frozenset()
    out = set()
    if image_cache_blocker(cfg.model, cfg.data.augment) is None:
        out.add("image")
    if text_cache_blocker(cfg.model) is None:
        out.add("llm" if cfg.model.text.tower == "llm2vec" else "text")
    return frozenset(out)


@dataclass(frozen=True)
class MicroBatchPlan:
    micro_batch: int
    accumulation: int
    estimate: MemoryEstimate | None  # of the chosen micro-batch (None when nothing was estimated)
    how: str  # in words: given by the recipe, or what the planner chose and why
    tried: list[tuple[int, float]] = field(default_factory=list)  # (micro-batch, estimated GiB), largest first


def local_batch(cfg: RecipeConfig, processes: int) -> int:
    return cfg.train.global_batch_size // max(processes, 1)


def plan_micro_batch(
    cfg: RecipeConfig,
    processes: int,
    device_bytes: int | None,
    *,
    zero_stage: int = 0,
    released: frozenset[str] = frozenset(),
    texts_per_sample: int = 2,
) -> MicroBatchPlan:
    """The recipe's micro-batch, or (auto) the largest divisor of the per-process batch that fits `device_bytes`
    (None: no limit, one pass). `texts_per_sample` 2 with hard negatives: the worst micro-batch, every sample with
    one."""
    per_process = local_batch(cfg, processes)
    if cfg.data.batch_size != AUTO:
        micro = cfg.data.batch_size
        return MicroBatchPlan(micro, per_process // max(micro, 1), None, f"data.batch_size {micro} (the recipe)")
    if device_bytes is None:
        return MicroBatchPlan(per_process, 1, None, f"auto: {per_process}, one pass (no device memory limit)")
    model = model_on_meta(cfg.model)  # once; each candidate is an estimate over the same parameters
    tried = []
    candidates = [m for m in range(per_process, 0, -1) if per_process % m == 0]
    for micro in candidates:
        est = estimate_for_model(
            model, cfg.model, micro, cfg.train.precision, processes, zero_stage,
            texts_per_sample=texts_per_sample, accumulation=per_process // micro, released=released,
        )  # fmt: skip
        tried.append((micro, est.total_bytes / 2**30))
        if not check_fits(est, device_bytes):
            passes = "one pass" if micro == per_process else f"{per_process // micro} micro-batches, two passes"
            freed = f"; freed: {', '.join(sorted(released))} (from the cache)" if released else ""
            how = (f"auto: {micro} ({passes}), the largest of {per_process}'s divisors whose estimate "
                   f"({est.total_bytes / 2**30:.1f} GiB) fits {device_bytes / 2**30:.0f} GiB{freed}")  # fmt: skip
            return MicroBatchPlan(micro, per_process // micro, est, how, tried)
    smallest = candidates[-1]
    return MicroBatchPlan(smallest, per_process // smallest, est, f"auto: nothing fits; {smallest} (the smallest)",
                          tried)  # fmt: skip
