# tlkit — `make demo` trains on the bundled demo data, `make test` runs the tests.
# Both create .venv and install everything themselves on a fresh machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUNS   ?= runs

.PHONY: install demo test docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# Offline demo: a 500-image Fashion-MNIST subset (examples/fashion-mnist-mini).
demo: $(STAMP)
	$(BIN)/tlkit train --data examples/fashion-mnist-mini --base vgg16 --weights none \
		--image-size 64 --head dense256 --epochs 10 --batch-size 32 --seed 0 --output $(RUNS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	$(BIN)/python docs/plugins/make_hooks_md.py

clean:
	rm -rf $(VENV) .pytest_cache
