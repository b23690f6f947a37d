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

demo: $(STAMP)
	$(PY) -m data_prep.toyworld --out $(DEMO)/world --seed $(SEED)

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(STAMP)
	@echo "no benchmarks yet"

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
