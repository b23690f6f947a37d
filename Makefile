# Two commands on a fresh machine: `make demo` and `make test` (both install first when needed).
PY      := .venv/bin/python
STAMP   := .venv/.installed
DEMO    ?= demo_out
SEED    ?= 0

.PHONY: install demo test lint bench clean

install: $(STAMP)

# Re-runs only when the dependency list changes; torch/torchvision come from the local wheel cache here.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
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
	for recipe in tiny_clip_finetune tiny_clip_neg; do \
	    $(PY) train/finetune.py recipes/$$recipe.yaml data.shards=[$(SHARDS)] output_dir=$(RUNS) \
	        eval.data_root=$(WORLD)/bench || exit 1; \
	    $(PY) -m eval.run --run $(RUNS)/$$recipe || exit 1; \
	done
	$(PY) -m eval.table5 $(RUNS)/tiny_clip_finetune $(RUNS)/tiny_clip_neg \
	    --out $(DEMO)/table5.md --csv $(DEMO)/table5.csv
	@echo "runs: $(RUNS)/tiny_clip_finetune $(RUNS)/tiny_clip_neg; table: $(DEMO)/table5.md"

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)
	$(PY) bench/run.py

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
