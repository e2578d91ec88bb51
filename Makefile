# make setup: .venv with the project (editable), pinned dependencies and pycaffe built from source.
# make test:  setup, then the test suite.   make demo: setup, then the main job.
# make bench: setup, then every benchmarks/*.py (BENCH_ARGS=--quick for a smoke pass).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup test demo bench clean

setup: $(STAMP)
	$(BIN)/python -m sparknet_ml.build --install
	$(BIN)/python -m sparknet_ml.build.deps dataset-fashion-mnist openssh-server

$(STAMP): setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

test: setup
	$(BIN)/python -m pytest -q tests

demo: setup
	$(BIN)/python -m sparknet_ml.apps.fashion_mnist --overwrite

bench: setup
	$(BIN)/python -m sparknet_ml.cli bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
