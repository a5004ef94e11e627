# One virtualenv for everything (.venv); each target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench smoke clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[service,train,dev]"
	touch $(STAMP)

setup: $(STAMP)

## The main job: the end-to-end demo (synthetic data -> train -> evaluate -> export -> service -> retrieval).
demo: $(STAMP)
	$(PY) -m training.demo

## Model smoke path: build, export, embed a generated tracklet with onnxruntime.
smoke: $(STAMP)
	$(PY) -m training.smoke

## The whole test suite (what CI runs).
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check . || true

bench: $(STAMP)
	$(PY) -m bench.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
