#!/usr/bin/env bash
# The benchmark suite on one CUDA GPU, in under 8 minutes (each part has a time budget; a part that runs out is
# recorded as such and the rest still run). Results are appended to one JSON file. The cheap eager parts run
# first, the torch.compile ones last, so a short lease still records the main numbers.
#
#     bash benchmarks/run_gpu.sh [results.json]
#
# Needs the package and its train extras installed (pip install -e ".[train]") on a machine with CUDA;
# PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${1:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M).json}
mkdir -p "$(dirname "$out")"
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 1

part() {  # part SECONDS DESCRIPTION SCRIPT ARGS...
  local budget=$1 description=$2; shift 2
  echo "== $description (budget ${budget}s)"
  local start=$SECONDS
  if ! timeout "$budget" "$python" "$@" --output "$out"; then
    echo "   $description: did not finish within ${budget}s or failed" | tee -a "${out%.json}.log"
  fi
  echo "   ($((SECONDS - start)) s)"
}

# Training step, ViT-B/16 224 px bf16: same architecture (8-block decoders) and the released recipes (1 vs 8 blocks).
part 35 "train step, eager" benchmarks/train_step.py --device cuda --dtype bf16 --batch_size 128 --rounds 10 --warmup 3
# Inference, ViT-B/16 classifier.
part 25 "inference, eager" benchmarks/inference.py --device cuda --dtype bf16 --batch_size 256 --rounds 10 --warmup 3
# How the cost grows.
part 35 "train step vs batch size" benchmarks/train_step.py --device cuda --dtype bf16 --comparison same \
  --sweep batch=64,128,256 --rounds 5 --warmup 2
part 40 "train step vs image size" benchmarks/train_step.py --device cuda --dtype bf16 --comparison both \
  --batch_size 64 --sweep image_size=224,384 --rounds 5 --warmup 2
# Segmentation training step: UperNet on SupMAEBackbone vs on BeitBackbone, ViT-B/16 at 512 px, batch 16 (mmseg's MAE
# ADE20K recipe; expect about 30 s: two UperNets built, a counted step each, 2 x 13 steps).
part 60 "segmentation train step, eager" benchmarks/segmentation_step.py --device cuda --dtype bf16 --batch_size 16 \
  --rounds 10 --warmup 3
# The CPU input pipeline of the same machine, images/s per core.
part 25 "input pipeline" benchmarks/input_pipeline.py --rounds 5
# Compiled (on an H200 with a cold compiler cache the three training models took over 170 s to compile).
part 240 "train step, torch.compile" benchmarks/train_step.py --device cuda --dtype bf16 --batch_size 128 --compile \
  --rounds 10 --warmup 3
part 75 "inference, torch.compile" benchmarks/inference.py --device cuda --dtype bf16 --batch_size 256 --compile \
  --rounds 10 --warmup 3
echo "results: $out"
