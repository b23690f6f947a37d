"""GPU check behind `make gpu-check`: full-size models with random weights, bf16, one GPU, under 9 minutes.

    python bench/gpu_check.py [--out bench/gpu_results.json] [--only PART] [--budget-s 540] [--peak-tflops T]
    python bench/gpu_check.py --cpu-smoke --out /tmp/smoke.json     # the same code path, tiny models on the CPU

Writes bench/gpu_results.json and prints a Markdown table. Nothing is downloaded: `model.pretrained=random`
builds the presets at full size with seeded random weights, `random:llama-2-7b-chat` the LLM2Vec LLM at
Llama-2-7B widths (all 32 layers, bf16), and the data is a generated world (`data_prep.toyworld --scale medium`,
7,000 samples; its images are 224-336 px and the transforms resize them to 336 / 384 px) converted by
`data_prep.build_shards`, in a temporary folder.

Parts, each in its own subprocess with its own timeout inside one overall budget (a part that fails or runs out
of time is recorded with its error and the others still run):

| part | recipe, as run | micro-batch x accumulation = global | launch |
|---|---|---|---|
| clip_neg | CLIP ViT-L/14-336, image locked, NegCLIP | 128 x 2 = 256 (two-pass step) | python, 1 GPU |
| siglip_unlocked_neg | SigLIP ViT-L/16-384, everything trains | 64 x 2 = 128 (two-pass step) | DeepSpeed ZeRO-2, 1 process |
| siglip_llm2vec_neg | SigLIP locked + frozen 7B LLM2Vec (bf16) + connector | 128 x 1 = 128 | python, 1 GPU |

Every part trains with `cache=off` (the frozen towers run in every step: what a step of each model costs; the
recipes' default `cache: auto` trains from cached frozen outputs instead) and `data.workers=8`. The clip_neg part
then builds the locked image tower's feature cache over all 7,000 samples with train/cache.py's
`build_image_cache` (the path `cache: auto` and `python -m train.cache` take) and reports images/s.

Per part: one warm-up step whose FLOPs torch.utils.flop_counter.FlopCounterMode counts, then N timed steps of
train/finetune.py's own `Trainer.step` (data wait included, CUDA synchronised around each); seconds per step is
their median. samples/s = global batch / s per step. Model FLOPs are the counted FLOPs of the step less the
gradient-free first pass of two-pass accumulation (a recomputation; counted in the hardware FLOPs, HFU); the frozen
towers' forwards count as model FLOPs. MFU = model FLOPs per step / s per step / peak, with the peak bf16 dense
tensor-core rate of the card named by torch.cuda.get_device_name (PEAK_BF16_DENSE_TFLOPS; e.g. H100 SXM 989
TFLOP/s; `--peak-tflops` overrides; the JSON says which was assumed). Peak memory is
torch.cuda.max_memory_allocated over the whole worker (weights, optimizer, the steps), set against the per-device
estimate of models/memory.py for the same micro-batch, accumulation, precision and ZeRO stage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ZERO2_CONFIG = REPO / "launch" / "accelerate" / "deepspeed_zero2.yaml"
GIB = 1024**3

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s; first substring match of
# torch.cuda.get_device_name() wins, so the specific names come first ("GH200" also contains "H200").
PEAK_BF16_DENSE_TFLOPS: tuple[tuple[str, float, str], ...] = (
    ("GH200", 989.4, "GH200 (H100 SXM tensor cores)"),
    ("H200 NVL", 835.5, "H200 NVL"),
    ("H200", 989.4, "H200 SXM"),
    ("H100 NVL", 835.5, "H100 NVL"),
    ("H100 PCIe", 756.5, "H100 PCIe"),
    ("H100", 989.4, "H100 SXM (HBM3)"),
    ("A100", 312.0, "A100"),
    ("L40S", 362.1, "L40S"),
)


def peak_tflops(device_name: str, override: float | None = None) -> tuple[float | None, str]:
    """(peak bf16 dense TFLOP/s, what was assumed) for a CUDA device name; (None, why) when unknown."""
    if override:
        return override, f"{override} TFLOP/s given with --peak-tflops"
    for key, tflops, what in PEAK_BF16_DENSE_TFLOPS:
        if key in device_name:
            return (
                tflops,
                f"{what}: {tflops} TFLOP/s bf16 dense (NVIDIA data sheet), matched {key!r} in {device_name!r}",
            )
    return None, f"no known bf16 peak for {device_name!r}: MFU not computed (pass --peak-tflops)"


# ---------------------------------------------------------------------------------------------------------------
# The parts


@dataclass(frozen=True)
class Part:
    name: str
    recipe: str  # recipes/<recipe>.yaml
    overrides: tuple[str, ...]
    timeout_s: int
    zero2: bool = False  # accelerate launch with launch/accelerate/deepspeed_zero2.yaml, one process
    cache_build: bool = False  # after the steps, time the locked image tower's feature cache build
    text_cache_build: bool = False  # after the steps, time the LLM2Vec LLM's text cache build (every caption, negative)
    what: str = ""


GPU_COMMON = ("model.pretrained=random", "train.precision=bf16", "cache=off", "data.workers=8")
GPU_PARTS = (
    Part(
        "clip_neg",
        "clip_neg",
        (*GPU_COMMON, "data.batch_size=128", "train.global_batch_size=256"),
        timeout_s=120,
        cache_build=True,
        what="CLIP ViT-L/14-336 (random), image locked, NegCLIP; 128 x 2 two-pass",
    ),
    Part(
        "siglip_unlocked_neg",
        "siglip_unlocked_neg",
        (*GPU_COMMON, "data.batch_size=0", "train.global_batch_size=128"),
        timeout_s=150,
        zero2=True,
        what="SigLIP ViT-L/16-384 (random), both towers train, DeepSpeed ZeRO-2 on 1 process; the planned micro-batch "
        "of 128 (data.batch_size 0: the largest that fits)",
    ),
    Part(
        "siglip_llm2vec_neg",
        "siglip_llm2vec_neg",
        (
            *GPU_COMMON,
            "model.text.llm2vec.base_model=random:llama-2-7b-chat",
            "data.batch_size=128",
            "train.global_batch_size=128",
        ),
        timeout_s=210,
        text_cache_build=True,
        what="SigLIP locked + frozen 32-layer 7B LLM2Vec (random, bf16) + connector; 128 x 1; then its LLM cache build",
    ),
    Part(
        "clip_neg_compiled",
        "clip_neg",
        (*GPU_COMMON, "data.batch_size=128", "train.global_batch_size=256", "train.compile=true"),
        timeout_s=180,
        what="clip_neg with train.compile=true (torch.compile of the trainable text tower, dynamic shapes): its "
        "seconds per step against clip_neg's",
    ),
    Part(
        "clip_pacl_neg",
        "clip_pacl_neg",
        (*GPU_COMMON, "data.batch_size=128", "train.global_batch_size=256"),
        timeout_s=120,
        what="CLIP ViT-L/14-336 (random) locked, a PACL head on its 576 patch tokens (both towers frozen), NegCLIP; "
        "128 x 2 two-pass: the pair scores' time and memory against the dot product's",
    ),
    Part(
        "clip_sparc_neg",
        "clip_sparc_neg",
        (*GPU_COMMON, "data.batch_size=128", "train.global_batch_size=256"),
        timeout_s=120,
        what="CLIP ViT-L/14-336 (random) locked, a SPARC head: 77 text tokens x 576 patches per sample, the text "
        "tower in both passes, the token-level loss in float32 under bf16; 128 x 2 two-pass",
    ),
)
# The same parts with the tiny CPU recipes: what `make test` runs (tests/test_gpu_check.py).
SMOKE_COMMON = ("cache=off", "data.workers=0")
SMOKE_PARTS = (
    Part(
        "clip_neg",
        "tiny_clip_neg",
        (*SMOKE_COMMON, "data.batch_size=8", "train.global_batch_size=16"),
        timeout_s=90,
        cache_build=True,
        what="tiny-clip stand-in; 8 x 2 two-pass",
    ),
    Part(
        "siglip_unlocked_neg",
        "tiny_siglip_neg",
        (*SMOKE_COMMON, "model.image.locked=false", "data.batch_size=8", "train.global_batch_size=16"),
        timeout_s=120,
        zero2=True,
        what="tiny-siglip stand-in, both towers train, ZeRO-2 on 1 CPU process; 8 x 2 two-pass",
    ),
    Part(
        "siglip_llm2vec_neg",
        "tiny_clip_llm2vec_neg",
        (*SMOKE_COMMON, "data.batch_size=8", "train.global_batch_size=8"),
        timeout_s=90,
        text_cache_build=True,
        what="tiny-clip + tiny LLM2Vec stand-in; 8 x 1; then its LLM cache build",
    ),
    Part(
        "clip_neg_compiled",
        "tiny_clip_neg",
        (*SMOKE_COMMON, "data.batch_size=8", "train.global_batch_size=16", "train.compile=true"),
        timeout_s=300,
        what="tiny-clip stand-in, train.compile=true; 8 x 2 two-pass",
    ),
    Part(
        "clip_pacl_neg",
        "tiny_clip_pacl_neg",
        (*SMOKE_COMMON, "data.batch_size=8", "train.global_batch_size=16"),
        timeout_s=90,
        what="tiny-clip stand-in with a PACL head; 8 x 2 two-pass",
    ),
    Part(
        "clip_sparc_neg",
        "tiny_clip_sparc_neg",
        (*SMOKE_COMMON, "data.batch_size=8", "train.global_batch_size=16"),
        timeout_s=90,
        what="tiny-clip stand-in with a SPARC head; 8 x 2 two-pass",
    ),
)
PART_NAMES = tuple(p.name for p in GPU_PARTS)

# LLaVA-1.5-7B at its real widths with random weights (CLIP ViT-L/14-336 vision tower, 2-layer projector, the
# 32-layer Llama-2-7B language model; the tiny LLaVA's tokenizer, whose ids fit the 32,064-row vocabulary), bf16:
# eval.llava's runner on What'sUp A of the generated world, generative (greedy, LLAVA_NEW_TOKENS new tokens) and
# vqascore (P(yes) of caption pairs), batches of LLAVA_BATCH. The smoke mode runs the tiny LLaVA on the CPU.
LLAVA_BATCH, LLAVA_NEW_TOKENS, LLAVA_TIMED = 8, 16, 3
LLAVA_TIMEOUT_S = {"gpu": 150, "smoke": 90}
LLAVA_7B = {
    "vision": dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=336, patch_size=14, projection_dim=768),
    "text": dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096),
}  # fmt: skip


@dataclass(frozen=True)
class Mode:
    parts: tuple[Part, ...]
    scale: str  # generated world
    timed_steps: int
    shard_workers: int
    shards_timeout_s: int
    env: dict[str, str] = field(default_factory=dict)
    launch_precision: tuple[str, ...] = ()  # extra accelerate launch flags for the ZeRO-2 part


GPU = Mode(GPU_PARTS, "medium", timed_steps=4, shard_workers=8, shards_timeout_s=120)
SMOKE = Mode(
    SMOKE_PARTS,
    "small",
    timed_steps=2,
    shard_workers=1,
    shards_timeout_s=60,
    env={"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    launch_precision=("--mixed_precision", "no"),
)


# ---------------------------------------------------------------------------------------------------------------
# Subprocesses with a timeout


def run_part(
    command: list[str], *, timeout_s: float, log: Path, result: Path | None = None, env: dict | None = None
) -> dict:
    """Runs `command` (output to `log`), at most `timeout_s`; {status, wall_s, ...} with what `result` holds.

    status: ok, failed (exit status != 0) or timeout; the figures a worker wrote to `result` before it failed or
    ran out of time are kept, and `error` holds the reason and the log's last lines.
    """
    started = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            rc = process.wait(timeout=max(timeout_s, 0.1))
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)  # its own session: the launcher, the worker and its data workers
            process.wait()
            rc, status = None, "timeout"
    record: dict = {}
    if result is not None and result.exists():
        with contextlib.suppress(ValueError):
            record = json.loads(result.read_text())
    record.update(status=status, wall_s=round(time.perf_counter() - started, 1))
    if status != "ok":
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        why = f"timed out after {timeout_s:.0f} s" if status == "timeout" else f"exit status {rc}"
        record["error"] = f"{why}; last lines of {log.name}:\n{tail}"
    return record


def shard_commands(scratch: Path, scale: str, workers: int) -> list[list[str]]:
    world, shards = scratch / "world", scratch / "shards"
    llava = world / "llava"
    return [
        [sys.executable, "-m", "data_prep.toyworld", "--out", str(world), "--seed", "0", "--scale", scale],
        [
            *(sys.executable, "-m", "data_prep.build_shards", "--out", str(shards), "--shard-size", "1000"),
            *("--workers", str(workers), "--overwrite"),
            *("--dataset", "lcs558k", "--json", str(llava / "blip_laion_cc_sbu_558k.json")),
            *("--image-root", str(llava / "images")),
            *("--dataset", "mix665k", "--json", str(llava / "llava_v1_5_mix665k.json"), "--image-root", str(llava)),
        ],
    ]


def worker_command(spec: Path, *, zero2: bool = False, launch_flags: tuple[str, ...] = ()) -> list[str]:
    script = [str(BENCH / "gpu_check.py"), "--worker", str(spec)]
    if not zero2:
        return [sys.executable, *script]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ZERO2_CONFIG)]
    return [*launch, "--num_processes", "1", *launch_flags, *script]


def part_spec(part: Part, shards: Path, scratch: Path, timed_steps: int) -> dict:
    """What the worker runs: the recipe with the part's overrides, and where it writes."""
    folder = scratch / part.name
    overrides = [
        f"data.shards=[{shards}]",
        f"output_dir={folder / 'runs'}",
        f"run_name={part.name}",
        f"cache_dir={folder / 'feature_cache'}",
        "wandb.mode=disabled",
        "optim.warmup_steps=1",
        f"train.max_steps={timed_steps + 1}",
        *part.overrides,
    ]
    return {
        "name": part.name,
        "recipe": str(REPO / "recipes" / f"{part.recipe}.yaml"),
        "overrides": overrides,
        "timed_steps": timed_steps,
        # FlopCounterMode sees aten ops, not a compiled graph's kernels: a compiled part is timed, not counted
        "count_flops": "train.compile=true" not in part.overrides,
        "cache_build": part.cache_build,
        "text_cache_build": part.text_cache_build,
        "run_dir": str(folder / "run"),
        "result": str(folder / "result.json"),
    }


# ---------------------------------------------------------------------------------------------------------------
# The worker: one recipe, in its own process (under accelerate launch for DeepSpeed)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def worker(spec_path: Path) -> int:
    """Trains `timed_steps` (+1 counted warm-up) steps of a recipe with train/finetune.py's Trainer and writes its
    raw figures to spec["result"] after each phase (so a timeout still leaves what was measured)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from models import build_model
    from models.memory import check_fits, estimate_for_config
    from train.cache import (
        Processes,
        build_image_cache,
        build_text_cache,
        prepare_recipe_caches,
        recipe_training_data,
    )
    from train.config import load_recipe
    from train.data import epoch_loader, index_shards
    from train.finetune import Trainer, choose_micro_batch, configure_deepspeed, plan_steps
    from train.process_group import use_cpu_group

    spec = json.loads(Path(spec_path).read_text())
    if spec.get("kind") == "llava":
        return llava_worker(spec)
    out_path = Path(spec["result"])
    raw: dict = {"phase": "setup"}

    def write(**update) -> None:
        raw.update(update)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw, indent=1))
        os.replace(tmp, out_path)

    cfg = load_recipe(spec["recipe"], spec["overrides"], paths="error")
    skip_cpu_shared_memory_op()
    accelerator = Accelerator(mixed_precision=cfg.train.accelerate_mixed_precision, cpu=use_cpu_group())
    device = accelerator.device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    index = index_shards(cfg.data.shards, unrecorded=cfg.data.unrecorded_shards)
    plan, total_steps = plan_steps(cfg, len(index), accelerator.num_processes)
    plan = choose_micro_batch(cfg, accelerator, plan, frozenset())  # data.batch_size 0: as training plans it
    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    plugin = accelerator.state.deepspeed_plugin
    zero_stage = plugin.zero_stage if plugin is not None else 0
    texts = 2 if cfg.loss.uses_hard_negatives else 1
    estimate = estimate_for_config(
        cfg.model, plan.micro_batch, cfg.train.precision, accelerator.num_processes, zero_stage,
        texts_per_sample=texts, accumulation=plan.accumulation,
    )  # fmt: skip
    write(
        recipe=Path(spec["recipe"]).stem,
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        device_total_bytes=torch.cuda.get_device_properties(device).total_memory if cuda else None,
        precision=cfg.train.precision,
        zero_stage=zero_stage,
        deepspeed=deepspeed,
        num_processes=accelerator.num_processes,
        micro_batch=plan.micro_batch,
        accumulation=plan.accumulation,
        global_batch=plan.global_batch,
        samples_in_shards=len(index),
        estimate_total_bytes=estimate.total_bytes,
        estimate_problems=check_fits(estimate, torch.cuda.get_device_properties(device).total_memory) if cuda else [],
        estimate_parts={
            "weights": estimate.weight_bytes,
            "gradients": estimate.gradient_bytes,
            "adamw": estimate.optimizer_bytes,
            "activations": estimate.activation_bytes,
            "two_pass_features": estimate.feature_bytes,
        },
    )

    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    bundle = build_model(cfg.model)
    if deepspeed:
        configure_deepspeed(accelerator, plan, cfg.optim.grad_clip_norm)
    caches = prepare_recipe_caches(cfg, bundle, index, accelerator)  # cache=off: none, as finetune.main would
    samples, collate = recipe_training_data(cfg, bundle, index, caches)
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, accelerator, bundle.model, plan, total_steps, run_dir)
    trainer.model.train()
    sync()
    write(phase="steps", build_s=round(time.perf_counter() - started, 2), notes=list(bundle.notes))

    stream = epoch_loader(samples, plan, collate, epoch=0, rank=accelerator.process_index, workers=cfg.data.workers)
    rss_before_steps = current_rss_bytes()
    losses = []
    counted = False
    if spec.get("count_flops", True):
        try:
            hardware, recompute = count_step_flops(trainer, stream)
            write(hardware_flops_per_step=hardware, recompute_flops_per_step=recompute)
            counted = True
        except Exception as err:  # the timings still count: record why there is no MFU and go on
            write(flops_error=f"{type(err).__name__}: {err}")
            if not deepspeed:
                trainer.optimizer.zero_grad(set_to_none=True)
    if not counted:  # a plain warm-up step
        trainer.step(stream)
    sync()
    seconds, waits = [], []
    for _ in range(spec["timed_steps"]):
        begin = time.perf_counter()
        result = trainer.step(stream)
        sync()
        seconds.append(time.perf_counter() - begin)
        waits.append(result.wait)
        losses.append(result.loss)
    write(
        phase="cache" if spec.get("cache_build") or spec.get("text_cache_build") else "done",
        step_seconds=[round(s, 5) for s in seconds],
        data_wait_seconds=[round(w, 5) for w in waits],
        losses=losses,
        peak_gpu_allocated_bytes=torch.cuda.max_memory_allocated(device) if cuda else None,
        peak_gpu_reserved_bytes=torch.cuda.max_memory_reserved(device) if cuda else None,
        peak_rss_bytes=peak_rss_bytes(),
        rss_before_steps_bytes=rss_before_steps,
    )
    del stream

    def timed_build(build) -> tuple[int, float]:
        """(rows, seconds) of one cache build, the device synchronised on both sides."""
        sync()
        begin = time.perf_counter()
        store = build()
        sync()
        return int(store.features.shape[0]), time.perf_counter() - begin

    if spec.get("cache_build"):
        rows, seconds = timed_build(
            lambda: build_image_cache(
                Path(cfg.cache_dir), bundle, index, cfg.data.shards, precision=cfg.train.precision,
                batch_size=plan.micro_batch, workers=cfg.data.workers, device=device, autocast=accelerator.autocast,
                processes=Processes(),
            )
        )  # fmt: skip
        write(
            phase="done",
            cache_build={
                "images": rows,
                "seconds": round(seconds, 3),
                "images_per_s": round(rows / seconds, 1),
                "batch_size": plan.micro_batch,
                "workers": cfg.data.workers,
                "how": "train.cache.build_image_cache (read, decode, eval transform, locked image tower, write)",
            },
        )
    if spec.get("text_cache_build"):
        rows, seconds = timed_build(
            lambda: build_text_cache(
                Path(cfg.cache_dir), bundle, index, cfg.data.shards, caption_policy=cfg.data.caption_policy,
                precision=cfg.train.precision, batch_size=plan.micro_batch, device=device,
                autocast=accelerator.autocast, processes=Processes(), negative_rule=cfg.data.negative_rule,
            )
        )  # fmt: skip
        write(
            phase="done",
            text_cache_build={
                "texts": rows,
                "seconds": round(seconds, 3),
                "texts_per_s": round(rows / seconds, 1),
                "batch_size": plan.micro_batch,
                "chunk_size": cfg.model.text.llm2vec.chunk_size,
                "how": "train.cache.build_text_cache (each sample's joined captions and hard negatives, batched by "
                "token count, through the frozen LLM, write)",
            },
        )
    return 0


def llava_worker(spec: dict) -> int:
    """Times eval.llava's runner on a LLaVA-1.5-7B-sized random model (or the tiny LLaVA, smoke mode): generative
    and vqascore batches, peak GPU memory against an estimate; writes its figures to spec["result"] as it goes."""
    import torch
    from transformers import (
        AutoProcessor,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from eval import llava
    from models.cache import resolve_cache_dir
    from models.tiny_llava import tiny_llava_folder

    out_path = Path(spec["result"])
    raw: dict = {"phase": "setup", "kind": "llava"}

    def write(**update) -> None:
        raw.update(update)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(raw, indent=1))
        os.replace(tmp, out_path)

    cuda = torch.cuda.is_available() and spec["size"] == "7b"
    device = torch.device("cuda" if cuda else "cpu")
    processor = AutoProcessor.from_pretrained(tiny_llava_folder(resolve_cache_dir()))
    tokenizer = processor.tokenizer
    started = time.perf_counter()
    if spec["size"] == "7b":
        config = LlavaConfig(
            vision_config=CLIPVisionConfig(**LLAVA_7B["vision"]).to_dict(),
            text_config=LlamaConfig(**LLAVA_7B["text"], pad_token_id=tokenizer.pad_token_id).to_dict(),
            image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
            vision_feature_layer=-2,
            pad_token_id=tokenizer.pad_token_id,
        )
        image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
        torch.manual_seed(0)
        with torch.device(device):
            model = LlavaForConditionalGeneration._from_config(config, torch_dtype=torch.bfloat16)
        dtype = "bfloat16"
    else:
        model = LlavaForConditionalGeneration.from_pretrained(tiny_llava_folder(resolve_cache_dir()))
        image_processor, dtype = processor.image_processor, "float32"
    runner = llava.LlavaRunner(None, device=str(device), dtype=dtype, parts=(model, tokenizer, image_processor))
    parameters = sum(p.numel() for p in model.parameters())
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    write(
        phase="generative",
        size=spec["size"],
        device_name=torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        dtype=dtype,
        parameters=parameters,
        build_s=round(time.perf_counter() - started, 2),
    )

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(device)

    bench = Path(spec["bench"])
    batch, new_tokens = spec["batch"], spec["new_tokens"]
    items = llava.benchmark_items("whatsup_a", bench, limit=batch)[0][:batch]
    prompts = [runner.prompt_for(item, "generative") for item in items]
    images = [item.image for item in items]
    runner.generate(prompts, images, max_new_tokens=new_tokens)  # warm-up
    sync()
    generative = []
    for _ in range(spec["timed"]):
        begin = time.perf_counter()
        runner.generate(prompts, images, max_new_tokens=new_tokens)
        sync()
        generative.append(time.perf_counter() - begin)
    write(phase="vqascore", generative_seconds=[round(s, 4) for s in generative])

    pairs = llava.vqascore_items("whatsup_a", bench, limit=batch, label_fixes="paper")[0][:batch]
    sequences = [runner.continuation_ids(runner.prompt_for(i, "vqascore"), "Yes", eos=False) for i in pairs]
    runner.option_logprobs(sequences, [i.image for i in pairs])  # warm-up
    sync()
    vqascore = []
    for _ in range(spec["timed"]):
        begin = time.perf_counter()
        runner.option_logprobs(sequences, [i.image for i in pairs])
        sync()
        vqascore.append(time.perf_counter() - begin)
    prompt_tokens = max(len(runner.prompt_ids(p)) for p in prompts) - 1
    image_tokens = int(runner.image_features(images[:1]).shape[1])
    estimate = llava_memory_estimate(model, batch, prompt_tokens + image_tokens + new_tokens)
    write(
        phase="done",
        vqascore_seconds=[round(s, 4) for s in vqascore],
        batch=batch,
        new_tokens=new_tokens,
        sequence_tokens=prompt_tokens + image_tokens + new_tokens,
        estimate_total_bytes=estimate["total"],
        estimate_parts=estimate,
        peak_gpu_allocated_bytes=torch.cuda.max_memory_allocated(device) if cuda else None,
        peak_gpu_reserved_bytes=torch.cuda.max_memory_reserved(device) if cuda else None,
        peak_rss_bytes=peak_rss_bytes(),
    )
    return 0


def llava_memory_estimate(model, batch: int, sequence: int) -> dict:
    """Bytes on the device for batched LLaVA inference: the weights, the language model's KV cache (keys and values
    of every layer for the whole sequence), and the largest activation, the prompt's logits over the vocabulary."""
    text = model.config.text_config
    element = next(model.parameters()).element_size()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = text.hidden_size // text.num_attention_heads
    kv_cache = 2 * text.num_hidden_layers * batch * sequence * kv_heads * head_dim * element
    logits = batch * sequence * text.vocab_size * element
    return {"weights": weights, "kv_cache": kv_cache, "logits": logits, "total": weights + kv_cache + logits}


def summarize_llava(raw: dict) -> dict:
    out: dict = {}
    if raw.get("generative_seconds"):
        step = statistics.median(raw["generative_seconds"])
        out["generative_s_per_batch"] = round(step, 4)
        out["new_tokens_per_s"] = round(raw["batch"] * raw["new_tokens"] / step, 1)
    if raw.get("vqascore_seconds"):
        step = statistics.median(raw["vqascore_seconds"])
        out["vqascore_s_per_batch"] = round(step, 4)
        out["vqascore_pairs_per_s"] = round(raw["batch"] / step, 2)
    estimate, measured = raw.get("estimate_total_bytes"), raw.get("peak_gpu_allocated_bytes")
    if estimate:
        out["estimate_gib"] = round(estimate / GIB, 2)
    if measured:
        out["peak_gpu_allocated_gib"] = round(measured / GIB, 2)
        if estimate:
            out["measured_over_estimate"] = round(measured / estimate, 3)
    return out


def skip_cpu_shared_memory_op() -> None:
    """DeepSpeed on the CPU first compiles a C++ shared-memory all-reduce (deepspeed_shm_comm_op, a minute or more
    into an empty torch_extensions cache); one CPU process all-reduces nothing, so the CPU smoke run skips it.
    Nothing changes on a GPU or with several processes."""
    import torch

    if torch.cuda.is_available() or os.environ.get("WORLD_SIZE", "1") != "1":
        return
    with contextlib.suppress(ImportError):
        import deepspeed.comm.torch  # noqa: F401  (the attribute deepspeed.comm.torch is torch itself)

        sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None


class _GlobalTotalsOnly:
    """Stands in for FlopCounterMode's module tracker: every FLOP goes to the 'Global' total, no hooks."""

    parents = frozenset({"Global"})

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def count_step_flops(trainer, stream) -> tuple[int, int]:
    """One optimizer step under FlopCounterMode: (all FLOPs counted, those of the recomputation).

    Two-pass accumulation runs every part once without gradients, then the trainable parts again with gradients
    (from pass 1's outputs of the frozen parts): the second forward of the trainable parts is the recomputation
    (HFU counts it, MFU does not).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    # Global totals only: FlopCounterMode's per-module tracker (ModuleTracker) puts multi-grad hooks on module
    # outputs, and torch.autograd.grad then refuses the two-pass step's leaf features ("A leaf node was passed to
    # _will_engine_execute_node ..."). The counting itself (flop_registry over aten ops) is unchanged.
    counter.mod_tracker = _GlobalTotalsOnly()
    forward_with_grad, two_pass = 0, False
    model_outputs = trainer.model_outputs

    def counted_outputs(batch, keep_frozen=False):
        nonlocal forward_with_grad, two_pass
        grad, before = torch.is_grad_enabled(), counter.get_total_flops()
        out = model_outputs(batch, keep_frozen=keep_frozen)
        if grad:
            forward_with_grad += counter.get_total_flops() - before
        else:
            two_pass = True
        return out

    trainer.model_outputs = counted_outputs
    try:
        with counter:
            trainer.step(stream)
    finally:
        del trainer.model_outputs  # back to the class's method
    # Two passes: pass 1 (no grad) runs every part; pass 2 runs the trainable parts again, from pass 1's outputs of
    # the frozen ones. That second forward of the trainable parts is the recomputation.
    recompute = forward_with_grad if two_pass else 0
    return int(counter.get_total_flops()), int(recompute)


# ---------------------------------------------------------------------------------------------------------------
# Figures and report


def summarize(raw: dict, peak: float | None) -> dict:
    """Derived figures of one part's raw worker record: steps/s, samples/s, MFU/HFU, memory against the estimate."""
    out: dict = {}
    seconds = raw.get("step_seconds") or []
    if seconds:
        step = statistics.median(seconds)
        out["seconds_per_step"] = round(step, 4)
        out["steps_per_s"] = round(1 / step, 3)
        out["samples_per_s"] = round(raw["global_batch"] / step, 1)
        out["data_wait_share"] = round(sum(raw.get("data_wait_seconds") or [0]) / sum(seconds), 3)
        hardware = raw.get("hardware_flops_per_step")
        if hardware is not None:
            model = hardware - raw.get("recompute_flops_per_step", 0)
            out["model_tflop_per_step"] = round(model / 1e12, 3)
            out["hardware_tflop_per_step"] = round(hardware / 1e12, 3)
            out["achieved_model_tflops"] = round(model / step / 1e12, 2)
            if peak:
                out["mfu"] = round(utilisation(model, step, peak), 4)
                out["hfu"] = round(utilisation(hardware, step, peak), 4)
        losses = raw.get("losses") or []
        out["losses_finite"] = all(isinstance(x, int | float) and abs(x) < float("inf") for x in losses)
    estimate = raw.get("estimate_total_bytes")
    measured = raw.get("peak_gpu_allocated_bytes")
    if estimate:
        out["estimate_gib"] = round(estimate / GIB, 2)
    if measured:
        out["peak_gpu_allocated_gib"] = round(measured / GIB, 2)
        out["peak_gpu_reserved_gib"] = round((raw.get("peak_gpu_reserved_bytes") or 0) / GIB, 2)
        if estimate:
            out["measured_over_estimate"] = round(measured / estimate, 3)
    if raw.get("peak_rss_bytes"):
        out["peak_rss_gib"] = round(raw["peak_rss_bytes"] / GIB, 3)
    return out


def compile_speedup(parts: dict) -> dict | None:
    """clip_neg's seconds per step eager against with train.compile=true (both parts ok), else None."""
    eager = (parts.get("clip_neg") or {}).get("summary", {}).get("seconds_per_step")
    compiled = (parts.get("clip_neg_compiled") or {}).get("summary", {}).get("seconds_per_step")
    if not eager or not compiled:
        return None
    return {"eager_seconds_per_step": eager, "compiled_seconds_per_step": compiled,
            "speedup": round(eager / compiled, 3)}  # fmt: skip


def utilisation(flops_per_step: float, seconds_per_step: float, peak_tflops: float) -> float:
    """Achieved FLOP/s as a share of the peak."""
    return flops_per_step / seconds_per_step / (peak_tflops * 1e12)


def fmt(value, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def markdown(results: dict) -> str:
    lines = [
        f"# GPU check ({results['device_name']})",
        "",
        f"{results['peak_assumption']}. Random weights, {results['precision']}, one GPU; total {results['total_s']} s "
        f"of a {results['budget_s']} s budget. Seconds per step: median of {results['timed_steps']} timed steps after "
        "a FLOP-counted warm-up step. MFU: model FLOPs (FlopCounterMode, less the two-pass recompute) / s / peak; "
        "HFU counts the recompute too. Memory: torch.cuda.max_memory_allocated against models/memory.py's estimate.",
        "",
        "| part | status | micro x acc = global | s/step | steps/s | samples/s | model TFLOP/step | MFU | HFU "
        "| peak GiB | estimate GiB | measured / estimate | wall s |",
        "|---" * 13 + "|",
    ]
    for name, part in results["parts"].items():
        s = part.get("summary", {})
        shape = (
            f"{part['micro_batch']} x {part['accumulation']} = {part['global_batch']}" if "micro_batch" in part else "-"
        )
        mfu, hfu = s.get("mfu"), s.get("hfu")
        lines.append(
            f"| {name} | {part['status']} | {shape} | {fmt(s.get('seconds_per_step'))} | {fmt(s.get('steps_per_s'))} "
            f"| {fmt(s.get('samples_per_s'))} | {fmt(s.get('model_tflop_per_step'))} "
            f"| {fmt(None if mfu is None else 100 * mfu, '.1f')}{'%' if mfu is not None else ''} "
            f"| {fmt(None if hfu is None else 100 * hfu, '.1f')}{'%' if hfu is not None else ''} "
            f"| {fmt(s.get('peak_gpu_allocated_gib'))} | {fmt(s.get('estimate_gib'))} "
            f"| {fmt(s.get('measured_over_estimate'))} | {part.get('wall_s', '-')} |"
        )
    cache = results.get("cache_build")
    lines.append("")
    if cache:
        lines.append(
            f"Image-feature cache build ({cache['part']}): {cache['images']} images in {cache['seconds']} s, "
            f"**{cache['images_per_s']} images/s** (batch {cache['batch_size']}, {cache['workers']} data workers)."
        )
    else:
        lines.append("Image-feature cache build: not measured (see the clip_neg part's error).")
    text_cache = results.get("text_cache_build")
    if text_cache:
        lines.append(
            f"LLM text cache build ({text_cache['part']}): {text_cache['texts']} texts in {text_cache['seconds']} s, "
            f"**{text_cache['texts_per_s']} texts/s** (batch {text_cache['batch_size']}, chunks of "
            f"{text_cache['chunk_size']})."
        )
    else:
        lines.append("LLM text cache build: not measured (see the siglip_llm2vec_neg part's error).")
    compiled = results.get("compile")
    if compiled:
        lines.append(
            f"torch.compile (train.compile=true) on clip_neg: {compiled['compiled_seconds_per_step']} s per step "
            f"against {compiled['eager_seconds_per_step']} eager, **{compiled['speedup']}x**."
        )
    else:
        lines.append("torch.compile: not compared (see the clip_neg and clip_neg_compiled parts).")
    llava_record = results.get("llava")
    if llava_record:
        s = llava_record.get("summary", {})
        lines += [
            "",
            f"LLaVA ({llava_record.get('what', '')}): {llava_record['status']}; eval.llava's runner on What'sUp A, "
            f"batch {llava_record.get('batch', '-')}: generative {fmt(s.get('new_tokens_per_s'))} new tokens/s "
            f"({fmt(s.get('generative_s_per_batch'))} s per batch of {llava_record.get('new_tokens', '-')} tokens), "
            f"vqascore {fmt(s.get('vqascore_pairs_per_s'))} pairs/s; peak {fmt(s.get('peak_gpu_allocated_gib'))} GiB "
            f"against an estimate of {fmt(s.get('estimate_gib'))} GiB (weights + KV cache + logits; measured / "
            f"estimate {fmt(s.get('measured_over_estimate'))}).",
        ]
        if llava_record["status"] != "ok":
            lines.append(
                f"- llava: {(llava_record.get('error') or '').splitlines()[0] if llava_record.get('error') else ''}"
            )
    failed = {name: part for name, part in results["parts"].items() if part["status"] != "ok"}
    for name, part in failed.items():
        first = part.get("error", "").splitlines()[0] if part.get("error") else part["status"]
        lines.append(f"- {name}: {part['status']}: {first}")
    for name, part in results["parts"].items():
        if part.get("flops_error"):
            lines.append(f"- {name}: FLOPs not counted (no MFU): {part['flops_error']}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python bench/gpu_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BENCH / "gpu_results.json", help="JSON; the .md goes next to it")
    parser.add_argument(
        "--only", action="append", choices=(*PART_NAMES, "llava"), help="run these parts only (llava: the MLLM)"
    )
    parser.add_argument("--budget-s", type=float, default=540, help="all parts together, shards included")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak bf16 TFLOP/s (default: by card name)")
    parser.add_argument("--shards", type=Path, default=None, help="an existing shard folder (skips generating one)")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny recipes on the CPU: the code path, for tests")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (logs, runs) and print it")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser


def run_llava(args: argparse.Namespace, mode: Mode, scratch: Path, deadline: float, env: dict) -> dict:
    """The LLaVA part: its own subprocess and timeout, on the generated world's benchmarks."""
    bench = scratch / "world" / "bench"
    left = deadline - time.perf_counter()
    if not bench.is_dir():
        return {"status": "skipped", "error": f"no generated world at {bench} (with --shards none is generated)"}
    if left < 20:
        return {"status": "skipped", "error": f"time budget spent ({args.budget_s:.0f} s)"}
    smoke = mode is SMOKE
    timeout = min(LLAVA_TIMEOUT_S["smoke" if smoke else "gpu"], left)
    folder = scratch / "llava"
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "kind": "llava",
        "size": "tiny" if smoke else "7b",
        "bench": str(bench),
        "batch": LLAVA_BATCH,
        "new_tokens": LLAVA_NEW_TOKENS,
        "timed": LLAVA_TIMED,
        "result": str(folder / "result.json"),
    }
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps(spec, indent=1))
    what = "tiny LLaVA (CPU)" if smoke else "LLaVA-1.5-7B-sized (random, bf16)"
    print(f"llava: {what}, generative and vqascore, batch {LLAVA_BATCH} (at most {timeout:.0f} s) ...", flush=True)
    record = run_part(
        worker_command(spec_path), timeout_s=timeout, log=scratch / "llava.log", result=Path(spec["result"]), env=env
    )
    record["what"] = what
    record["summary"] = summarize_llava(record)
    print(f"  {record['status']} in {record['wall_s']} s", flush=True)
    return record


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.worker:
        return worker(args.worker)

    mode = SMOKE if args.cpu_smoke else GPU
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; this check needs one GPU (--cpu-smoke runs its code path on the CPU)")
        return 2
    started = time.perf_counter()
    deadline = started + args.budget_s
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    env.update(mode.env)
    scratch = Path(tempfile.mkdtemp(prefix="clipablate-gpu-check-"))
    parts: dict[str, dict] = {}
    try:
        shards = args.shards
        shards_record = {"status": "ok", "wall_s": 0.0, "given": str(shards)} if shards else None
        if shards is None:
            print(f"generating a {mode.scale} world and its shards in {scratch} ...", flush=True)
            shards_record = {"status": "ok", "wall_s": 0.0}
            for command in shard_commands(scratch, mode.scale, mode.shard_workers):
                step = run_part(
                    command,
                    timeout_s=min(mode.shards_timeout_s - shards_record["wall_s"], deadline - time.perf_counter()),
                    log=scratch / f"{command[2].split('.')[-1]}.log",
                    env=env,
                )
                shards_record["wall_s"] = round(shards_record["wall_s"] + step["wall_s"], 1)
                if step["status"] != "ok":
                    shards_record.update(status=step["status"], error=step["error"])
                    break
            shards = scratch / "shards"
        for part in mode.parts:
            if args.only and part.name not in args.only:
                continue
            left = deadline - time.perf_counter()
            if shards_record["status"] != "ok":
                parts[part.name] = {"status": "skipped", "error": "no shards: " + shards_record["error"]}
                continue
            if left < 20:
                parts[part.name] = {"status": "skipped", "error": f"time budget spent ({args.budget_s:.0f} s)"}
                continue
            print(f"{part.name}: {part.what} (at most {min(part.timeout_s, left):.0f} s) ...", flush=True)
            spec = part_spec(part, shards, scratch, mode.timed_steps)
            Path(spec["result"]).parent.mkdir(parents=True, exist_ok=True)
            spec_path = Path(spec["result"]).with_name("spec.json")
            spec_path.write_text(json.dumps(spec, indent=1))
            record = run_part(
                worker_command(spec_path, zero2=part.zero2, launch_flags=mode.launch_precision),
                timeout_s=min(part.timeout_s, left),
                log=scratch / f"{part.name}.log",
                result=Path(spec["result"]),
                env=env,
            )
            record["what"] = part.what
            record["overrides"] = list(part.overrides)
            parts[part.name] = record
            print(f"  {record['status']} in {record['wall_s']} s", flush=True)
        llava_record = None
        if not args.only or "llava" in args.only:
            llava_record = run_llava(args, mode, scratch, deadline, env)
    finally:
        if args.keep:
            print(f"scratch folder kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    device_name = next((p["device_name"] for p in parts.values() if p.get("device_name")), "no device reached")
    if args.cpu_smoke:
        device_name = f"CPU smoke: {device_name}"
    peak, assumption = peak_tflops(device_name, args.peak_tflops)
    for record in parts.values():
        record["summary"] = summarize(record, peak)
    cache = next(({"part": n, **p["cache_build"]} for n, p in parts.items() if p.get("cache_build")), None)
    text_cache = next(
        ({"part": n, **p["text_cache_build"]} for n, p in parts.items() if p.get("text_cache_build")), None
    )
    compile_record = compile_speedup(parts)
    results = {
        "device_name": device_name,
        "peak_bf16_dense_tflops": peak,
        "peak_assumption": assumption,
        "precision": "fp32 (CPU smoke)" if args.cpu_smoke else "bf16",
        "mode": "cpu-smoke" if args.cpu_smoke else "gpu",
        "timed_steps": mode.timed_steps,
        "budget_s": args.budget_s,
        "total_s": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "shards": shards_record,
        "cache_build": cache,
        "text_cache_build": text_cache,
        "compile": compile_record,
        "parts": parts,
        "llava": llava_record,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    table = markdown(results)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    ok = all(p["status"] == "ok" for p in parts.values()) and shards_record["status"] == "ok"
    ok = ok and (parts or llava_record) and (llava_record is None or llava_record["status"] == "ok")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
