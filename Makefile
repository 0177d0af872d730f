# Every target sets up .venv first (idempotent), so each works on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= results/quick

.PHONY: setup setup-dev demo test lint format train compare visualize bench clean

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh dev

## The main job: the quick factorial comparison on the embedded data, then the report.
demo: setup
	$(VENV)/bin/mamba-kan compare --preset quick --output-dir $(OUT) --generate-report

test: setup-dev
	$(PY) -m pytest -q

lint: setup-dev
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

format: setup-dev
	$(VENV)/bin/ruff format src tests scripts
	$(VENV)/bin/ruff check --fix src tests scripts

train: setup
	$(PY) scripts/run_experiment.py --model mlp_transformer --task symbolic --seeds 1 --max-steps 100 --no-wandb

compare: demo

visualize: setup
	$(VENV)/bin/mamba-kan report $(OUT)

bench: setup
	$(VENV)/bin/mamba-kan bench --suite all --json > docs/bench.json

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
