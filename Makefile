PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# strict editable installs link the files present at install time: a folder whose entries changed (a
# module or config file added, moved or removed) installs again
SRC_DIRS := $(shell find focalbench hydra_plugins conf -type d -not -name __pycache__ 2>/dev/null)

.PHONY: install demo test test-slurm lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(SRC_DIRS)
	@echo "installing focalbench into $(VENV) (log: $(VENV)/install.log)"
	test -d $(VENV) || $(PY) -m venv $(VENV)
	@# strict editable mode: Hydra finds the gpu_pool launcher plugin and the packaged conf/
	@($(BIN)/pip install -q --upgrade pip && \
	  $(BIN)/pip install -q -e ".[dev]" --config-settings editable_mode=strict) \
	  > $(VENV)/install.log 2>&1 || (tail -40 $(VENV)/install.log; exit 1)
	@# byte-compiled now, so that the __pycache__ folders a first import adds do not look like changes
	$(BIN)/python -m compileall -q focalbench hydra_plugins conf > /dev/null
	touch $(STAMP)

# The main job on the embedded dataset: the warm-start backbone (`focalbench pretrain`, cached), a
# mini-sweep (bce vs focal at gamma 1 and 2, two seeds; bce ignores gamma, so 6 runs), then the
# leaderboard and its heatmaps. A re-run resumes and skips finished runs.
demo: install
	$(BIN)/focalbench pretrain
	$(BIN)/focalbench sweep experiment=demo_sweep loss=bce,focal loss.gamma=1,2 seed=0,1 --jobs 2
	$(BIN)/focalbench leaderboard --where image_size=160 --plot results/demo_heatmap.png

# The SLURM tests (marker `slurm`) need a cluster: `make test-slurm` runs them, not `make test`.
test: install
	$(BIN)/pytest tests -m "not slurm"

# A real one-node SLURM cluster on this machine (scripts/slurm_local.sh: installs slurm-wlm as root when
# missing), the `slurm` tests against it, then the cluster stopped again, unless it was up before. Where SLURM
# cannot be installed (exit 3: not root, no apt) the tests skip themselves and say why.
test-slurm: install
	@up_before=0; scripts/slurm_local.sh status && up_before=1; \
	rc=0; scripts/slurm_local.sh start || rc=$$?; \
	if [ $$rc -ne 0 ] && [ $$rc -ne 3 ]; then exit $$rc; fi; \
	rc=0; $(BIN)/pytest tests/test_slurm.py -m slurm -rs || rc=$$?; \
	if [ $$up_before = 0 ]; then scripts/slurm_local.sh stop; fi; \
	exit $$rc

lint: install
	$(BIN)/ruff check focalbench tests scripts
	$(BIN)/ruff format --check focalbench tests scripts

bench: install
	$(BIN)/python scripts/bench_all.py

clean:
	rm -rf $(VENV) build dist *.egg-info
