#!/usr/bin/env bash
# The CUDA checks in one run on a CUDA machine (an H100 with 16 cores) that holds a copy of
# this tree and a data folder, and no network: at most 120 s, then 360 s (the steps' limits).
# Steps:
#   epoch-time     seconds per epoch of SVP joint, SVP layerwise and backprop on the same
#                  cifar10-cnn data, alone on the machine (bench/accuracy.py)
#   suite          the whole test suite under that machine's Python and torch, beside the
#                  steps below (it runs on the CPUs; their peaks are per process)
#   plan-accuracy  predicted against measured peaks per block: mnist-mlp, cifar10-cnn,
#                  cifar10-vit-deep, the optimizer's levers included (its state in host RAM
#                  on CUDA) (bench/plan_accuracy.py)
#   precision      fp16 with its gradient scaler and bf16 against fp32 on cifar10-cnn: SVP
#                  joint over 3 seeds, peaks under a budget, backprop (bench/precision_cuda.py)
#   frontier       SVP joint, SVP layerwise and backprop planned under two budgets
#                  (bench/frontier.py)
#   depth          each method's smallest budget at 4, 8 and 16 blocks, and a short run at it
#                  (bench/depth.py)
#
# Here, make the data folder (MNIST as it is, a CIFAR-10 subset of 1,000 train and 200 test
# images per class, and Python 3.12 x86_64 wheels of what that machine may lack: 32 MB):
#     bash bench/gpu_check.sh --prepare runs/gpu-data ../shared/data
# There, with runs/gpu-data carried:
#     bash bench/gpu_check.sh runs/gpu-data
# Steps named after the folder run alone (bash bench/gpu_check.sh runs/gpu-data depth suite).
# `--device cpu` rehearses the steps on this CPU with small limits and no test suite (562 s on
# one thread); `--install DIR` only installs what the Python lacks from DIR/wheels.
# PYTHON picks the interpreter (python3). Logs and results go to runs/gpu-check-<device>/
# (logs/, results/; run directories in runs/); with $OUT set, logs and results are packed
# into $OUT/gpu-check-<device>.tar.gz after every step, so a run cut short returns them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

requirements() {  # pyproject.toml's, pytest and torchao, but the three the CUDA image has
    "$PYTHON" - << 'EOF'
import re
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
pytest = [r for r in extras["test"] if r.startswith("pytest")]
carried = project["dependencies"] + pytest + extras["lowbit"]
image = {"torch", "numpy", "scikit-learn"}  # too large to carry; torchao is not torch
print("\n".join(r for r in carried if re.match(r"[\w.-]+", r).group() not in image))
EOF
}

install_missing() {  # wheels folder: what $PYTHON lacks of the requirements, offline
    local wanted
    mapfile -t wanted < <(requirements)
    "$PYTHON" -m pip install --quiet --no-index --find-links "$1" "${wanted[@]}"
}

if [ "${1:-}" = "--prepare" ]; then
    out=${2:?folder to write}
    source=${3:?the data folder (mnist/, cifar10/cifar10-jpg.zip)}
    mkdir -p "$out/mnist" "$out/cifar10" "$out/wheels"
    cp "$source"/mnist/*.gz "$out/mnist/"
    "$PYTHON" - "$source/cifar10/cifar10-jpg.zip" "$out/cifar10/cifar10-jpg.zip" << 'EOF'
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
    mapfile -t wanted < <(requirements)
    "$PYTHON" -m pip download --quiet --dest "$out/wheels" -c constraints.txt \
        --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
        --platform manylinux2014_x86_64 "${wanted[@]}"
    du -sh "$out"
    exit 0
fi
if [ "${1:-}" = "--install" ]; then
    install_missing "${2:?the data folder made by --prepare}/wheels"
    exit 0
fi

fail() { echo "gpu_check.sh: error: $*" >&2; exit 2; }
device=cuda
if [ "${1:-}" = "--device" ]; then
    device=${2:-}
    [[ $device == cuda || $device == cpu ]] || fail "--device takes cuda or cpu, not '$device'"
    shift 2
fi
data=${1:?the data folder made by --prepare}
shift
[ -f "$data/cifar10/cifar10-jpg.zip" ] || fail "$data is not a folder made by --prepare"
all_steps="epoch-time suite plan-accuracy precision frontier depth"
steps=" ${*:-$all_steps} "
for step in $steps; do
    [[ " $all_steps " == *" $step "* ]] || fail "no step '$step' (steps: $all_steps)"
done
work=runs/gpu-check-$device
mkdir -p "$work/logs" "$work/results"
summary=$work/logs/gpu-check.log
: > "$summary"
export PYTHONPATH=$PWD EDGE_SVP_BENCH_OUT=$work

say() { echo "$*" | tee -a "$summary"; }

pack() {  # logs and results so far into $OUT, which the machine returns (renamed: atomic)
    if [ -n "${OUT:-}" ]; then
        tar -czf "$OUT/gpu-check-$device.tar.gz.$1" -C "$work" logs results &&
            mv "$OUT/gpu-check-$device.tar.gz.$1" "$OUT/gpu-check-$device.tar.gz"
    fi
}

run() {  # name, seconds, command...: its output in logs/name.log; its status and log's tail
    local name=$1 limit=$2 start=$SECONDS status=0
    shift 2
    timeout "$limit" "$@" > "$work/logs/$name.log" 2>&1 || status=$?
    local verdict="ok"
    [ $status -eq 0 ] || verdict="FAILED (exit $status$([ $status -ne 124 ] || echo ", over $limit s"))"
    # one write, so that steps running side by side do not interleave their lines
    say "$(printf '%s: %s in %d s\n%s' "$name" "$verdict" $((SECONDS - start)) \
        "$(tail -n 4 "$work/logs/$name.log" | sed 's/^/    /')")"
    pack "$name"
}

if [ "$device" = cuda ]; then
    install_missing "$data/wheels" || fail "the wheels in $data/wheels do not satisfy pip (above)"
    "$PYTHON" -c "import torch; assert torch.cuda.is_available()" 2> /dev/null ||
        fail "$PYTHON's torch sees no CUDA GPU (--device cpu rehearses on the CPU)"
    { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader ||
        echo "nvidia-smi failed"; } | tee -a "$summary"
    epoch_time=(--epochs 2)  # the subset's 10,000 training images
    plan_accuracy=(--profiles mnist-mlp cifar10-cnn cifar10-vit-deep)  # 5,000 images
    precision=(--epochs 2 --train-limit 5000 --seeds 0 1 2)
    frontier=(--train-limit 5000)
    depth=(--depths 4 8 16)
else  # the rehearsal: every step's code path on few examples, the deep ViT in its CPU size;
    # trained this little, no run reaches the accuracy the precision check asks of a GPU run
    small=(--train-limit 128 --test-limit 128)
    epoch_time=(--epochs 1 "${small[@]}")
    plan_accuracy=(--profiles mnist-mlp cifar10-cnn cifar10-vit-deep-cpu "${small[@]}")
    precision=(--epochs 1 --seeds 0 --min-accuracy 0 --tolerance 100 "${small[@]}")
    frontier=("${small[@]}")
    depth=(--depths 1 2 --train-limit 64 --test-limit 64)
fi
"$PYTHON" -c "import sys, torch; print('Python', sys.version.split()[0], '| torch', torch.__version__)" |
    tee -a "$summary"

# First and alone, on 4 threads: the only step whose times are compared. On CUDA the other
# steps then run side by side, 2 threads each, since each measures its peaks in its own
# processes (the allocator's, per process); on the CPU, where resident memory is measured and
# the cores are shared, one after another on one thread.
[[ $steps != *" epoch-time "* ]] ||
    OMP_NUM_THREADS=4 run epoch-time 120 "$PYTHON" bench/accuracy.py cifar10 --data-dir "$data" \
        --device "$device" --only "svp joint" "svp layerwise" bp "${epoch_time[@]}"
if [ "$device" = cuda ]; then export OMP_NUM_THREADS=2; else export OMP_NUM_THREADS=1; fi
side_by_side() {  # run's arguments: in the background on CUDA, else in the foreground
    if [ "$device" = cuda ]; then run "$@" & else run "$@"; fi
}
if [[ $steps == *" suite "* ]]; then
    if [ "$device" = cuda ]; then
        workers=$("$PYTHON" -c "import xdist" 2> /dev/null && echo "-n 6" || true)
        OMP_NUM_THREADS=1 side_by_side suite 360 "$PYTHON" -m pytest -q -p no:cacheprovider $workers
    else
        say "suite: left out on the CPU (tox runs it here)"
    fi
fi
[[ $steps != *" plan-accuracy "* ]] ||
    side_by_side plan-accuracy 300 "$PYTHON" bench/plan_accuracy.py --data-dir "$data" \
        --device "$device" "${plan_accuracy[@]}"
[[ $steps != *" precision "* ]] ||
    side_by_side precision 300 "$PYTHON" bench/precision_cuda.py --profile cifar10-cnn \
        --data-dir "$data" --device "$device" "${precision[@]}"
[[ $steps != *" frontier "* ]] ||
    side_by_side frontier 300 "$PYTHON" bench/frontier.py --profile cifar10-cnn --data-dir "$data" \
        --device "$device" --epochs 1 --budgets 64MB 24MB "${frontier[@]}"
[[ $steps != *" depth "* ]] ||
    side_by_side depth 300 "$PYTHON" bench/depth.py --data-dir "$data" --device "$device" \
        "${depth[@]}"
wait
say "done in $SECONDS s; logs and results in $work"
pack all
