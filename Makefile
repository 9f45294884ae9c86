# Two commands on a fresh machine: `make demo` and `make test`. Both create the venv first.
# `make install`: the package and its runtime dependencies only (what the Docker image runs);
# `make dev` adds the test tools (`.[dev]`: pytest, grpcio-tools); `make test` runs it itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEV_STAMP := $(VENV)/.dev-installed-stamp

.PHONY: install dev install-dev node-deps demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -e '.[dev]'
	touch $(DEV_STAMP)

install: $(STAMP)

dev install-dev: $(DEV_STAMP)

# The Node.js client's and the Node.js bundle runtime's dependencies, for their tests (skipped
# where npm is missing). onnxruntime-node ships its CPU binaries; its CUDA download is skipped.
NODE_DIRS := clients/node clients/node-runtime
node-deps:
	@if command -v npm >/dev/null 2>&1; then \
		for d in $(NODE_DIRS); do \
			[ $$d/node_modules/.package-lock.json -nt $$d/package-lock.json ] || \
			(cd $$d && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund) || exit 1; \
		done; \
	else echo "npm not found: the Node.js tests will be skipped"; fi

demo: $(STAMP)
	$(BIN)/edgetune demo

test: $(DEV_STAMP) node-deps
	$(BIN)/python -m pytest

test-fast: $(DEV_STAMP)
	$(BIN)/python -m pytest -m 'not slow'

bench: $(DEV_STAMP)  # grpc_security.py makes certificates with the dev tools' cryptography
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/train_epoch.py
	$(BIN)/python bench/input_pipeline.py
	$(BIN)/python bench/train_memory.py
	$(BIN)/python bench/gpu_train.py
	$(BIN)/python bench/grpc_predict.py
	$(BIN)/python bench/grpc_security.py
	$(BIN)/python bench/text_latency.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/text_finetune.py
	$(BIN)/python bench/parity_margins.py
	$(BIN)/python bench/variants.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache clients/node/node_modules clients/node-runtime/node_modules
