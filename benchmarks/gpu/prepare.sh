#!/usr/bin/env bash
# Prepare, on this machine (the repo with ../shared beside it), what
# benchmarks/gpu/run.sh needs on a GPU machine that has PyTorch and JAX (CUDA)
# but no Keras, no TensorFlow and no network; or for its CPU rehearsal.
#
#   bash benchmarks/gpu/prepare.sh             Keras wheels: .whl/py3.12/ (2.9 MB)
#   bash benchmarks/gpu/prepare.sh data        and CIFAR-10 in three parts
#   bash benchmarks/gpu/prepare.sh --rehearse  both, and the same wheels for
#                                              this machine's Python (PYTHON,
#                                              default python3): .whl/pyX.Y/
#
# At most 64 MiB travels with one device call and each CIFAR-10 file is ~23 MB
# xz-packed, so the six files go in three parts of two, one part per call:
# .gpu-carry-1 (data_batch_1, data_batch_2), .gpu-carry-2 (data_batch_3,
# data_batch_4), .gpu-carry-3 (data_batch_5, test_batch). run.sh unpacks what
# it finds into .gpu-data/, which stays on the warm machine between calls.
#
# The rehearsal's wheels: the pure-Python ones are the GPU's own files; each
# compiled one (optree) is the same version, fetched for this Python from the
# package index pip is configured with. These folders are ignored through
# .git/info/exclude (local, never committed). Environment: SHARED (default
# ../shared), PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
. benchmarks/gpu/wheels.sh
shared=${SHARED:-../shared}
PYTHON=${PYTHON:-python3}

data=0 rehearse=0
for argument in "$@"; do
  case $argument in
    data) data=1 ;;
    --rehearse) data=1 rehearse=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prepare.sh: unknown argument $argument (see --help)" >&2; exit 2 ;;
  esac
done

mkdir -p .git/info
for pattern in /.whl/ '/.gpu-carry-*/' /.gpu-data/ '/benchmark-results-*/'; do
  grep -qxF "$pattern" .git/info/exclude 2>/dev/null || echo "$pattern" >> .git/info/exclude
done

gpu_wheels=$(wheel_dir "$GPU_PYTHON_VERSION")
mkdir -p "$gpu_wheels"
rm -f .whl/*.whl "$gpu_wheels"/*.whl  # the old flat layout, and stale versions
cp "$shared"/wheels/gpu-py312/*.whl "$gpu_wheels"/
echo "prepare.sh: $(ls "$gpu_wheels" | wc -l) wheels in $gpu_wheels ($(du -sh "$gpu_wheels" | cut -f1))"

if [ "$rehearse" = 1 ]; then
  version=$(python_version "$PYTHON")
  here=$(wheel_dir "$version")
  if [ "$here" != "$gpu_wheels" ]; then
    find_pip "$PYTHON" || { echo "prepare.sh: no pip for $PYTHON or on PATH" >&2; exit 1; }
    mkdir -p "$here"
    rm -f "$here"/*.whl
    for wheel in "$gpu_wheels"/*.whl; do
      file=$(basename "$wheel")
      case $file in
        *-py3-none-any.whl) cp "$wheel" "$here/" ;;
        *)
          name=${file%%-*}
          rest=${file#*-}
          requirement="$name==${rest%%-*}"
          "${PIP[@]}" download -q --no-deps --only-binary=:all: "${PIP_FLAGS[@]}" \
            -d "$here" "$requirement" \
            || { echo "prepare.sh: cannot fetch $requirement for Python $version" >&2; exit 1; }
          ;;
      esac
    done
  fi
  echo "prepare.sh: $(ls "$here" | wc -l) wheels in $here, for the rehearsal under $PYTHON"
fi

if [ "$data" = 1 ]; then
  source_data=$shared/data/cifar10
  parts=("data_batch_1 data_batch_2" "data_batch_3 data_batch_4" "data_batch_5 test_batch")
  for i in 1 2 3; do
    part=.gpu-carry-$i
    rm -rf "$part"
    mkdir -p "$part"
    for name in ${parts[$((i - 1))]}; do
      cp "$source_data/$name.bin.xz" "$part/"
      grep -E " $name\.bin\$" "$source_data/SHA256SUMS" >> "$part/SHA256SUMS"
    done
    echo "prepare.sh: $part: ${parts[$((i - 1))]} ($(du -sh "$part" | cut -f1))"
  done
  cp "$source_data/batches.meta.txt" .gpu-carry-1/
fi
