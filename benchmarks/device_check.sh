#!/usr/bin/env bash
# The device check for a lent GPU (docs/scaling.md): one short run, everything written under $OUT.
# Needs torch on the device and the prepared cases in the ignored folder device-cases/ (carried):
#   here:   python -m benchmarks run gpu --export device-cases     (hippocampus.npz + brats.npz, float16)
#   device: run(command="bash benchmarks/device_check.sh", carry=["device-cases"], timeout_s=540)
# Measures: sampler patches/s against batch size (batched on the card vs per patch) for both plans;
# training patches/s and GPU utilisation against batch size; torch.compile on/off; a MINUTES-minute
# hippocampus run's held-out Dice. nvidia-smi samples utilisation every 250 ms meanwhile.
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
# 1. the sampler alone (stubs for SimpleITK/nibabel come with device_train's import)
timeout 150 python -c "import benchmarks.device_train, sys; from benchmarks.__main__ import main; \
sys.exit(main(['run', 'gpu', '--device', 'cuda', '--cases', '$CASES', '--batches', '2', '8', '32', '128', \
'--rounds', '3', '--steps', '10', '--out', '$OUT/gpu.json']))" > "$OUT/sampler.log" 2>&1
echo "sampler: exit $?" >> "$OUT/summary.txt"
# 2. training throughput and utilisation, compile, time to Dice
timeout $((MINUTES * 60 + 240)) python -m benchmarks.device_train --cases "$CASES" --out "$OUT/train.json" \
    --util-log "$OUT/util.csv" --batches 2 8 32 --seconds 12 --minutes "$MINUTES" > "$OUT/train.log" 2>&1
echo "train: exit $?" >> "$OUT/summary.txt"
tail -n 30 "$OUT/sampler.log" "$OUT/train.log" "$OUT/summary.txt"
