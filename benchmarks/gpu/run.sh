#!/usr/bin/env bash
# The GPU run: step throughput per backend, then accuracy, within a budget.
# From the repository root on the GPU machine, after benchmarks/gpu/prepare.sh
# (its bundle, whole or in parts, beside the repository):
#
#   bash benchmarks/gpu/run.sh --budget SECONDS --out DIR [options]
#
# The stages run most important first (benchmarks/gpu/stages.py lists them):
# Keras JAX and torch steps at mixed_bfloat16, Keras torch with Keras's own
# BatchNorm, native PyTorch, Keras JAX at float32, then the default recipe on
# JAX and on torch, then native and Keras torch steps under torch.compile
# (the training runs leave them their usual time). Each stage's figures reach DIR as
# it ends: table.md, results.json, run.log, then the charts.
#
# Options:
#   --budget SECONDS      wall-clock time for the whole run (required)
#   --out DIR             where the results go (required)
#   --max-files N         at most N files in DIR (default 8)
#   --bundle DIR          prepare.sh's bundle (default gpu-bundle)
#   --epochs N            epochs of each accuracy run (default 100, the
#                         recipe's); a run that reaches its share of the
#                         time stops with a checkpoint, and the table says so
#   --stages A,B          only these stages
#   --stage-limit SECONDS at most this long per throughput stage (default 180;
#                         one that takes longer fails; in a rehearsal, no
#                         limit but the budget, as a CPU may be busy)
#   --rehearse            a rehearsal on a CPU: the test model, a few steps,
#                         one epoch on random images
#   -h, --help
#
# Environment: PYTHON (default python3), BREAK_STAGE=<stage> (makes that
# stage fail, to check the run reports it). Exit status: 0 every stage that
# ran succeeded; 1 a stage failed; 2 the run could not start.
set -uo pipefail
cd "$(dirname "$0")/../.."
started=$(date +%s)
PYTHON=${PYTHON:-python3}
bundle=gpu-bundle budget= out= options=()
while [ $# -gt 0 ]; do
  case $1 in
    --budget | --out | --max-files | --bundle | --epochs | --stages | --stage-limit)
      [ $# -ge 2 ] || { echo "run.sh: $1 needs a value (see --help)" >&2; exit 2; } ;;&
    --budget) budget=$2; shift ;;
    --out) out=$2; shift ;;
    --bundle) bundle=$2; shift ;;
    --max-files | --epochs | --stages | --stage-limit) options+=("$1" "$2"); shift ;;
    --rehearse) options+=("$1") ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$budget" ] && [ -n "$out" ] || { echo "run.sh: --budget and --out are required (see --help)" >&2; exit 2; }

# A bundle split into parts: check and join them.
if [ ! -d "$bundle" ] && [ -f "$bundle.SHA256SUMS" ]; then
  (cd "$(dirname "$bundle")" && sha256sum -c --quiet "$(basename "$bundle").SHA256SUMS") \
    || { echo "run.sh: a part of $bundle is damaged" >&2; exit 2; }
  cat "$bundle".part-* | tar -C "$(dirname "$bundle")" -xf - \
    || { echo "run.sh: cannot unpack $bundle" >&2; exit 2; }
fi
[ -d "$bundle" ] || { echo "run.sh: no $bundle here: run benchmarks/gpu/prepare.sh first" >&2; exit 2; }

# What this Python lacks, from the bundle's wheels, without a network.
missing='import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("keras", "pytest_benchmark", "matplotlib")))'
if ! "$PYTHON" -c "$missing" 2>/dev/null; then
  if ! pip_said=$("$PYTHON" -m pip install -q --no-index --find-links "$bundle/wheels" \
      -r "$bundle/requirements.txt" 2>&1); then
    used=$(command -v "$PYTHON" || echo "$PYTHON")
    version=$("$PYTHON" -c 'import sys; print("Python %d.%d" % sys.version_info[:2])' 2>/dev/null || echo "no Python")
    echo "run.sh: $used ($version) lacks Keras, pytest-benchmark or matplotlib, and $bundle/wheels cannot install them there (pip: ${pip_said##*$'\n'}); choose a Python that has them, or the one the bundle was prepared for (prepare.sh --python-version), with PYTHON=/path/to/python" >&2
    exit 2
  fi
fi
# CIFAR-10 as prepare.sh left it: the binary files or the official archive.
[ -n "$(ls -A "$bundle/data" 2>/dev/null)" ] && options+=(--data-dir "$(cd "$bundle/data" && pwd)")

work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-run.XXXXXX")
mkdir -p "$out"
# `-m` puts the repository root (here) on the path of every stage.
export KERAS_HOME=$work/keras-home
{
  echo "run.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null \
    || echo "run.sh: no GPU listed by nvidia-smi"
  "$PYTHON" -m benchmarks.gpu.stages --budget "$budget" --out "$out" --work "$work" \
    --started-at "$started" "${options[@]}"
} 2>&1 | tee "$work/run.log"
status=${PIPESTATUS[0]}
# The whole log, if it is among the files DIR takes.
[ -f "$out/run.log" ] && cp "$work/run.log" "$out/"
exit "$status"
