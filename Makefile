# One command each on a fresh clone: `make train`, `make test`. Both install first when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test test-slow test-all lint clean clean-runs bench bench-gpu

install: $(STAMP)

# Re-installs only when pyproject.toml changes, so a second `make install` does nothing.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Train the default model on the embedded synthetic data set; pass overrides with ARGS="...".
train: install
	$(BIN)/python -m hpa.train $(ARGS)

# The default suite (under 10 minutes on 2 CPU cores); slow tests are in test-slow.
test: install
	$(BIN)/pytest

test-slow: install
	$(BIN)/pytest -m slow

test-all: install
	$(BIN)/pytest -m "slow or not slow"

lint: install
	$(BIN)/ruff check hpa tests benchmarks
	$(BIN)/ruff format --check hpa tests benchmarks

# Benchmarks of the data path and the training loop (README, "Fast data path"); about 8 minutes
# on an idle 2-core machine. bench-gpu: resnet50 at 512 px on a CUDA GPU, its loader and a fit.
bench: install
	$(BIN)/python -m benchmarks.data
	$(BIN)/python -m benchmarks.cache
	$(BIN)/python -m benchmarks.train --rounds 2
	$(BIN)/python -m benchmarks.memory
	$(BIN)/python -m benchmarks.cpu_defaults

bench-gpu: install
	$(BIN)/python -m benchmarks.gpu

# Caches of the tools only: runs (logs/) and data (data/) stay.
clean:
	rm -rf .pytest_cache .ruff_cache
	find hpa tests benchmarks -name __pycache__ -type d -prune -exec rm -rf {} +

# Every run and checkpoint under logs/, after asking.
clean-runs:
	@read -p "Delete every run and checkpoint under logs/? [y/N] " answer; \
	if [ "$$answer" = y ]; then rm -rf logs; echo "logs/ deleted"; else echo "nothing deleted"; fi
