"""bench/gpu_check.py (`make gpu-check`) on the CPU: its orchestration, parsing, JSON and MFU arithmetic.

The GPU figures themselves need a GPU; here the same code path runs with the tiny recipes (`--cpu-smoke`):
generated shards, one subprocess per part (the ZeRO-2 part under accelerate launch), FLOP counting, timing,
the worker's JSON, the summary and the Markdown table.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402


@pytest.mark.system
def test_cpu_smoke_runs_every_part_through_the_real_trainer(tmp_path):
    out = tmp_path / "gpu_results.json"
    assert gpu_check.main(["--cpu-smoke", "--out", str(out), "--peak-tflops", "2"]) == 0
    results = json.loads(out.read_text())
    assert results["mode"] == "cpu-smoke" and results["shards"]["status"] == "ok"
    assert results["peak_bf16_dense_tflops"] == 2 and "--peak-tflops" in results["peak_assumption"]
    assert list(results["parts"]) == list(gpu_check.PART_NAMES)
    for name, part in results["parts"].items():
        assert part["status"] == "ok", part.get("error")
        assert len(part["step_seconds"]) == 2 and len(part["losses"]) == 2
        assert part["global_batch"] == part["micro_batch"] * part["accumulation"]
        summary = part["summary"]
        assert summary["losses_finite"]
        step = sorted(part["step_seconds"])[0] / 2 + sorted(part["step_seconds"])[1] / 2  # median of two
        assert summary["samples_per_s"] == pytest.approx(part["global_batch"] / step, rel=1e-2)
        if name == "clip_neg_compiled":  # timed only: FLOPs are not counted through a compiled graph
            assert "hardware_flops_per_step" not in part and "mfu" not in summary
            continue
        model = part["hardware_flops_per_step"] - part["recompute_flops_per_step"]
        assert model > 0
        assert summary["mfu"] == pytest.approx(model / step / 2e12, rel=1e-2, abs=1e-4)
        # The gradient-free first pass exists only with accumulation; MFU leaves it out, HFU does not.
        assert (part["recompute_flops_per_step"] > 0) == (part["accumulation"] > 1), name
        assert summary["hfu"] >= summary["mfu"]
        assert part["estimate_total_bytes"] > 0 and part["peak_gpu_allocated_bytes"] is None  # no GPU here
        assert part["peak_rss_bytes"] >= part["rss_before_steps_bytes"] > 0
    zero2 = results["parts"]["siglip_unlocked_neg"]
    assert zero2["deepspeed"] and zero2["zero_stage"] == 2 and zero2["num_processes"] == 1
    assert zero2["estimate_parts"]["two_pass_features"] > 0  # 8 x 2: the estimate knows the two passes
    assert not results["parts"]["clip_neg"]["deepspeed"]
    cache = results["cache_build"]
    assert cache["part"] == "clip_neg" and cache["images"] == results["parts"]["clip_neg"]["samples_in_shards"]
    assert cache["images_per_s"] > 0
    # the LLM cache build: every sample's joined captions plus its hard negatives
    compiled = results["compile"]  # the same steps with train.compile=true, timed against eager
    assert compiled["speedup"] == pytest.approx(
        compiled["eager_seconds_per_step"] / compiled["compiled_seconds_per_step"], rel=1e-2
    )
    text_cache = results["text_cache_build"]
    samples = results["parts"]["siglip_llm2vec_neg"]["samples_in_shards"]
    assert text_cache["part"] == "siglip_llm2vec_neg" and text_cache["texts"] > samples
    assert text_cache["texts_per_s"] > 0

    table = out.with_suffix(".md").read_text()
    assert "| part | status |" in table and "images/s" in table and "texts/s" in table
    for name in gpu_check.PART_NAMES:
        assert f"| {name} | ok |" in table


def test_a_part_that_fails_or_runs_out_of_time_is_recorded_and_the_others_still_run(tmp_path, monkeypatch):
    fake = {
        "clip_neg": "raise SystemExit(3)",
        "siglip_unlocked_neg": "import time; time.sleep(60)",
        "clip_neg_compiled": "raise SystemExit(4)",
        "clip_pacl_neg": "raise SystemExit(5)",
        "clip_sparc_neg": "raise SystemExit(6)",
        "siglip_llm2vec_neg": (
            "import json, sys; spec = json.load(open(sys.argv[1])); "
            "raw = dict(device_name='NVIDIA H100 80GB HBM3', micro_batch=64, accumulation=2, global_batch=128, "
            "step_seconds=[1.0, 2.0, 3.0], data_wait_seconds=[0.1, 0.1, 0.1], losses=[1.0, 1.0, 1.0], "
            "hardware_flops_per_step=9e14, recompute_flops_per_step=3e14, estimate_total_bytes=50 * 2**30, "
            "peak_gpu_allocated_bytes=40 * 2**30, peak_gpu_reserved_bytes=42 * 2**30); "
            "open(spec['result'], 'w').write(json.dumps(raw))"
        ),
    }

    def worker_command(spec, *, zero2=False, launch_flags=()):
        name = json.loads(Path(spec).read_text())["name"]
        return [sys.executable, "-c", fake[name], str(spec)]

    monkeypatch.setattr(gpu_check, "worker_command", worker_command)
    quick = tuple(replace(part, timeout_s=2) for part in gpu_check.SMOKE.parts)
    monkeypatch.setattr(gpu_check, "SMOKE", replace(gpu_check.SMOKE, parts=quick))
    out = tmp_path / "r.json"
    assert gpu_check.main(["--cpu-smoke", "--out", str(out), "--shards", str(tmp_path)]) == 1
    results = json.loads(out.read_text())
    parts = results["parts"]
    assert parts["clip_neg"]["status"] == "failed" and "exit status 3" in parts["clip_neg"]["error"]
    assert parts["siglip_unlocked_neg"]["status"] == "timeout" and "timed out" in parts["siglip_unlocked_neg"]["error"]
    assert parts["siglip_unlocked_neg"]["wall_s"] < 30  # killed, not waited for
    ok = parts["siglip_llm2vec_neg"]
    assert ok["status"] == "ok"
    # The H100 SXM peak comes from the device name; MFU = (9e14 - 3e14) FLOP / 2 s (median) / 989.4e12.
    assert results["peak_bf16_dense_tflops"] == 989.4
    assert ok["summary"]["mfu"] == pytest.approx(6e14 / 2 / 989.4e12, abs=1e-4)
    assert ok["summary"]["hfu"] == pytest.approx(9e14 / 2 / 989.4e12, abs=1e-4)
    assert ok["summary"]["samples_per_s"] == 64 and ok["summary"]["steps_per_s"] == 0.5
    assert ok["summary"]["measured_over_estimate"] == 0.8
    assert results["cache_build"] is None and results["compile"] is None
    table = out.with_suffix(".md").read_text()
    assert (
        "| siglip_llm2vec_neg | ok | 64 x 2 = 128 | 2.0 | 0.5 | 64.0 | 600.0 | 30.3% | 45.5% | 40.0 | 50.0 | 0.8 |"
        in table
    )
    assert "- clip_neg: failed: exit status 3" in table and "- siglip_unlocked_neg: timeout" in table
    assert "not measured" in table


def test_a_spent_budget_skips_the_remaining_parts(tmp_path):
    out = tmp_path / "r.json"
    assert gpu_check.main(["--cpu-smoke", "--out", str(out), "--shards", str(tmp_path), "--budget-s", "5"]) == 1
    parts = json.loads(out.read_text())["parts"]
    assert {p["status"] for p in parts.values()} == {"skipped"}
    assert all("time budget" in p["error"] for p in parts.values())


def test_a_timed_out_worker_keeps_what_it_wrote_before(tmp_path):
    result = tmp_path / "result.json"
    code = f"import json, time; open({str(result)!r}, 'w').write(json.dumps({{'build_s': 1.5}})); time.sleep(60)"
    record = gpu_check.run_part(
        [sys.executable, "-c", code], timeout_s=2, log=tmp_path / "log", result=result, env=None
    )
    assert record["status"] == "timeout" and record["build_s"] == 1.5


@pytest.mark.parametrize(
    ("name", "tflops"),
    [
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA H100 NVL", 835.5),
        ("NVIDIA H200", 989.4),
        ("NVIDIA H200 NVL", 835.5),
        ("NVIDIA GH200 480GB", 989.4),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("Some Other Card", None),
    ],
)
def test_peak_bf16_rate_from_the_device_name(name, tflops):
    peak, assumption = gpu_check.peak_tflops(name)
    assert peak == tflops
    assert ("MFU not computed" in assumption) == (tflops is None)
    assert gpu_check.peak_tflops(name, 500.0)[0] == 500.0


def test_mfu_is_model_flops_over_time_over_peak():
    assert gpu_check.utilisation(989.4e12, 1.0, 989.4) == pytest.approx(1.0)
    assert gpu_check.utilisation(2e15, 4.0, 1000) == pytest.approx(0.5)


def test_the_gpu_parts_are_the_recipes_the_check_promises():
    parts = {p.name: p for p in gpu_check.GPU_PARTS}
    assert [p.recipe for p in gpu_check.GPU_PARTS] == ["clip_neg", "siglip_unlocked_neg", "siglip_llm2vec_neg",
                                                       "clip_neg", "clip_pacl_neg", "clip_sparc_neg"]  # fmt: skip
    assert "train.compile=true" in parts["clip_neg_compiled"].overrides  # clip_neg again, compiled
    assert all(
        "model.pretrained=random" in p.overrides and "train.precision=bf16" in p.overrides for p in parts.values()
    )
    assert "model.text.llm2vec.base_model=random:llama-2-7b-chat" in parts["siglip_llm2vec_neg"].overrides
    assert parts["siglip_unlocked_neg"].zero2 and parts["clip_neg"].cache_build
    command = gpu_check.worker_command(Path("spec.json"), zero2=True)
    assert "deepspeed_zero2.yaml" in " ".join(command) and command[command.index("--num_processes") + 1] == "1"
    # Each part has its own timeout, and all of them share one budget that keeps the check under 9 minutes (a
    # device call may run 10), the LLaVA part included.
    budget = next(a.default for a in gpu_check.parser()._actions if a.dest == "budget_s")
    assert budget <= 9 * 60 and all(p.timeout_s < budget for p in parts.values())
    assert gpu_check.LLAVA_TIMEOUT_S["gpu"] < budget


def test_without_a_gpu_the_full_check_refuses_at_once(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "r.json")]) == 2
    assert not (tmp_path / "r.json").exists()


@pytest.mark.system
def test_cpu_smoke_llava_part_times_generative_and_vqascore_batches(tmp_path):
    """The LLaVA part's code path (eval.llava's runner, generative and vqascore batches, the memory estimate) on the
    tiny LLaVA; on a GPU the same worker builds a LLaVA-1.5-7B-sized random model in bf16."""
    out = tmp_path / "gpu_results.json"
    assert gpu_check.main(["--cpu-smoke", "--only", "llava", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    record = results["llava"]
    assert record["status"] == "ok", record.get("error")
    assert record["size"] == "tiny" and len(record["generative_seconds"]) == gpu_check.LLAVA_TIMED
    summary = record["summary"]
    assert summary["new_tokens_per_s"] > 0 and summary["vqascore_pairs_per_s"] > 0
    parts = record["estimate_parts"]
    assert parts["total"] == parts["weights"] + parts["kv_cache"] + parts["logits"] > 0
    assert "LLaVA (tiny LLaVA (CPU)): ok" in out.with_suffix(".md").read_text()


def test_the_llava_memory_estimate_at_llava_1_5_7b_widths():
    """Weights of LLaVA-1.5-7B's widths in bf16 (7.06e9 parameters) and its KV cache, counted on the meta device."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**gpu_check.LLAVA_7B["vision"]).to_dict(),
        text_config=LlamaConfig(**gpu_check.LLAVA_7B["text"]).to_dict(),
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration._from_config(config, torch_dtype=torch.bfloat16)
    estimate = gpu_check.llava_memory_estimate(model, batch=8, sequence=700)
    assert estimate["weights"] / 2 == pytest.approx(7.06e9, rel=0.01)
    assert estimate["kv_cache"] == 2 * 32 * 8 * 700 * 4096 * 2
