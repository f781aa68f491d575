#!/usr/bin/env bash
# One GPU lease's benchmarks, most important first, each stage with its own
# time limit and output file (benchmarks/gpu/plan.py lists them): the default
# recipe's accuracy on the faster Keras backend, its epochs fitted to the time
# left; then step throughput at batch 512 (Keras JAX and torch, native
# PyTorch); then the other backend's accuracy on the same schedule. For a
# machine with PyTorch and JAX (CUDA), pytest-benchmark and matplotlib, but
# no Keras, no TensorFlow and no network.
#
# Prepare here first (benchmarks/gpu/prepare.sh data), then, from the repo
# root on the GPU machine:
#
#   bash benchmarks/gpu/run.sh stage       only unpack the carried CIFAR-10
#                                          parts (.gpu-carry-*) into .gpu-data/
#   bash benchmarks/gpu/run.sh             stage what is there, install Keras,
#                                          run every stage (deadline 510 s)
#   bash benchmarks/gpu/run.sh --rehearse  the same on a CPU: the test model, a
#                                          slice of the data, short limits
#                                          (after prepare.sh --rehearse)
#
# Options: --deadline S (seconds from the start by which every stage has
# ended; default 510 on a GPU, 360 in the rehearsal), --stages a,b,... (run
# only these; the report always runs), -h/--help.
# Environment: PYTHON (default python3); OUT (the device tool's folder: the
# table, gpu-run.json, the log and the charts are copied there after every
# stage); RESULTS_DIR (default benchmark-results-gpu, or
# benchmark-results-rehearsal); BREAK_STAGE=<stage> (make that stage's command
# fail, to check that the run says so and exits non-zero).
#
# Exit status: 0 every stage that ran succeeded; 1 a stage failed (each says
# `STAGE <name> FAILED (...)`; the table and files are still written); 2 the
# run could not start (no Keras wheels for this Python, install failed, bad
# option); 128+N stopped by signal N.
set -uo pipefail
cd "$(dirname "$0")/../.."
. benchmarks/gpu/wheels.sh
start=$(date +%s)
PYTHON=${PYTHON:-python3}
data=.gpu-data/cifar-10-batches-bin

mode=gpu stage_only=0 driver_options=()
while [ $# -gt 0 ]; do
  case $1 in
    stage) stage_only=1 ;;
    --rehearse) mode=rehearsal ;;
    --deadline | --stages)
      [ $# -ge 2 ] || { echo "run.sh: $1 needs a value (see --help)" >&2; exit 2; }
      driver_options+=("$1" "$2")
      shift
      ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# Unpacks every carried part into $data, checking each file's SHA-256; files
# already there and whole are kept (a warm machine keeps .gpu-data/).
stage_data() {
  local part packed name want status=0
  mkdir -p "$data"
  for part in .gpu-carry-*/; do
    [ -d "$part" ] || continue
    [ -f "$part/batches.meta.txt" ] && cp "$part/batches.meta.txt" "$data/"
    for packed in "$part"*.bin.xz; do
      [ -f "$packed" ] || continue
      name=$(basename "$packed" .xz)
      want=$(awk -v f="$name" '$2==f {print $1}' "$part/SHA256SUMS")
      if [ -f "$data/$name" ] && [ "$(sha256sum "$data/$name" | cut -d' ' -f1)" = "$want" ]; then
        continue
      fi
      if command -v xz >/dev/null; then
        xz -dc "$packed" > "$data/$name.tmp"
      else
        "$PYTHON" -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' "$packed" "$data/$name.tmp"
      fi
      if [ "$(sha256sum "$data/$name.tmp" | cut -d' ' -f1)" = "$want" ]; then
        mv "$data/$name.tmp" "$data/$name"
      else
        echo "run.sh: STAGE data FAILED (checksum mismatch for $name)"
        rm -f "$data/$name.tmp"
        status=1
      fi
    done
  done
  echo "run.sh: $(ls "$data"/*.bin 2>/dev/null | wc -l) of 6 CIFAR-10 files in $data ($(( $(date +%s) - start )) s)"
  return $status
}

# Installs the carried wheels for this Python into a fresh folder, with no
# index and no dependencies, and makes sure that is the Keras imported.
install_keras() {
  local version wheels found
  version=$(python_version "$PYTHON") || { echo "run.sh: cannot run $PYTHON"; return 2; }
  wheels=$(wheel_dir "$version")
  if ! ls "$wheels"/*.whl >/dev/null 2>&1; then
    echo "run.sh: no Keras wheels for Python $version in $wheels (run" \
      "benchmarks/gpu/prepare.sh$([ "$mode" = rehearsal ] && echo ' --rehearse'))"
    return 2
  fi
  find_pip "$PYTHON" || { echo "run.sh: no pip to install $wheels with"; return 2; }
  site=$(mktemp -d "${TMPDIR:-/tmp}/keras-site.XXXXXX")
  PIP_ROOT_USER_ACTION=ignore "${PIP[@]}" install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$site" "${PIP_FLAGS[@]}" "$wheels"/*.whl \
    || { echo "run.sh: installing $wheels/*.whl into $site failed"; return 2; }
  export PYTHONPATH="$site:$PWD"
  found=$(KERAS_BACKEND=jax "$PYTHON" -c 'import keras; print(keras.__version__, keras.__file__)') \
    || { echo "run.sh: keras does not import from $site"; return 2; }
  case ${found#* } in
    "$site"/*) echo "run.sh: keras ${found% *} from ${found#* } ($(( $(date +%s) - start )) s)" ;;
    *) echo "run.sh: keras imported from ${found#* }, not from the fresh $site"; return 2 ;;
  esac
}

if [ "$stage_only" = 1 ]; then
  stage_data
  exit
fi

results=${RESULTS_DIR:-benchmark-results-gpu}
[ "$mode" = rehearsal ] && results=${RESULTS_DIR:-benchmark-results-rehearsal}
# A fresh folder each run (stale figures would join the table), but never
# one that holds anything other than an earlier run.
if [ -d "$results" ] && [ -n "$(ls -A "$results")" ] \
  && [ ! -f "$results/run-log.txt" ] && [ ! -f "$results/gpu-run.json" ]; then
  echo "run.sh: $results holds files but no earlier run; choose another RESULTS_DIR" >&2
  exit 2
fi
rm -rf "$results"
mkdir -p "$results"
results=$(cd "$results" && pwd)
log=$results/run-log.txt

main() {
  site=
  trap '[ -n "$site" ] && rm -rf "$site"' EXIT
  echo "run.sh: $mode run, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(uname -n)"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,temperature.gpu \
    --format=csv 2>/dev/null || echo "run.sh: nvidia-smi lists no GPU"
  # A data problem fails only the accuracy stages; the driver says so.
  stage_data
  install_keras || return 2
  export PYTHONUNBUFFERED=1 KERAS_HOME=$results/keras-home
  "$PYTHON" benchmarks/gpu/driver.py --profile "$mode" --data-dir "$data" \
    --results "$results" --started-at "$start" "${driver_options[@]}"
}

main 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
  # The whole log, now that tee has ended (16 MiB at most comes back).
  mkdir -p "$OUT"
  tail -c 15728640 "$log" > "$OUT/$(basename "$log")"
fi
exit "$status"
