# stnkit: `make run` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the local CPU wheel: an unpinned torch pulls gigabytes of CUDA packages.
TORCH  ?= torch==2.13.0

.PHONY: setup run demo test lint format clean table1 bench

setup: $(VENV)/.stnkit-installed

$(VENV)/.stnkit-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $@

# the main job: ST-CNN and CNN on rts from the bundled digits; the README's numbers and figure come from here
run: setup
	$(BIN)/stnkit train --dataset rts --model st-cnn --transform affine --out runs/main/st-cnn --overwrite
	$(BIN)/stnkit train --dataset rts --model cnn --out runs/main/cnn --overwrite
	mkdir -p docs/main
	cp runs/main/st-cnn/show.png docs/main/st-cnn-rts.png
	cp runs/main/st-cnn/results.json docs/main/st-cnn-rts.json
	cp runs/main/cnn/results.json docs/main/cnn-rts.json
	$(BIN)/stnkit summarize runs/main/st-cnn runs/main/cnn --out docs/main/summary.md

demo: setup
	$(BIN)/stnkit demo --out docs/demo.png

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

test: lint
	$(BIN)/python -m pytest -n 2 --runslow

# the paper's Table 1 on the bundled digits (hours on 2 CPU cores; resumable)
table1: setup
	$(BIN)/stnkit reproduce table1 --out results --update-readme

# the speed suite (minutes on 2 CPU cores; run it on an otherwise idle machine)
bench: setup
	$(BIN)/stnkit bench --out benchmarks/results/bench.json

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
