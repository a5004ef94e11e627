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

## Model smoke path: export a small random network, embed one generated tracklet with onnxruntime.
smoke: $(STAMP)
	$(PY) -m training.smoke

## The whole test suite (what CI runs). The web page's browser tests (tests/service/test_ui_browser.py) drive
## Debian's chromium, and the footage queue's tests (REID_JOB_QUEUE=redis) start Debian's redis-server: as root
## (CI) both are installed here and their tests are required; otherwise they run only when already installed,
## and are skipped saying why.
CHROMIUM ?= /usr/bin/chromium
REDIS_SERVER ?= /usr/bin/redis-server
test: $(STAMP)
	$(PY) -m ruff check .
	@if [ "$$(id -u)" = 0 ]; then \
		if ! test -x $(CHROMIUM) || ! test -x $(REDIS_SERVER); then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium redis-server; \
		fi; \
		echo "+ REID_BROWSER_TESTS=required REID_REDIS_TESTS=required $(PY) -m pytest -q"; \
		REID_BROWSER_TESTS=required REID_REDIS_TESTS=required $(PY) -m pytest -q; \
	else \
		test -x $(CHROMIUM) || echo "not root, so chromium cannot be installed: the browser tests will be skipped (as root: apt-get install -y chromium)"; \
		test -x $(REDIS_SERVER) || echo "not root, so redis-server cannot be installed: the footage queue tests will be skipped (as root: apt-get install -y redis-server)"; \
		echo "+ $(PY) -m pytest -q"; \
		$(PY) -m pytest -q; \
	fi

lint: $(STAMP)
	$(PY) -m ruff check .

## Quick runs of the benchmark scripts (small sizes, a few seconds each) into $(BENCH_DIR); the committed
## tables in bench/*.md come from full runs, each script's docstring gives its command.
## bench/bench_embedding.py has no small mode (it measures the paper's ResNet-50 setup): run it by hand.
BENCH_DIR ?= /tmp/reid-bench-quick
bench: $(STAMP)
	mkdir -p $(BENCH_DIR)
	$(PY) -m training.export --random-init --backbone resnet18 --height 128 --width 64 --out $(BENCH_DIR)/tiny.onnx
	$(PY) -m bench.bench_gallery --sizes 2000:128 --queries 5 --store-max-size 2000 --kind-sizes 3000:64 \
		--kind-queries 20 --service-size 3000:64 --work-dir $(BENCH_DIR) \
		--out $(BENCH_DIR)/bench_gallery.md
	$(PY) -m bench.bench_service --models $(BENCH_DIR)/tiny.onnx --clients 1,2 --requests-per-client 2 \
		--min-requests 2 --time-limit 5 --prefill 200 --frames 8 --work-dir $(BENCH_DIR)/service \
		--out $(BENCH_DIR)/bench_service.md
	$(PY) -m bench.bench_load --model $(BENCH_DIR)/tiny.onnx --clients 2 --duration 5 --work-dir $(BENCH_DIR)/load
	$(PY) -m bench.bench_milvus --size 2000 --dim 128 --enrolls 5 --queries 5 --out $(BENCH_DIR)/bench_milvus.md
	$(PY) -m bench.bench_hostile --quick --out $(BENCH_DIR)/hostile.md
	@echo "quick benchmark tables: $(BENCH_DIR)/bench_gallery.md, $(BENCH_DIR)/bench_service.md, $(BENCH_DIR)/bench_milvus.md"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
