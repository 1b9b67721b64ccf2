#!/usr/bin/env bash
# The GPU benchmark suites on one CUDA GPU. Each part has a time budget and the suite a total one (TOTAL_BUDGET
# seconds, default 480): a part that runs out or fails is recorded as such and the rest still run; a part that would
# start with under 15 s left is skipped. Results are appended to one JSON file; the suite ends with a summary table
# (also written next to it, <results>-summary.txt).
#
#     bash benchmarks/run_gpu.sh [results.json]                 # SUITE=end-to-end (default): issue 15
#     SUITE=models bash benchmarks/run_gpu.sh [results.json]    # the model comparisons of 2026-11-27
#     SUITE=fsdp bash benchmarks/run_gpu.sh [results.json]      # FSDP on one GPU: train, save, kill, resume (issue 22)
#     SUPMAE_BENCH_SMOKE=1 bash benchmarks/run_gpu.sh out.json  # every part on the CPU at tiny sizes (tests use it)
#
# end-to-end, cheap parts first (expected on an H200 with a cold compiler cache, about 8 minutes in all):
#   1 nvJPEG decoding vs the CPU path, and its speed (gpu_decode_check.py; exits 1 on disagreement)     ~25 s
#   1b the segmentation step, UperNet on our backbone vs on Transformers' BEiT (issue 13)              ~30 s
#   2 the CPU input pipeline on this machine, originals and prepared files (input_pipeline.py)       ~20 s
#   3 the compiled 1-block step: fused vs default AdamW at batch 512, 1024, 2048 (train_step.py)     ~160 s
#   4 end to end at the best batch of 3 (at most 1024), 15 workers: the image folder with GPU decoding,
#     prepared shards (shorter side 256) and the image folder with CPU workers (end_to_end.py)       ~200 s
#   5 a torch.profiler profile of the step at that batch, by category (profile_step.py)               ~30 s
#   6 the step under CUDA graphs (compile mode reduce-overhead) at that batch, fused AdamW; its
#     baseline is part 3's default-mode row at the same batch (train_step.py)                       ~45 s
#
# Needs the package and its train extras installed (pip install -e ".[train]") on a machine with CUDA;
# PYTHON picks the interpreter (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
out=${1:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M).json}
suite=${SUITE:-end-to-end}
total=${TOTAL_BUDGET:-480}
mkdir -p "$(dirname "$out")"
results_dir=$(dirname "$out")

if [ -n "${SUPMAE_BENCH_SMOKE:-}" ]; then  # the same command lines, on the CPU at tiny sizes
  dev=cpu dtype=fp32 tiny=--tiny workers=1
  decode_check="--images 8 --batch_size 8 --rounds 1"
  pipeline="--images 4 --rounds 1 --size 320x240 --prepared 128"
  sweep="batch=4" rounds="--rounds 1 --warmup 1" at_most=8 default_batch=4
  e2e="--steps 2 --step_only_steps 1 --skip 2 --runs prepared:cpu,folder:cpu --max_side 128"
  profile_steps=1 seg_batch=2 seg_rounds="--rounds 1 --warmup 1"
  fsdp="--tiny --batch_size 4 --max_steps 4 --save_steps 1"
else
  "$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" || exit 1
  dev=cuda dtype=bf16 tiny= workers=$(( $(nproc) > 1 ? $(nproc) - 1 : 1 ))
  decode_check="--images 512 --batch_size 256 --rounds 5"
  pipeline="--rounds 5 --prepared 256"
  sweep="batch=512,1024,2048" rounds="--rounds 8 --warmup 3" at_most=1024 default_batch=512
  e2e="--steps 20 --runs folder:cuda,prepared:cpu,folder:cpu --max_side 256"
  profile_steps=5 seg_batch=16 seg_rounds="--rounds 10 --warmup 3"
  fsdp="--batch_size 32 --max_steps 12 --save_steps 4"
fi

part() {  # part SECONDS DESCRIPTION SCRIPT ARGS...
  local budget=$1 description=$2; shift 2
  local left=$(( total - SECONDS ))
  if (( left < 15 )); then
    echo "== $description: skipped, the suite's ${total}s are spent" | tee -a "${out%.json}.log"
    return
  fi
  (( budget > left )) && budget=$left
  echo "== $description (budget ${budget}s)"
  local start=$SECONDS
  timeout "$budget" "$python" "$@" --output "$out"
  local status=$?
  if (( status == 124 )); then
    echo "   $description: did not finish within ${budget}s" | tee -a "${out%.json}.log"
  elif (( status != 0 )); then
    echo "   $description: failed (exit status $status)" | tee -a "${out%.json}.log"
  fi
  echo "   ($((SECONDS - start)) s)"
}

if [ "$suite" = end-to-end ] || [ "$suite" = all ]; then
  part 60 "GPU decode (nvJPEG) vs the CPU path" benchmarks/gpu_decode_check.py --device $dev $decode_check
  part 60 "segmentation train step: UperNet on SupMAEBackbone vs BeitBackbone (ViT-B/16, 512 px, batch $seg_batch)" \
    benchmarks/segmentation_step.py --device $dev --dtype $dtype --batch_size $seg_batch $seg_rounds $tiny
  part 40 "input pipeline per core, originals and prepared files" benchmarks/input_pipeline.py $pipeline
  part 170 "compiled 1-block step, fused vs default AdamW, batch sweep" benchmarks/train_step.py --device $dev \
    --dtype $dtype --compile --comparison optimizer --sweep $sweep $rounds $tiny
  best=$("$python" benchmarks/summarize.py "$out" --best_batch --at_most $at_most --default $default_batch)
  echo "   best batch (at most $at_most): $best"
  part 220 "end to end at batch $best" benchmarks/end_to_end.py --device $dev --dtype $dtype --compile \
    --batch_size "$best" --workers $workers --data_dir "${TMPDIR:-/tmp}/supmae-end-to-end" $e2e $tiny
  part 60 "profile of the compiled 1-block step at batch $best" benchmarks/profile_step.py --device $dev \
    --dtype $dtype --compile --batch_size "$best" --steps $profile_steps $rounds --profile_dir "$results_dir" $tiny
  part 90 "1-block step under CUDA graphs (compile mode reduce-overhead) at batch $best" benchmarks/train_step.py \
    --device $dev --dtype $dtype --compile --compile_mode reduce-overhead --comparison supmae \
    --batch_size "$best" $rounds $tiny
fi

if [ "$suite" = models ] || [ "$suite" = all ]; then
  # Training step, ViT-B/16 224 px bf16: same architecture (8-block decoders) and the released recipes (1 vs 8 blocks).
  part 35 "train step, eager" benchmarks/train_step.py --device $dev --dtype $dtype --batch_size 128 --rounds 10 \
    --warmup 3 $tiny
  part 25 "inference, eager" benchmarks/inference.py --device $dev --dtype $dtype --batch_size 256 --rounds 10 \
    --warmup 3 $tiny
  part 35 "train step vs batch size" benchmarks/train_step.py --device $dev --dtype $dtype --comparison same \
    --sweep batch=64,128,256 --rounds 5 --warmup 2 $tiny
  part 40 "train step vs image size" benchmarks/train_step.py --device $dev --dtype $dtype --comparison both \
    --batch_size 64 --sweep image_size=224,384 --rounds 5 --warmup 2 $tiny
  part 25 "input pipeline" benchmarks/input_pipeline.py --rounds 5
  # Compiled (on an H200 with a cold compiler cache the three training models took over 170 s to compile).
  part 240 "train step, torch.compile" benchmarks/train_step.py --device $dev --dtype $dtype --batch_size 128 \
    --compile --rounds 10 --warmup 3 $tiny
  part 75 "inference, torch.compile" benchmarks/inference.py --device $dev --dtype $dtype --batch_size 256 \
    --compile --rounds 10 --warmup 3 $tiny
fi

if [ "$suite" = fsdp ] || [ "$suite" = all ]; then
  # The README's FSDP command (FSDP2, SupMAELayer wrapped, sharded checkpoints) on one GPU; on the CPU (smoke) the
  # same sequence without --fsdp, which CPUs refuse.
  part ${FSDP_BUDGET:-240} "FSDP on one GPU: train, save, kill, resume (run_pretraining.py --fsdp)" benchmarks/fsdp_check.py \
    --device $dev $fsdp
fi

echo
"$python" benchmarks/summarize.py "$out" | tee "${out%.json}-summary.txt"
echo "results: $out"
