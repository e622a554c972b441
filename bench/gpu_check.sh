#!/usr/bin/env bash
# The CUDA checks of the memory planner, in one run of at most 8 minutes on a CUDA machine
# that holds a copy of this tree and a data folder (and no network):
#   1. predicted against measured peaks, per block, on CUDA: mnist-mlp and cifar10-cnn
#      (bench/plan_accuracy.py, as docs/memory.md runs it);
#   2. the frontier at two budgets: SVP joint, SVP layerwise and backprop planned under the
#      same budget (bench/frontier.py);
#   3. mixed precision on CUDA (bench/precision_cuda.py).
# Plots are drawn where matplotlib is installed; the tables are printed to the logs anyway.
# Results land in bench/results/*-cuda.json and logs in $OUT (or ./gpu-check), with a copy of
# the results.
#
# Prepare the data folder here (MNIST as it is, a CIFAR-10 subset of 1,000 train and 200
# test images per class, and the Python 3.12 x86_64 wheels of what the package needs there
# besides torch and numpy: about 30 MB), then carry it:
#     bash bench/gpu_check.sh --prepare gpu-data ../shared/data
# and on the CUDA machine:
#     bash bench/gpu_check.sh gpu-data
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
    out=${2:?folder to write}
    source=${3:?the data folder (mnist/, cifar10/cifar10-jpg.zip)}
    mkdir -p "$out/mnist" "$out/cifar10" "$out/wheels"
    cp "$source"/mnist/*.gz "$out/mnist/"
    python3 - "$source/cifar10/cifar10-jpg.zip" "$out/cifar10/cifar10-jpg.zip" <<'EOF'
import sys, zipfile
from collections import Counter
keep = {"train": 1000, "test": 200}
seen = Counter()
with zipfile.ZipFile(sys.argv[1]) as src, zipfile.ZipFile(sys.argv[2], "w") as dst:
    for name in sorted(src.namelist()):
        parts = name.strip("/").split("/")
        split = next((p for p in parts if p in keep), None)
        if split is None or not name.endswith(".jpg"):
            continue
        key = (split, parts[-2])
        if seen[key] < keep[split]:
            seen[key] += 1
            dst.writestr(name, src.read(name))
EOF
    python3 -m pip download --quiet --no-deps --dest "$out/wheels" -c constraints.txt \
        --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 click psutil tomli-w pillow
    du -sh "$out"
    exit 0
fi

data=${1:?the data folder made by --prepare}
logs=${OUT:-gpu-check}
mkdir -p "$logs"
export PYTHONPATH=$PWD OMP_NUM_THREADS=4
# what the machine lacks of the package's requirements, from the carried wheels
python3 -c "import click, psutil, tomli_w, PIL" 2>/dev/null ||
    python3 -m pip install --quiet --no-index --find-links "$data/wheels" click psutil tomli-w pillow
python3 -c "import torch; assert torch.cuda.is_available(); print(torch.__version__, torch.cuda.get_device_name())"

run() {  # name, command...: its output in $logs/name.log, its time on stdout
    local name=$1; shift
    local start=$SECONDS
    if "$@" > "$logs/$name.log" 2>&1; then
        echo "$name: ok in $((SECONDS - start)) s"
    else
        echo "$name: FAILED (exit $?) in $((SECONDS - start)) s; tail of $logs/$name.log:"
        tail -n 20 "$logs/$name.log"
    fi
}

run plan-accuracy timeout 240 python3 bench/plan_accuracy.py --data-dir "$data" --device cuda \
    --train-limit 10000 --profiles mnist-mlp cifar10-cnn
run frontier timeout 150 python3 bench/frontier.py --profile cifar10-cnn --data-dir "$data" \
    --device cuda --epochs 1 --train-limit 5000 --budgets 64MB 24MB
run precision timeout 90 python3 bench/precision_cuda.py --profile cifar10-cnn --data-dir "$data" \
    --train-limit 5000 --epochs 2
cp bench/results/*cuda*.json "$logs/" 2>/dev/null || true
