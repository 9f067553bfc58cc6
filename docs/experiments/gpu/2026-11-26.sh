#!/bin/bash
# One call on a lent GPU (device tool), 2026-11-26, run from the repository root:
#  1. R recipe sweep on the VALIDATION split, Table 1's base (--epochs 15 --loc-downsample 1), one change at a
#     time, 3 seeds, CNN and ST-CNN (affine): epochs 30 / 60, batch 32, the localisation net on a half-size input;
#  2. `stnkit reproduce sequence` and `stnkit reproduce addition` seeds 1 and 2 (seed 0 ran on the CPU).
# Everything runs side by side (GPU fit times are not comparable with each other or with the CPU's).
# Results come back as tarballs in $OUT (results.json and metrics of each run; checkpoints of unfinished runs).
set -u
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
T=${T:-420}
mkdir -p /tmp/rs /tmp/logs
nvidia-smi --query-gpu=name,memory.total --format=csv > $OUT/env.txt 2>&1
python3 -c "import torch, lightning; print(torch.__version__, lightning.__version__)" >> $OUT/env.txt 2>&1

sweep_one() { # name model seed [flags...]
  local name=$1 model=$2 seed=$3; shift 3
  timeout $T python3 -m stnkit train --dataset r --model $model --epochs 15 --loc-downsample 1 --seed $seed \
    --accelerator gpu --out /tmp/rs/$name/seed$seed "$@" > /tmp/logs/$name-seed$seed.txt 2>&1
}
export -f sweep_one
export T
{
  for s in 0 1 2; do
    echo "r-cnn-e15 cnn $s"
    echo "r-stcnn-e15 st-cnn $s"
    echo "r-cnn-e30 cnn $s --epochs 30"
    echo "r-stcnn-e30 st-cnn $s --epochs 30"
    echo "r-cnn-b32 cnn $s --batch-size 32"
    echo "r-stcnn-b32 st-cnn $s --batch-size 32"
    echo "r-stcnn-ds2 st-cnn $s --loc-downsample 2"
    echo "r-cnn-e60 cnn $s --epochs 60"
    echo "r-stcnn-e60 st-cnn $s --epochs 60"
  done
} | xargs -P 7 -L 1 bash -c 'sweep_one "$@"' _ &

for m in seq-cnn seq-st-cnn rnn-spn; do
  timeout $T python3 -m stnkit reproduce sequence --out results --seeds 3 --models $m --accelerator gpu \
    > /tmp/logs/sequence-$m.txt 2>&1 &
done
for m in 2xst-fcn cnn fcn,st-fcn; do
  timeout $T python3 -m stnkit reproduce addition --out results --seeds 3 --models $m --accelerator gpu \
    > /tmp/logs/addition-$m.txt 2>&1 &
done
wait

# what comes back: results and metrics; checkpoints only of runs that did not finish
pack() { # tarball dirs...
  local tb=$1; shift
  local files=()
  for d in "$@"; do
    [ -d "$d" ] || continue
    if [ -f "$d/results.json" ]; then
      files+=($(find "$d" -type f \( -name results.json -o -name budget.json -o -name metrics.csv -o -name '*.png' \)))
    else
      files+=($(find "$d" -type f \( -name last.ckpt -o -name metrics.csv \)))
    fi
  done
  [ ${#files[@]} -gt 0 ] && tar czf $OUT/$tb "${files[@]}"
}
pack rsweep.tgz /tmp/rs/*/seed*
pack sequence.tgz results/runs/sequence/*/seed1 results/runs/sequence/*/seed2
pack addition.tgz results/runs/addition/{cnn,fcn,st-fcn}/seed{1,2}
pack addition-2x.tgz results/runs/addition/2xst-fcn/seed{1,2}
tar czf $OUT/logs.tgz /tmp/logs 2>/dev/null
ls -la $OUT
for f in /tmp/rs/*/seed*/results.json; do
  python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[1], r['best_val_error'], round(r['fit_seconds']))" $f
done
grep -h "test error\|Error\|error:" /tmp/logs/sequence-*.txt /tmp/logs/addition-*.txt | tail -20
