#!/usr/bin/env bash
# Run HERE (the machine with the repo and ../shared), before benchmarks/gpu/run.sh
# goes to a GPU machine that has PyTorch and JAX (CUDA) but no Keras, no
# TensorFlow and no network.
#
#   bash benchmarks/gpu/prepare.sh          # Keras wheels into .whl/ (2.9 MB)
#   bash benchmarks/gpu/prepare.sh data     # and CIFAR-10 in three parts
#
# At most 64 MiB travels per call and each CIFAR-10 file is ~23 MB xz-packed
# (~30 MB unpacked), so the six files go in three parts of two, one part per
# call: .gpu-carry-1 (data_batch_1, data_batch_2), .gpu-carry-2 (data_batch_3,
# data_batch_4), .gpu-carry-3 (data_batch_5, test_batch). run.sh unpacks what
# it finds into .gpu-data/, which stays on the warm machine between calls.
# The folders are ignored through .git/info/exclude (local, never committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${SHARED:-../shared}
wheels=$shared/wheels/gpu-py312
data=$shared/data/cifar10

for pattern in /.whl/ '/.gpu-carry-*/' /.gpu-data/ /benchmark-results-gpu/; do
  grep -qxF "$pattern" .git/info/exclude 2>/dev/null || echo "$pattern" >> .git/info/exclude
done

mkdir -p .whl
cp "$wheels"/*.whl .whl/
echo "prepare.sh: $(ls .whl | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1))"

if [ "${1:-}" = data ]; then
  parts=("data_batch_1 data_batch_2" "data_batch_3 data_batch_4" "data_batch_5 test_batch")
  for i in 1 2 3; do
    mkdir -p ".gpu-carry-$i"
    for name in ${parts[$((i - 1))]}; do
      cp "$data/$name.bin.xz" ".gpu-carry-$i/"
    done
    grep -E "$(echo ${parts[$((i - 1))]} | sed 's/ /|/g')" "$data/SHA256SUMS" > ".gpu-carry-$i/SHA256SUMS"
    echo "prepare.sh: .gpu-carry-$i: ${parts[$((i - 1))]} ($(du -sh .gpu-carry-$i | cut -f1))"
  done
  cp "$data/batches.meta.txt" .gpu-carry-1/
fi
