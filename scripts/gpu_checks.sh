#!/usr/bin/env bash
# The CUDA checks and GPU benchmarks, in one go, for a machine with an NVIDIA GPU:
#   scripts/gpu_checks.sh [OUT_DIR] [STEP ...]
# OUT_DIR defaults to results/gpu; the default steps are the STEPS list below, and `profile`,
# `bench_train_step_b16` and `full_tests` (needs pytest-xdist) run when named.
# Each step runs under its own time limit, logs to OUT_DIR/STEP.log and prints its tail; a failing
# step does not stop the others. Run it with the project installed (`make install`).
set -u
OUT=${1:-results/gpu}
RUNS=${RUNS:-$OUT/runs}  # results_dir of the demo runs
shift || true
STEPS=${*:-"env cuda_tests bench_losses bench_matching bench_train_step demo_eager demo_compiled"}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE WANDB_MODE=disabled

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2 start rc
  shift 2
  case " $STEPS " in *" $name "*) ;; *) return 0 ;; esac
  echo "=== $name"
  start=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  tail -n 30 "$OUT/$name.log"
  echo "=== $name: exit $rc in $(($(date +%s) - start)) s"
}

step env 60 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
  $PY -c 'import torch; print(torch.__version__, torch.cuda.get_device_name(), \"bf16\", torch.cuda.is_bf16_supported())'"
step cuda_tests 300 "$PY" -m pytest -p no:cacheprovider -rs --durations=10 tests/test_cuda.py
step bench_losses 120 "$PY" scripts/bench_losses.py --devices cuda --reps 20
step bench_matching 120 "$PY" scripts/bench_matching.py --device cuda --reps 10
step profile 120 "$PY" scripts/bench_train_step.py --device cuda --profile
step bench_train_step 240 "$PY" scripts/bench_train_step.py --device cuda --reps 20
# experiment=demo's RetinaNet run (320 images, 8 epochs, 160 px, warm-started from the synthetic
# backbone, pretrained here first), eager and compiled: imgs_per_s in runs.csv
step pretrain 600 "$PY" -m focalbench pretrain --results-dir "$RUNS/eager"
mkdir -p "$RUNS/compiled" && cp -r "$RUNS/eager/pretrained" "$RUNS/compiled/" 2>/dev/null
step demo_eager 180 "$PY" -m focalbench train experiment=demo train.device=cuda \
  "results_dir=$RUNS/eager" train.progress=false
step demo_compiled 300 "$PY" -m focalbench train experiment=demo train.device=cuda \
  train.compile=true "results_dir=$RUNS/compiled" train.progress=false
step bench_train_step_b16 240 "$PY" scripts/bench_train_step.py --device cuda --reps 20 --batch 16
step full_tests 400 "$PY" -m pytest -p no:cacheprovider -n 8 tests
"$PY" - "$RUNS" <<'PY'  # the demo runs' rows, short
import csv, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/runs.csv")):
    for row in csv.DictReader(open(path)):
        keys = ("status", "wall_s", "mAP", "AP50", "laece0", "imgs_per_s", "device", "torch")
        print(path.parent.name, {k: row[k] for k in keys})
PY
exit 0
