#!/usr/bin/env bash
# Benchmarks on one GPU: the JAX and torch backends, the native PyTorch
# reference and (when the data is there) the accuracy runs, in about 8
# minutes, on a machine with PyTorch, JAX (CUDA), pytest-benchmark and
# matplotlib but no Keras, no TensorFlow and no network.
#
# Prepare here first (benchmarks/gpu/prepare.sh), then on the GPU machine,
# from the repo root:
#
#   bash benchmarks/gpu/run.sh          # everything
#   bash benchmarks/gpu/run.sh stage    # only unpack carried CIFAR-10 parts
#
# Knobs (environment): MODELS (resnet18), BATCH_SIZES (512), PRECISIONS
# (float32,mixed), ROUNDS (10), STEPS (10), NATIVE (auto: eager, eager-bf16,
# channels_last-bf16, compiled-channels_last-bf16), EPOCHS (10, the accuracy
# runs' length), BACKENDS ("jax torch"), STAGE_TIMEOUT (240 s per throughput
# stage: JAX, Keras torch, native torch), BUDGET (540 s: accuracy runs get
# what the throughput stages leave of it).
#
# Writes benchmark-results-gpu/ (JSON, table.md, chart.png, logs) and the
# table as benchmarks/results/<card>-<date>.md; with $OUT set (the device
# tool), copies the table, chart, JSON and log there to come back.
set -uo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
results=benchmark-results-gpu
mkdir -p "$results"
log=$results/run-log.txt
exec > >(tee -a "$log") 2>&1

# CIFAR-10 parts carried in .gpu-carry-*/ go to .gpu-data/, kept between
# calls on a warm machine; accuracy runs once all six files are there.
data=.gpu-data/cifar-10-batches-bin
mkdir -p "$data"
for part in .gpu-carry-*/; do
  [ -d "$part" ] || continue
  [ -f "$part/batches.meta.txt" ] && cp "$part/batches.meta.txt" "$data/"
  for packed in "$part"/*.bin.xz; do
    [ -f "$packed" ] || continue
    name=$(basename "$packed" .xz)
    want=$(awk -v f="$name" '$2==f {print $1}' "$part/SHA256SUMS")
    if [ -f "$data/$name" ] && [ "$(sha256sum "$data/$name" | cut -d' ' -f1)" = "$want" ]; then
      continue
    fi
    python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$packed" "$data/$name"
    got=$(sha256sum "$data/$name" | cut -d' ' -f1)
    [ "$got" = "$want" ] || { echo "run.sh: checksum mismatch for $name"; rm -f "$data/$name"; }
  done
done
have=$(ls "$data"/*.bin 2>/dev/null | wc -l)
echo "run.sh: $have of 6 CIFAR-10 files in $data"
if [ "${1:-}" = stage ]; then exit 0; fi

# Keras travels as wheels (skipped where Keras is already installed); the
# package itself runs from the tree.
if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site .whl/*.whl \
    || { echo "run.sh: no Keras wheels in .whl/ (run prepare.sh)"; exit 2; }
fi
export PYTHONPATH=/tmp/site:$PWD
export PYTHONUNBUFFERED=1 KERAS_HOME=/tmp/keras-home

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu --format=csv || true
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
card=${card:-cpu}
day=$(date -u +%Y-%m-%d)
python3 -c 'import jax, torch; print("jax", jax.__version__, jax.devices(), "| torch", torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))'

MODELS=${MODELS:-resnet18}
BATCH_SIZES=${BATCH_SIZES:-512}
PRECISIONS=${PRECISIONS:-float32,mixed}
ROUNDS=${ROUNDS:-10}
STEPS=${STEPS:-10}
NATIVE=${NATIVE:-auto}
EPOCHS=${EPOCHS:-10}
BACKENDS=${BACKENDS:-jax torch}
STAGE_TIMEOUT=${STAGE_TIMEOUT:-240}
BUDGET=${BUDGET:-540}
bench_args=(--models "$MODELS" --batch-sizes "$BATCH_SIZES" --precisions "$PRECISIONS"
  --rounds "$ROUNDS" --steps-per-round "$STEPS" --warmup-rounds 2)
elapsed() { echo $(( $(date +%s) - start )); }

# One pytest process per stage, each with its own JSON, so a stage that
# overruns its timeout loses only its own figures.
stages=()
for backend in $BACKENDS; do stages+=("$backend:keras"); done
[[ " $BACKENDS " == *" torch "* ]] && stages+=("torch:native")
for stage in "${stages[@]}"; do
  backend=${stage%%:*}
  what=${stage#*:}
  if [ "$what" = native ]; then
    select=(--native "$NATIVE" -k test_native_torch)
    json=$results/benchmark-native-torch.json
  else
    select=()
    json=$results/benchmark-$backend.json
  fi
  # JAX takes 75% of the GPU at its first use unless told otherwise; only its
  # own process gets to (keras imports jax under every backend).
  prealloc=false
  [ "$backend" = jax ] && prealloc=true
  echo "run.sh: throughput, $stage ($(elapsed) s so far)"
  XLA_PYTHON_CLIENT_PREALLOCATE=$prealloc KERAS_BACKEND=$backend \
    timeout "$STAGE_TIMEOUT" python3 -m pytest benchmarks/test_step_throughput.py \
    -p no:cacheprovider -q "${bench_args[@]}" "${select[@]}" --benchmark-json="$json" \
    || echo "run.sh: throughput stage $stage failed or timed out"
done

# Accuracy with whatever is left of BUDGET seconds (the report needs ~20 s).
if [ "$have" = 6 ]; then
  for backend in $BACKENDS; do
    left=$(( BUDGET - $(elapsed) - 30 ))
    if [ "$left" -lt 90 ]; then
      echo "run.sh: accuracy, $backend: skipped, $left s left of BUDGET=$BUDGET"
      continue
    fi
    prealloc=false
    [ "$backend" = jax ] && prealloc=true
    echo "run.sh: accuracy, $backend, $EPOCHS epochs, at most $left s ($(elapsed) s so far)"
    XLA_PYTHON_CLIENT_PREALLOCATE=$prealloc KERAS_BACKEND=$backend \
      timeout "$left" python3 benchmarks/accuracy.py --profile gpu \
      --epochs "$EPOCHS" --data-dir "$data" --output-dir /tmp/accuracy-runs \
      && cp /tmp/accuracy-runs/accuracy-"$backend".json "$results/" \
      || echo "run.sh: accuracy run for $backend failed or timed out"
  done
else
  echo "run.sh: accuracy skipped: $have of 6 CIFAR-10 files here (carry the three parts of prepare.sh data)"
fi

python3 benchmarks/report.py "$results" --command "bash benchmarks/gpu/run.sh (MODELS=$MODELS BATCH_SIZES=$BATCH_SIZES PRECISIONS=$PRECISIONS ROUNDS=$ROUNDS STEPS=$STEPS EPOCHS=$EPOCHS BUDGET=$BUDGET)"
mkdir -p benchmarks/results
target=benchmarks/results/$card-$day.md
{
  echo "# $card, $day"
  echo
  echo "Produced by \`benchmarks/gpu/run.sh\` in $(( $(date +%s) - start )) s."
  echo
  cat "$results/table.md"
} > "$target"
echo "run.sh: wrote $target ($(( $(date +%s) - start )) s in all)"
if [ -n "${OUT:-}" ]; then
  # At most 8 files come back: the table, chart, log and up to five JSON.
  cp "$target" "$results/chart.png" "$OUT/" 2>/dev/null
  cp "$results"/benchmark-*.json "$results"/accuracy-*.json "$OUT/" 2>/dev/null
  cp "$log" "$OUT/" 2>/dev/null
fi
exit 0
