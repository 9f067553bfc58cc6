# stnkit: `make run` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the local CPU wheel: an unpinned torch pulls gigabytes of CUDA packages.
TORCH  ?= torch==2.13.0

.PHONY: setup run main-docs demo test lint format clean table1 sequence icstn addition colocalization homography bench experiments

setup: $(VENV)/.stnkit-installed

$(VENV)/.stnkit-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[all]"
	touch $@

# the main job: ST-CNN, CNN and the PyTorch tutorial's STN on rts from the bundled digits, each for a fixed
# number of epochs (chosen for about 10 minutes of fit each on 2 CPU cores, from the seconds per epoch
# of earlier fresh-clone runs: 25, 35 and 95 epochs took 9.0, 3.6 and 5.2 minutes), with --deterministic: on this machine kind and thread count
# the numbers are bit-identical to docs/main (the fit times follow the machine). Writes only under runs/;
# `make main-docs` copies the runs into docs/main for the README. `stnkit reproduce budget` keeps the
# equal-time comparison (--max-time).
MAIN := runs/main
run: setup
	$(BIN)/stnkit train --dataset rts --model st-cnn --transform affine --epochs 25 --deterministic --out $(MAIN)/st-cnn --overwrite
	$(BIN)/stnkit train --dataset rts --model cnn --epochs 95 --deterministic --out $(MAIN)/cnn --overwrite
	$(BIN)/stnkit train --dataset rts --model tutorial-stn --epochs 180 --deterministic --out $(MAIN)/tutorial-stn --overwrite
	$(BIN)/stnkit summarize $(MAIN)/st-cnn $(MAIN)/cnn $(MAIN)/tutorial-stn --out $(MAIN)/summary.md

# the main job's runs into docs/ (the README's table and figures come from there)
main-docs:
	mkdir -p docs/main
	cp $(MAIN)/st-cnn/show.png docs/main/st-cnn-rts.png
	cp $(MAIN)/tutorial-stn/show.png docs/main/tutorial-stn-rts.png
	cp $(MAIN)/st-cnn/results.json docs/main/st-cnn-rts.json
	cp $(MAIN)/cnn/results.json docs/main/cnn-rts.json
	cp $(MAIN)/tutorial-stn/results.json docs/main/tutorial-stn-rts.json
	cp $(MAIN)/summary.md docs/main/summary.md

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

homography: setup
	$(BIN)/stnkit reproduce homography --out results --docs docs/results/homography.md

# the speed suite (minutes on 2 CPU cores; run it on an otherwise idle machine)
bench: setup
	$(BIN)/stnkit bench --out benchmarks/results/bench.json

# the recipe log, from the committed results files of every experiment run
experiments: setup
	$(BIN)/stnkit experiments docs/experiments/results --out docs/experiments/recipe.md --title "Recipe experiments"
	$(BIN)/stnkit reproduce colocalization --recipe-log docs/experiments/colocalization/val

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .hypothesis
