#!/usr/bin/env bash
# The reference study (results/reference/README.md): the tool's own answer, on the embedded data on a
# 2-core CPU, to the questions whose answers are published. Every step is a plain `focalbench` command;
# the sweeps resume, so the script may be stopped and re-run (it skips every run with an ok row).
#
#   scripts/reference_study.sh run      # the runs (~1.5 h on 2 cores): RetinaNet grid, small DETR, search
#   scripts/reference_study.sh report   # leaderboards, compare outputs and plots into results/reference/
#
# The runs go to results/ (the RetinaNet grid: `make demo`'s runs are part of it), results/detr/ and
# results/search/. Two "lanes" of sweeps run side by side, one thread each, so both cores stay busy
# when a sweep's last job runs alone.
set -euo pipefail
cd "$(dirname "$0")/.."
FB=${FB:-.venv/bin/focalbench}
OUT=results/reference
RN=(experiment=demo_sweep train.threads=1)
DETR=(experiment=detr_demo results_dir=results/detr train.threads=1)
SEEDS=seed=0,1,2

lane_a() {
  $FB sweep "${RN[@]}" loss=focal loss.alpha=0.25 loss.gamma=0.5,1,2,5 $SEEDS
  $FB sweep "${RN[@]}" loss=focal loss.gamma=0 loss.alpha=0.75 $SEEDS          # alpha-balanced CE
  $FB sweep "${RN[@]}" loss=qfl model.box_head=dfl model.reg_max=8 $SEEDS      # the GFL head (experiment=gfl)
  $FB sweep "${DETR[@]}" matcher=prob,ce $SEEDS
}

lane_b() {
  $FB sweep "${RN[@]}" loss=focal loss.gamma=2 loss.alpha=0.5,0.75 $SEEDS
  $FB sweep "${RN[@]}" loss=bce,softmax_focal loss.gamma=2 $SEEDS              # bce takes no gamma or alpha
  $FB sweep "${RN[@]}" loss=qfl,vfl $SEEDS
  $FB sweep "${DETR[@]}" matcher=focal,focal_full $SEEDS
}

search() {
  $FB sweep experiment=demo_sweep results_dir=results/search --search tpe --trials 16 --jobs 2 \
    --objective mAP --objective laece0 loss=focal 'loss.alpha=interval(0.05,0.95)' \
    'loss.gamma=interval(0,5)'
}

run() {
  # the synthetic backbone is cached per results folder (the same bytes in each: it is seeded)
  for dir in results results/detr results/search; do $FB pretrain --results-dir $dir; done
  lane_a > results/study_lane_a.log 2>&1 &
  local a=$!
  lane_b > results/study_lane_b.log 2>&1 &
  local b=$!
  wait $a || echo "lane a: some runs failed (results/study_lane_a.log)" >&2
  wait $b || echo "lane b: some runs failed (results/study_lane_b.log)" >&2
  search
}

reliability() {  # reliability SELECTOR NAME: copy seed 0's reliability.png from its run folder
  local id dir where=()
  IFS=, read -ra keys <<< "$1"
  for k in "${keys[@]}"; do where+=(--where "$k"); done
  id=$($FB leaderboard --csv $OUT/study_runs.csv --by-seed --format csv --no-noise \
    "${where[@]}" --where seed=0 2> /dev/null | .venv/bin/python -c \
    "import csv, sys; print(next(csv.DictReader(sys.stdin))['run_id'])")
  dir=$(.venv/bin/python -c "import csv; print([r['run_dir'] for r in csv.DictReader(open('$OUT/study_runs.csv')) if r['run_id'] == '$id' and r['status'] == 'ok'][-1])")
  cp "$dir/reliability.png" $OUT/reliability_$2.png
}

audit() {  # the matching audit each DETR run logged (train_log.csv), per matcher: mean ± std over seeds
  .venv/bin/python - "$OUT/study_detr_runs.csv" <<'PY'
import csv, math, statistics, sys
from pathlib import Path

by = {}
for r in csv.DictReader(open(sys.argv[1])):
    if r["status"] == "ok":
        log = list(csv.DictReader(open(Path(r["run_dir"]) / "train_log.csv")))
        col = lambda k: [float(e[k]) for e in log if not math.isnan(float(e[k]))]
        by.setdefault(r["matcher"], []).append({
            "agreement, all epochs": statistics.fmean(col("match_agreement")),
            "agreement, last epoch": col("match_agreement")[-1],
            "regret, all epochs": statistics.fmean(col("match_regret")),
            "instability, all epochs": statistics.fmean(col("match_stability")),
        })
keys = list(next(iter(by.values()))[0])
print("| matcher | runs | " + " | ".join(keys) + " |")
print("|---|---|" + "---:|" * len(keys))
for matcher, audits in sorted(by.items()):
    cells = []
    for k in keys:
        xs = [a[k] for a in audits]
        fmt = ".1e" if k.startswith("regret") else ".3f"
        sd = f" ± {statistics.stdev(xs):{fmt}}" if len(xs) > 1 else ""
        cells.append(f"{statistics.fmean(xs):{fmt}}{sd}")
    print(f"| {matcher} | {len(audits)} | " + " | ".join(cells) + " |")
print()
print("From each run's train_log.csv: the audit of focalbench.matching.audit after every epoch, on the first")
print("16 validation images. agreement: share of ground truths that the run's class cost gives the query the")
print("loss-optimal cost gives; regret: the extra classification loss of the run's assignment, per ground")
print("truth; instability (logged as match_stability): share of ground truths whose query changed since the")
print("previous epoch (epochs 2-14). Per run the mean over epochs (or the last epoch), then mean ± sample std")
print("over the seeds.")
PY
}

config_id() {  # the config_id of a RetinaNet study config, from its overrides
  .venv/bin/python -c "import sys; from focalbench.config import compose
print(compose(['experiment=demo_sweep', *sys.argv[1:]]).config_id)" "$@"
}

report() {
  export COLUMNS=100  # the width of compare's tables
  mkdir -p $OUT
  cp results/runs.csv $OUT/study_runs.csv
  cp results/detr/runs.csv $OUT/study_detr_runs.csv
  cp results/search/runs.csv $OUT/study_search_runs.csv
  # --freeze keeps the vs-best marks and config keys beside each CSV (results/frozen.py), so the
  # same command reproduces the markdown from the committed CSV alone
  $FB leaderboard --csv $OUT/study_runs.csv --format md --freeze > $OUT/leaderboard.md
  $FB leaderboard --csv $OUT/study_runs.csv --sort laece0 --format md --freeze \
    > $OUT/leaderboard_by_laece0.md
  $FB leaderboard --csv $OUT/study_detr_runs.csv --format md --freeze > $OUT/leaderboard_detr.md
  $FB leaderboard --csv $OUT/study_search_runs.csv --format md --freeze > $OUT/leaderboard_search.md
  # the alpha x gamma heatmap of the focal family; the mAP vs LaECE0 scatter of every config
  $FB leaderboard --csv $OUT/study_runs.csv --where loss=focal --plot $OUT/study_heatmap.png > /dev/null
  rm $OUT/study_heatmap_scatter.png
  $FB leaderboard --csv $OUT/study_runs.csv --plot $OUT/study_all.png > /dev/null
  mv $OUT/study_all_scatter.png $OUT/study_scatter.png && rm $OUT/study_all.png
  $FB leaderboard --csv $OUT/study_detr_runs.csv --plot $OUT/study_detr.png > /dev/null
  rm $OUT/study_detr.png  # one loss and alpha/gamma for all four matchers: only the scatter says anything
  cp results/search/sweeps/*/pareto.png $OUT/study_search_pareto.png
  # reliability diagrams (each run folder's reliability.png) of seed 0 of a few configs
  reliability loss=bce bce
  reliability loss=focal,alpha=0.25,gamma=2 focal_g2
  reliability loss=focal,alpha=0.25,gamma=5 focal_g5
  reliability loss=vfl vfl
  audit > $OUT/detr_matching_audit.md
  local c=(--csv $OUT/study_runs.csv --metric mAP --metric laece0)
  $FB compare "${c[@]}" loss=focal,alpha=0.25,gamma=2 loss=bce > $OUT/compare_focal_vs_bce.txt
  $FB compare "${c[@]}" loss=focal,alpha=0.25,gamma=2 loss=focal,alpha=0.75,gamma=0 \
    > $OUT/compare_focal_vs_balanced_ce.txt
  $FB compare "${c[@]}" loss=focal,alpha=0.75,gamma=0 loss=bce > $OUT/compare_balanced_ce_vs_bce.txt
  $FB compare "${c[@]}" loss=focal,alpha=0.25,gamma=2 loss=focal,alpha=0.75,gamma=2 \
    > $OUT/compare_focal_alpha_0.25_vs_0.75.txt
  $FB compare "${c[@]}" loss=focal,alpha=0.25,gamma=2 loss=focal,alpha=0.25,gamma=5 > $OUT/compare_gamma_2_vs_5.txt
  # plain qfl and the GFL head share every CSV column but the box head: select them by config_id
  local qfl gfl
  qfl=$(config_id loss=qfl)
  gfl=$(config_id loss=qfl model.box_head=dfl model.reg_max=8)
  $FB compare "${c[@]}" config_id=$qfl loss=focal,alpha=0.25,gamma=2 > $OUT/compare_qfl_vs_focal.txt
  $FB compare "${c[@]}" config_id=$gfl loss=focal,alpha=0.25,gamma=2 > $OUT/compare_gfl_vs_focal.txt
  $FB compare "${c[@]}" loss=vfl loss=focal,alpha=0.25,gamma=2 > $OUT/compare_vfl_vs_focal.txt
  for m in focal_full prob ce; do
    $FB compare --csv $OUT/study_detr_runs.csv --metric mAP --metric laece0 matcher=focal matcher=$m \
      > $OUT/compare_focal_vs_${m}_matching.txt
  done
}

case "${1:-}" in
  run) run ;;
  report) report ;;
  *) echo "usage: $0 run|report" >&2; exit 2 ;;
esac
