#!/usr/bin/env bash
# The real-image study (results/reference/README.md, "BCCD"): the loss question on BCCD (364 microscope
# images, 3 classes, VOC layout; github.com/Shenggan/BCCD_Dataset), with `experiment=finetune` on its
# published trainval/test split, 3 seeds. Every step is a plain `focalbench` command; the sweeps resume.
#
#   scripts/bccd_study.sh run BCCD_DIR   # import + stats + 18 runs (~45 min on 2 cores), into results/bccd/
#   scripts/bccd_study.sh report         # leaderboard, compares and plots into results/reference/bccd/
#
# BCCD_DIR: the dataset's clone (or its BCCD/ folder, holding Annotations/, ImageSets/, JPEGImages/). Two lanes of sweeps run side by
# side, one thread a run; bce and focal seeds 0 and 1 go first (the preset's check).
set -euo pipefail
cd "$(dirname "$0")/.."
FB=${FB:-.venv/bin/focalbench}
RES=results/bccd
OUT=results/reference/bccd

ft() {  # the preset on the imported split, into the caller's array FT (an images path may hold spaces)
  FT=(experiment=finetune data=coco "data.ann=$RES/coco/trainval.json" "data.val_ann=$RES/coco/test.json"
    "data.images=$(cat "$RES/coco/images_dir")" "results_dir=$RES" train.threads=1)
}

lane_a() {
  local FT; ft
  $FB sweep "${FT[@]}" loss=bce seed=0,1
  $FB sweep "${FT[@]}" loss=focal loss.gamma=1 seed=0,1,2
  $FB sweep "${FT[@]}" loss=qfl seed=0,1,2            # with the preset's DFL box head: GFL
  $FB sweep "${FT[@]}" loss=bce seed=2
}

lane_b() {
  local FT; ft
  $FB sweep "${FT[@]}" loss=focal seed=0,1            # alpha 0.25, gamma 2
  $FB sweep "${FT[@]}" loss=focal loss.alpha=inverse_freq seed=0,1,2
  $FB sweep "${FT[@]}" loss=softmax_focal seed=0,1,2
  $FB sweep "${FT[@]}" loss=focal seed=2
}

run() {
  local src=${1:?usage: $0 run BCCD_DIR}
  mkdir -p $RES
  $FB data import --format voc --src "$src" --out $RES/coco | tee $RES/import.txt
  sed -n 's/^images folder: //p' $RES/import.txt > $RES/coco/images_dir
  COLUMNS=100 $FB data stats $RES/coco/trainval.json --image-size 224 --plot $RES/stats.png \
    | tee $RES/stats.txt
  $FB pretrain --results-dir $RES
  lane_a > $RES/lane_a.log 2>&1 &
  local a=$!
  lane_b > $RES/lane_b.log 2>&1 &
  local b=$!
  wait $a || echo "lane a: some runs failed ($RES/lane_a.log)" >&2
  wait $b || echo "lane b: some runs failed ($RES/lane_b.log)" >&2
}

config_id() {  # config_id LOSS ALPHA GAMMA: the study config with these runs.csv cells (list: per-class)
  .venv/bin/python - "$@" <<'PY'
import csv, sys
loss, alpha, gamma = sys.argv[1:4]
ids = {r["config_id"] for r in csv.DictReader(open("results/reference/bccd/runs.csv"))
       if r["loss"] == loss and r["gamma"] == gamma
       and (r["alpha"].startswith("[") if alpha == "list" else r["alpha"] == alpha)}
assert len(ids) == 1, f"{sys.argv[1:]}: config ids {ids}"
print(ids.pop())
PY
}

report() {
  export COLUMNS=100  # the width of compare's tables
  mkdir -p $OUT
  cp $RES/runs.csv $OUT/runs.csv
  cp $RES/import.txt $RES/stats.txt $RES/stats.png $OUT/
  $FB leaderboard --csv $OUT/runs.csv --format md --freeze > $OUT/leaderboard.md
  $FB leaderboard --csv $OUT/runs.csv --sort laece0 --format md --freeze > $OUT/leaderboard_by_laece0.md
  $FB leaderboard --csv $OUT/runs.csv --plot $OUT/bccd.png > /dev/null
  mv $OUT/bccd_scatter.png $OUT/scatter.png && rm -f $OUT/bccd.png
  local c=(--csv $OUT/runs.csv --metric mAP --metric laece0) focal g1 inv bce sfl qfl
  # config ids: per-class alpha (inverse_freq) and the preset's resolved anchors are not in compose's
  focal=config_id=$(config_id focal 0.25 2)
  g1=config_id=$(config_id focal 0.25 1)
  inv=config_id=$(config_id focal list 2)
  bce=config_id=$(config_id bce "" "")
  sfl=config_id=$(config_id softmax_focal "" 2)
  qfl=config_id=$(config_id qfl "" 2)
  $FB compare "${c[@]}" $focal $bce > $OUT/compare_focal_vs_bce.txt
  $FB compare "${c[@]}" $g1 $focal > $OUT/compare_gamma_1_vs_2.txt
  $FB compare "${c[@]}" $inv $focal > $OUT/compare_inverse_freq_vs_0.25.txt
  $FB compare "${c[@]}" $sfl $focal > $OUT/compare_softmax_focal_vs_focal.txt
  $FB compare "${c[@]}" $qfl $focal > $OUT/compare_gfl_vs_focal.txt
  $FB power "${c[@]:0:2}" $focal $bce --diff 0.01 > $OUT/power_focal_vs_bce.txt
  for name in focal bce; do  # seed 0's reliability diagram
    local id=${!name#config_id=} dir
    dir=$(.venv/bin/python -c "import csv; print([r['run_dir'] for r in csv.DictReader(open('$OUT/runs.csv')) if r['config_id'] == '$id' and r['seed'] == '0' and r['status'] == 'ok'][-1])")
    cp "$dir/reliability.png" $OUT/reliability_$name.png
  done
  # where the dataset lies on this machine is not part of the record
  sed -i -E 's#[^ ":=]*/BCCD/(JPEGImages|Annotations)#BCCD_Dataset/BCCD/\1#g; s#^[^ ]+ \(voc\):#BCCD_Dataset (voc):#' \
    $OUT/import.txt $OUT/runs.frozen.json
}

case "${1:-}" in
  run) shift; run "$@" ;;
  report) report ;;
  *) echo "usage: $0 run BCCD_DIR | report" >&2; exit 2 ;;
esac
