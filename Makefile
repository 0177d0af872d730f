# Every target sets up .venv first (idempotent), so each works on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= results/quick

.PHONY: setup setup-dev demo test test-clang lint format train compare visualize bench clean

setup:
	@scripts/setup.sh

setup-dev:
	@scripts/setup.sh dev

## The main job: the quick factorial comparison on the embedded data, then the report.
demo: setup
	$(VENV)/bin/mamba-kan compare --preset quick --output-dir $(OUT) --generate-report

test: setup-dev
	$(PY) -m pytest -q

# The generated C kernels' tests again, with the kernels built by clang in a cache of their own (cc / gcc builds
# them otherwise): compilers differ in what C and OpenMP leave open (e.g. a max reduction's starting value).
KERNEL_TESTS := tests/test_selective_scan.py tests/test_bspline.py tests/test_splines.py \
	tests/test_attention_kernel.py tests/test_cross_entropy.py tests/test_mamba_module.py \
	tests/test_kernel_pool.py tests/test_kernel_cache.py tests/test_bench_kernels.py

test-clang: setup-dev
	@command -v clang >/dev/null || { echo "make test-clang: no clang on PATH (e.g. apt-get install clang)" >&2; exit 2; }
	@d=$$(mktemp -d) && CC=clang MAMBA_KAN_CACHE_DIR=$$d $(PY) -m pytest -q -p no:cacheprovider $(KERNEL_TESTS); \
	s=$$?; rm -rf $$d; exit $$s

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
