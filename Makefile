# stnkit: `make run` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the local CPU wheel: an unpinned torch pulls gigabytes of CUDA packages.
TORCH  ?= torch==2.13.0

.PHONY: setup run demo test lint format clean table1 sequence icstn addition colocalization bench experiments

setup: $(VENV)/.stnkit-installed

$(VENV)/.stnkit-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $@

# the main job: ST-CNN, CNN and the PyTorch tutorial's STN on rts from the bundled digits, 10 minutes of fit
# each (--max-time fits each recipe's epochs and schedule into the budget); the README's numbers come from here
MINUTES ?= 10
run: setup
	$(BIN)/stnkit train --dataset rts --model st-cnn --transform affine --max-time $(MINUTES) --out runs/main/st-cnn --overwrite
	$(BIN)/stnkit train --dataset rts --model cnn --max-time $(MINUTES) --out runs/main/cnn --overwrite
	$(BIN)/stnkit train --dataset rts --model tutorial-stn --max-time $(MINUTES) --out runs/main/tutorial-stn --overwrite
	mkdir -p docs/main
	cp runs/main/st-cnn/show.png docs/main/st-cnn-rts.png
	cp runs/main/tutorial-stn/show.png docs/main/tutorial-stn-rts.png
	cp runs/main/st-cnn/results.json docs/main/st-cnn-rts.json
	cp runs/main/cnn/results.json docs/main/cnn-rts.json
	cp runs/main/tutorial-stn/results.json docs/main/tutorial-stn-rts.json
	$(BIN)/stnkit summarize runs/main/st-cnn runs/main/cnn runs/main/tutorial-stn --out docs/main/summary.md

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

# the experiments beyond Table 1 (each within 3 hours on 2 CPU cores; resumable)
sequence icstn addition colocalization: setup
	$(BIN)/stnkit reproduce $@ --out results

# the speed suite (minutes on 2 CPU cores; run it on an otherwise idle machine)
bench: setup
	$(BIN)/stnkit bench --out benchmarks/results/bench.json

# the recipe log, from the committed results files of every experiment run
experiments: setup
	$(BIN)/stnkit experiments docs/experiments/results --out docs/experiments/recipe.md --title "Recipe experiments"

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
