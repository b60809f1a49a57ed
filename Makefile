# `make run` and `make test` work from a fresh clone: each installs into ./.venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

EXAMPLE := examples/livebridge_acmechat

.PHONY: run test test-all lint typecheck example bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## install, then run the daemon with ./bridge.yaml
	$(BIN)/livebridge run --config bridge.yaml

test: $(STAMP)  ## install, then run the whole test suite
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

example: $(STAMP)  ## the example plugin package, installed: its tests (asyncio strict, auto), mypy
	$(BIN)/pip install --quiet -e $(EXAMPLE)
	cd $(EXAMPLE) && $(abspath $(BIN))/python -m pytest -q -p asyncio --asyncio-mode=strict
	cd $(EXAMPLE) && $(abspath $(BIN))/python -m pytest -q -p asyncio --asyncio-mode=auto
	# mypy cannot follow setuptools' editable-install finder: point it at the checkout.
	cd $(EXAMPLE) && MYPYPATH=$(CURDIR):$(CURDIR)/plugins $(abspath $(BIN))/mypy

bench: $(STAMP)  ## the side-by-side benchmarks (see benchmarks/RESULTS.md)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .mypy_cache .ruff_cache
