PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@echo "installing focalbench into $(VENV) (log: $(VENV)/install.log)"
	test -d $(VENV) || $(PY) -m venv $(VENV)
	@# strict editable mode: Hydra finds the gpu_pool launcher plugin and the packaged conf/
	@($(BIN)/pip install -q --upgrade pip && \
	  $(BIN)/pip install -q -e ".[dev]" --config-settings editable_mode=strict) \
	  > $(VENV)/install.log 2>&1 || (tail -40 $(VENV)/install.log; exit 1)
	touch $(STAMP)

# The main job on the embedded dataset: a mini-sweep (bce vs focal at gamma 1 and 2, two seeds; bce ignores gamma,
# so 6 runs), then the leaderboard and its heatmaps. A re-run resumes and skips finished runs.
demo: install
	$(BIN)/focalbench sweep experiment=demo_sweep loss=bce,focal loss.gamma=1,2 seed=0,1 --jobs 2
	$(BIN)/focalbench leaderboard --where image_size=128 --plot results/demo_heatmap.png

test: install
	$(BIN)/pytest tests

lint: install
	$(BIN)/ruff check focalbench tests scripts
	$(BIN)/ruff format --check focalbench tests scripts

bench: install
	$(BIN)/python scripts/bench_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info
