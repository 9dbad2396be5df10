#!/usr/bin/env bash
# The device check for a lent GPU (docs/scaling.md): one short run, everything written under $OUT.
# Needs torch on the device and the prepared cases in the ignored folder device-cases/ (carried):
#   here:   python -m benchmarks run gpu --export device-cases     (hippocampus.npz + brats.npz, float16)
#           python -m benchmarks.device_plan export --out device-cases   (the datasets' fingerprints)
#   device: run(command="bash benchmarks/device_check.sh", carry=["device-cases"], timeout_s=600)
# Measures: the plan the card rule chooses on this card (plan.json: batch, its reason, the card
# figures assumed); sampler patches/s against batch size (batched on the card vs per patch) for both
# plans; training patches/s and GPU utilisation against batch size, the plan's batch among them;
# torch.compile on/off; a MINUTES-minute hippocampus run at the plan's batch, scored on held-out
# cases; the plan's throughput model against the measured patches/s (plan_check.json: the plan's
# batch against batch 2, the fitted per-step overhead and card rate against the assumed ones).
# nvidia-smi samples utilisation every 250 ms meanwhile.
set -u
OUT=${OUT:-/tmp/medseg-device-check}
CASES=${CASES:-device-cases}
MINUTES=${MINUTES:-3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 250 > "$OUT/util.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT
python - <<'PY' > "$OUT/stubs.txt" 2>&1
import importlib.util
print({m: importlib.util.find_spec(m) is not None for m in ("SimpleITK", "nibabel", "torch")})
PY
# 0. the plan the card rule chooses on this card (made here, from the fingerprints made where the data is)
python -m benchmarks.device_plan plan --cases "$CASES" --minutes "$MINUTES" --out "$OUT/plan.json" > "$OUT/plan.log" 2>&1
echo "plan: exit $?" >> "$OUT/summary.txt"
BATCH=$(python -c "import json; print(json.load(open('$OUT/plan.json'))['hippocampus']['minutes']['batch_size'])" \
    2>/dev/null || echo 8)
BATCHES=$(printf '%s\n' 2 8 32 "$BATCH" | sort -nu | tr '\n' ' ')
echo "plan batch (hippocampus, $MINUTES min): $BATCH; training batches measured: $BATCHES" >> "$OUT/summary.txt"
# 1. the sampler alone (stubs for SimpleITK/nibabel come with device_train's import)
timeout 150 python -c "import benchmarks.device_train, sys; from benchmarks.__main__ import main; \
sys.exit(main(['run', 'gpu', '--device', 'cuda', '--cases', '$CASES', '--batches', '2', '8', '32', '128', \
'--rounds', '3', '--steps', '10', '--out', '$OUT/gpu.json']))" > "$OUT/sampler.log" 2>&1
echo "sampler: exit $?" >> "$OUT/summary.txt"
# 2. training throughput and utilisation, compile, time to Dice
timeout $((MINUTES * 60 + 240)) python -m benchmarks.device_train --cases "$CASES" --out "$OUT/train.json" \
    --util-log "$OUT/util.csv" --batches $BATCHES --seconds 10 --minutes "$MINUTES" --dice-batch "$BATCH" \
    > "$OUT/train.log" 2>&1
echo "train: exit $?" >> "$OUT/summary.txt"
# 3. the plan's model against the measurements
python -m benchmarks.device_plan compare --plan "$OUT/plan.json" --train "$OUT/train.json" \
    --out "$OUT/plan_check.json" > "$OUT/plan_check.log" 2>&1
echo "plan check: exit $?" >> "$OUT/summary.txt"
grep -A3 "batch_size =" "$OUT/plan.log" | head -n 12
tail -n 30 "$OUT/sampler.log" "$OUT/train.log" "$OUT/plan_check.log" "$OUT/summary.txt"
