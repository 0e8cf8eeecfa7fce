#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one go (about 6 minutes on one H100/H200):
#   1. step throughput against the straightforward step: fp32, bf16 autocast, compiled enc/dec;
#   2. an MNIST epoch of a real `amm train` run alone on the GPU (paper preset);
#   3. four trials packed on the GPU at once (what fractional GPUs in a sweep do), which also
#      is the bf16 convergence check: mnist_amm_plus, seeds 0 and 1, fp32 and bf16, same budget.
# Usage: bash benchmarks/gpu.sh DATA_ROOT OUT_DIR   (DATA_ROOT holds mnist/MNIST/raw/*.gz)
# QUICK=1 shrinks every part (a dry run of the script on a CPU).
set -u
data=$1
out=$2
py=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
amm="$py -m amm_cli.main"
quick=${QUICK:-0}
steps=50 epochs=2 minutes=${MINUTES:-2} dev=cuda
# LEVERS: the rows of part 1; GRAPH=true: parts 2 and 3 with train.cuda_graph;
# AMPS / SEEDS: the packed trials of part 3
graph=${GRAPH:-false} amps=${AMPS:-none bf16} seeds=${SEEDS:-0 1}
[ "$quick" = 1 ] && steps=2 epochs=0.02 minutes=0.3 dev=cpu
mkdir -p "$out"

nvidia-smi -L 2>/dev/null
$py -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"

echo "== 1. step throughput (images/s), project / straightforward"
for lever in ${LEVERS:-fp32 bf16 compile torch_dropout graph graph_torch_dropout}; do
    case $lever in
        fp32) extra="" ;;
        bf16) extra="--set train.amp=bf16" ;;
        compile) extra="--set train.compile=true" ;;
        torch_dropout) extra="--set model.dropout_impl=torch" ;;
        graph) extra="--set train.cuda_graph=true" ;;
        graph_torch_dropout) extra="--set train.cuda_graph=true --set model.dropout_impl=torch" ;;
    esac
    # shellcheck disable=SC2086
    timeout 150 $py benchmarks/train_throughput.py --config configs/mnist_amm.yaml \
        --device "$dev" --steps "$steps" --rounds 3 $extra
done

echo "== 2. an epoch alone (configs/mnist_amm.yaml, $epochs epochs, evaluation at the default)"
timeout 150 $amm train configs/mnist_amm.yaml --data-dir "$data" --out "$out/alone" \
    --set train.epochs="$epochs" --set train.figures=false --set train.device="$dev" \
    --set train.cuda_graph="$graph" >/dev/null
$py - "$out/alone" "$epochs" <<'EOF'
import json, sys
final = json.load(open(f"{sys.argv[1]}/final.json"))
secs = final["perf/train_seconds"]
print(json.dumps({"alone_train_seconds": round(secs, 1), "epoch_seconds": round(secs / float(sys.argv[2]), 2)}))
EOF

echo "== 3. four trials at once on one GPU (mnist_amm_plus, $minutes min each)"
for amp in $amps; do
    for seed in $seeds; do
        timeout 400 $amm train configs/mnist_amm_plus.yaml --data-dir "$data" \
            --out "$out/pack-$amp-$seed" --set seed=$seed --set train.amp=$amp \
            --set train.cuda_graph="$graph" \
            --set train.max_minutes="$minutes" --set train.epochs=1000 \
            --set train.figures=false --set train.device="$dev" >/dev/null 2>"$out/pack-$amp-$seed.err" &
    done
done
(sleep 60; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv 2>/dev/null) &
wait
$py - "$out" <<'EOF'
import json, sys
from pathlib import Path
rows = {}
for d in sorted(Path(sys.argv[1]).glob("pack-*-*")):
    if not d.is_dir():
        continue
    lines = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines() if l]
    val = {m["step"]: m["val/error_gy"] for m in lines if "val/error_gy" in m}
    ips = [m["perf/images_per_sec"] for m in lines if "perf/images_per_sec" in m]
    rows[d.name] = val
    warned = [l for l in (d.parent / f"{d.name}.err").read_text().splitlines() if "capture" in l]
    if warned:
        print("\n".join(warned[:2]))
    print(json.dumps({"run": d.name, "steps": max(val), "val_error_last": val[max(val)],
                      "images_per_sec_median": sorted(ips)[len(ips) // 2]}))
common = sorted(set.intersection(*(set(v) for v in rows.values())))
for s in common[-3:]:
    print(json.dumps({"step": s, **{k: round(v[s], 4) for k, v in rows.items()}}))
EOF
