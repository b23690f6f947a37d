# Two commands on a fresh machine: `make demo` and `make test` (both install first when needed).
PY      := .venv/bin/python
STAMP   := .venv/.installed
DEMO    ?= demo_out
SEED    ?= 0

.PHONY: install system-deps demo test test-all lint bench gpu-check clean

install: $(STAMP)

# Re-runs only when the dependency list changes; torch/torchvision come from the local wheel cache here.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,deepspeed]'
	touch $(STAMP)

WORLD   := $(DEMO)/world
SHARDS  := $(DEMO)/shards
RUNS    := $(DEMO)/runs

demo: $(STAMP)
	$(PY) -m data_prep.toyworld --out $(WORLD) --seed $(SEED)
	$(PY) -m data_prep.build_shards --out $(SHARDS) --shard-size 256 --workers 2 --overwrite \
	    --dataset lcs558k --json $(WORLD)/llava/blip_laion_cc_sbu_558k.json --image-root $(WORLD)/llava/images \
	    --dataset mix665k --json $(WORLD)/llava/llava_v1_5_mix665k.json --image-root $(WORLD)/llava
	$(PY) -m data_prep.inspect_shards $(SHARDS) --show 2
	rm -rf $(RUNS)
	$(PY) -m launch.sweep launch/sweeps/tiny_grid.yaml --backend local --output-dir $(RUNS) \
	    data.shards=[$(SHARDS)] eval.data_root=$(WORLD)/bench wandb.mode=offline
	rm -rf $(DEMO)/llava $(DEMO)/llava_vqascore
	$(PY) -m eval.llava --model tiny-llava --data-root $(WORLD)/bench --out $(DEMO)/llava --protocol choice
	$(PY) -m eval.llava --model tiny-llava --data-root $(WORLD)/bench --out $(DEMO)/llava_vqascore --protocol vqascore
	$(PY) -m eval.probe $(RUNS)/tiny_clip_neg-seed0 --out $(DEMO)/probe --representations pooled patch_attention \
	    --layers 0 -1 --probes linear
	$(PY) -m launch.report launch/sweeps/tiny_grid.yaml --output-dir $(RUNS) --out $(DEMO)/report \
	    --mllm "tiny-llava (choice)=$(DEMO)/llava" --mllm "tiny-llava (vqascore)=$(DEMO)/llava_vqascore" \
	    --probe $(DEMO)/probe

# The slurm backend is tested against a real private cluster on this host: Debian's slurm and munge.
system-deps:
	@command -v slurmctld >/dev/null && command -v munged >/dev/null || { \
	    if [ "$$(id -u)" = 0 ]; then \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge; \
	    else \
	        echo "as root, run: apt-get install -y slurmctld slurmd slurm-client munge (tests/test_launch_slurm.py needs it)"; \
	    fi; }

# The README's test command: every test but the long system tier, in parallel (pytest-xdist; TEST_WORKERS=1 for
# one process). test-all adds the system tier (real-size steps, learning signal, a real SLURM cluster): CI runs it.
TEST_WORKERS ?= 2

test: $(STAMP) system-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not system"

test-all: $(STAMP) system-deps
	$(PY) -m pytest -q -n $(TEST_WORKERS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)
	$(PY) bench/run.py

# One GPU, under 9 minutes: full-size models with random weights in bf16 (clip_neg, siglip_unlocked_neg under ZeRO-2,
# siglip_llm2vec_neg with the 32-layer 7B LLM, clip_neg compiled, clip_pacl_neg with a PACL head, clip_sparc_neg with a SPARC head), steps/s, MFU, peak memory against the estimate, cache build rates;
# then a LLaVA-1.5-7B-sized random model through eval.llava (generative tokens/s, vqascore pairs/s, peak memory).
# Writes bench/gpu_results.json and .md (bench/gpu_check.py --help; --cpu-smoke runs the same path on the CPU).
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
