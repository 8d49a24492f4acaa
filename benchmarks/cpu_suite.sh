#!/bin/sh
# The runs behind benchmarks/README.md's "Results on this machine" (2 cores, llama.cpp backend
# for outpace's methods, the transformers peers in torch float32, which is as fast as bf16 on a
# CPU without avx512_bf16 and exact). Each run is resumable: rerun this script after an
# interruption. Run it on a quiet machine: anything else on the 2 cores changes the timings.
set -e
cd "$(dirname "$0")/.."
R=benchmarks/results
COMMON="--target qwen2.5-coder-1.5b --backend llama.cpp --threads 2 --dtype float32 --max-new-tokens 128 --draft-length 4"
FAMILY="ar,llama-cpp-ar,draft-model:qwen2.5-coder-0.5b,draft-model:qwen2.5-coder-0.5b@adaptive,prompt-lookup,prompt-lookup@adaptive,recycling,aded,stand,rest,rasd"

# 1. Spec-Bench, 1 prompt per task (7 turns), every drafter + the peers
outpace bench $COMMON --per-task 1 --methods "$FAMILY,hf-assisted,hf-prompt-lookup" \
  --cost-profile benchmarks/profiles/gpu-like.json --out $R/cpu-specbench-1p-128t
# 2-3. Multi-draft at an equal budget (4 verified draft nodes per step), T = 0 and T = 1
MD="ar,draft-model:qwen2.5-coder-0.5b,spectr:qwen2.5-coder-0.5b,rsd:qwen2.5-coder-0.5b,dyspec:qwen2.5-coder-0.5b"
outpace bench $COMMON --per-task 1 --methods "$MD" --temperature 0 --out $R/cpu-multidraft-t0-1p-128t
outpace bench $COMMON --per-task 1 --methods "$MD" --temperature 1 --seed 0 --out $R/cpu-multidraft-t1-1p-128t
# 4. HumanEval, first 5 problems, every drafter
outpace bench $COMMON --suite humaneval --per-task 5 --methods "$FAMILY" \
  --cost-profile benchmarks/profiles/gpu-like.json --out $R/cpu-humaneval-5p-128t
