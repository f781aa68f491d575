#!/usr/bin/env bash
# Gathers, on a machine with a network, what benchmarks/gpu/run.sh needs on a
# GPU machine that may have none: Keras and the benchmark tools as wheels, and
# CIFAR-10. The GPU machine is expected to have its Python with PyTorch and
# JAX for CUDA (run.sh installs only what it lacks from the bundle).
#
#   bash benchmarks/gpu/prepare.sh [options]
#
# Options:
#   --bundle DIR          where to gather it all (default gpu-bundle)
#   --part-size MB        also split the bundle into parts of at most MB
#                         megabytes (DIR.part-aa, -ab, ...) with a SHA256SUMS
#                         file, for transfer tools with a size cap; run.sh
#                         joins them again (default: no split)
#   --python-version X.Y  the GPU machine's Python, for its wheels (default:
#                         this machine's)
#   --platform TAG        the GPU machine's platform tag (default: this one's)
#   --data DIR            take CIFAR-10 from DIR (a folder or the official
#                         archive) instead of downloading it
#   --rehearse            a bundle for a rehearsal on this machine: no wheels
#                         (this Python has them) and no data (random images)
#   -h, --help
#
# Environment: PYTHON (default python3), KERAS_CIFAR_RESNET_DATA (as --data).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-python3}
CIFAR10_URL=https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz
PACKAGES=(keras pytest pytest-benchmark matplotlib)

bundle=gpu-bundle part_size=0 rehearse=0 data=${KERAS_CIFAR_RESNET_DATA:-}
target=()
while [ $# -gt 0 ]; do
  case $1 in
    --bundle | --part-size | --python-version | --platform | --data)
      [ $# -ge 2 ] || { echo "prepare.sh: $1 needs a value" >&2; exit 2; } ;;&
    --bundle) bundle=$2; shift ;;
    --part-size) part_size=$2; shift ;;
    --python-version) target+=(--python-version "$2"); shift ;;
    --platform) target+=(--platform "$2"); shift ;;
    --data) data=$2; shift ;;
    --rehearse) rehearse=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "prepare.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $part_size in '' | *[!0-9]*) echo "prepare.sh: --part-size takes whole MB" >&2; exit 2 ;; esac

rm -rf "$bundle" "$bundle".part-* "$bundle".SHA256SUMS
mkdir -p "$bundle/wheels" "$bundle/data"
printf '%s\n' "${PACKAGES[@]}" > "$bundle/requirements.txt"

if [ "$rehearse" = 0 ]; then
  [ ${#target[@]} -gt 0 ] && target+=(--only-binary=:all:)
  "$PYTHON" -m pip download -q -d "$bundle/wheels" "${target[@]}" "${PACKAGES[@]}"
  echo "prepare.sh: $(ls "$bundle/wheels" | wc -l) wheels in $bundle/wheels"
  if [ -d "$data" ]; then
    cp "$data"/*.bin "$data"/batches.meta.txt "$bundle/data/" 2>/dev/null || cp "$data"/*.bin "$bundle/data/"
  elif [ -f "$data" ]; then
    cp "$data" "$bundle/data/"
  else
    echo "prepare.sh: downloading CIFAR-10 from $CIFAR10_URL"
    "$PYTHON" -c 'import sys, urllib.request; urllib.request.urlretrieve(*sys.argv[1:])' \
      "$CIFAR10_URL" "$bundle/data/cifar-10-binary.tar.gz"
  fi
fi
echo "prepare.sh: $bundle holds $(du -sh "$bundle" | cut -f1)"

if [ "$part_size" -gt 0 ]; then
  tar -C "$(dirname "$bundle")" -cf - "$(basename "$bundle")" | split -b "${part_size}M" - "$bundle.part-"
  (cd "$(dirname "$bundle")" && sha256sum "$(basename "$bundle")".part-*) > "$bundle.SHA256SUMS"
  rm -rf "$bundle"
  echo "prepare.sh: $(ls "$bundle".part-* | wc -l) parts of at most $part_size MB:" \
    "copy $bundle.part-* and $bundle.SHA256SUMS beside the repository on the GPU machine"
fi
