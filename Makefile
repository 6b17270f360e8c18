# Two commands on a fresh machine:  `make train`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU-only machines can point pip at a CPU wheel index, e.g.
#   make train TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_ARGS := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

.PHONY: setup train test lint check validate-data clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0 $(TORCH_ARGS)
	$(PY) -m pip install --quiet -e ".[train,dev]"
	touch $@

train: setup
	$(PY) scripts/train.py $(ARGS)

# One pytest worker per core (pytest-xdist), each with one torch thread: the tests are many
# small runs, and a thread per core per worker would oversubscribe the cores. pytest exits 5
# when it collects no tests: that is a failure here, not a pass.
test: setup
	@OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto $(ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

# Style, types and layer contracts: what CI runs before the tests (and pre-commit locally).
lint: setup
	$(VENV)/bin/ruff check src scripts tests benchmarks
	$(VENV)/bin/ruff format --check src scripts tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

check: lint test

validate-data: setup
	$(VENV)/bin/scrclf data validate data/scr_recs

clean:
	rm -rf $(VENV) outputs .pytest_cache
