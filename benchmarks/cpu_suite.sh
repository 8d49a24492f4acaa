#!/bin/sh
# The runs behind benchmarks/README.md's "Results on this machine" (2 cores, llama.cpp backend
# for outpace's methods, the transformers peers in torch float32, which is as fast as bf16 on a
# CPU without avx512_bf16 and exact). Each run is resumable: rerun this script after an
# interruption. Run it on a quiet machine: anything else on the 2 cores changes the timings, and
# llama.cpp's spinning thread pool makes even a short test run beside it cost 3-6x (measured:
# 550 ms per token instead of 100 while a pytest process ran).
set -e
cd "$(dirname "$0")/.."
R=benchmarks/results
COMMON="--target qwen2.5-coder-1.5b --backend llama.cpp --threads 2 --dtype float32 --max-new-tokens 128 --draft-length 4"
FAMILY="ar,llama-cpp-ar,draft-model:qwen2.5-coder-0.5b,draft-model:qwen2.5-coder-0.5b@adaptive,prompt-lookup,prompt-lookup@adaptive,recycling,aded,stand,rest,rasd"

# 1. Spec-Bench, 1 prompt per task (7 turns), every drafter + the transformers peers
outpace bench $COMMON --per-task 1 --methods "$FAMILY,hf-assisted,hf-prompt-lookup" \
  --cost-profile benchmarks/profiles/gpu-like.json --out $R/cpu-specbench-1p-128t
# 2-3. Multi-draft at an equal budget (4 verified draft nodes per step), T = 0 and T = 1
MD="ar,draft-model:qwen2.5-coder-0.5b,spectr:qwen2.5-coder-0.5b,rsd:qwen2.5-coder-0.5b,dyspec:qwen2.5-coder-0.5b"
outpace bench $COMMON --per-task 1 --methods "$MD" --temperature 0 --out $R/cpu-multidraft-t0-1p-128t
outpace bench $COMMON --per-task 1 --methods "$MD" --temperature 1 --seed 0 --out $R/cpu-multidraft-t1-1p-128t
# 4. The cost-aware policy (chains and trees) on the same prompts, with the drafter state column
outpace bench $COMMON --per-task 1 \
  --methods "ar,llama-cpp-ar,draft-model:qwen2.5-coder-0.5b@adaptive,prompt-lookup@adaptive,rest,rest@adaptive" \
  --out $R/cpu-specbench-adaptive-1p-128t
# 5. HumanEval, first 3 problems, the model-free family
outpace bench $COMMON --suite humaneval --per-task 3 \
  --methods "ar,llama-cpp-ar,prompt-lookup,prompt-lookup@adaptive,recycling,aded,stand,rest,rest@adaptive,rasd" \
  --out $R/cpu-humaneval-3p-128t
# 6. What changes the llama.cpp cost curve: weight format, threads, prefill micro-batch
python benchmarks/cost_curves.py --out $R/cost-curves.json

# 7. Issue 2's torch measurement: the 1.5B target in bfloat16 (emulated on this CPU) against the
#    0.5B draft (fixed and cost-aware), prompt lookup, and transformers' own generate, 2 per task
outpace bench --target qwen2.5-coder-1.5b --backend torch --dtype bfloat16 --threads 2 \
  --max-new-tokens 128 --draft-length 4 --per-task 2 \
  --methods "ar,draft-model:qwen2.5-coder-0.5b,draft-model:qwen2.5-coder-0.5b@adaptive,prompt-lookup,hf-ar" \
  --out $R/torch-bf16-specbench-2p-128t
# 8. Flash attention on, off, and llama.cpp's own choice (auto = on for a CPU)
python benchmarks/cost_curves.py --groups flash --out $R/cost-curves-flash.json
#    ... and, since one pass is within the VM's noise, 4 order-alternating repeats of flash on/off
#    and of our prefill against llama-cpp-python's
python benchmarks/llama_cpp_repeats.py --out $R/llama-cpp-repeats.json
# 9-10. The best drafters with the cost-aware budget on the packaged Q4_K_M file and on a Q4_0
#    requantization of it (repacked kernels: cheaper batches), each against plain llama.cpp on
#    the same file, 1 prompt per task (as runs 1-4)
BEST="ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive,draft-model:qwen2.5-coder-0.5b@adaptive"
outpace bench $COMMON --per-task 1 --methods "$BEST" --out $R/cpu-q4_k_m-specbench-1p-128t
Q40=$(outpace models quantize qwen2.5-coder-1.5b --format q4_0)
outpace bench $COMMON --target "$Q40" --per-task 1 --methods "$BEST" --out $R/cpu-q4_0-specbench-1p-128t

# 11. The default configuration (issue 3) with the later issues' methods: 10 prompts per task,
#     256 new tokens, 14 methods, 980 turns, about seven hours; resumable, run over several sessions
ALL="ar,llama-cpp-ar,draft-model:qwen2.5-coder-0.5b,draft-model:qwen2.5-coder-0.5b@adaptive,prompt-lookup,prompt-lookup@adaptive,recycling,aded,stand,rest,rest@adaptive,rasd,hf-assisted,hf-prompt-lookup"
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 10 --max-new-tokens 256 --temperature 0 --methods "$ALL" \
  --cost-profile benchmarks/profiles/gpu-like.json --out $R/default-10p-256t

# 12. STAND's best-of-N setting: 4 samples of each of 2 math prompts at T = 1, the n-gram module
#     kept across the samples of a prompt (stand) against a fresh one (stand:share=never) and ar
python benchmarks/best_of_n.py --prompts 2 --samples 4 --max-new-tokens 128 --out $R/stand-best-of-n-2p-4s

# 13. HumanEval, first 10 problems, every drafter with and without the cost-aware budget, against
#     plain llama.cpp on the same file (methods in the balanced order; about 40 minutes)
outpace bench $COMMON --suite humaneval --per-task 10 \
  --methods "ar,llama-cpp-ar,draft-model:qwen2.5-coder-0.5b,draft-model:qwen2.5-coder-0.5b@adaptive,prompt-lookup,prompt-lookup@adaptive,recycling,aded,stand,rest,rest@adaptive,rasd" \
  --cost-profile benchmarks/profiles/gpu-like.json --out $R/cpu-humaneval-10p-128t

# 14. Graded budgets (the cost-aware policy conditioned on the n-gram drafters' match length, see
#     `benchmarks/replay_drafts.py`): the two graded drafters @adaptive and `rest` fixed against
#     `ar` and plain llama.cpp in one run, 5 prompts per task (35 turns), 256 tokens (about an hour)
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 5 --max-new-tokens 256 --temperature 0 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive,rest" \
  --cost-profile benchmarks/profiles/gpu-like.json --out $R/graded-5p-256t

# 15. ... and on HumanEval's first 10 problems, 128 tokens (about 10 minutes)
outpace bench $COMMON --suite humaneval --per-task 10 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" \
  --cost-profile benchmarks/profiles/gpu-like.json --out $R/graded-humaneval-10p-128t

# 16. The three Spec-Bench tasks where step 14's graded methods lost to plain llama.cpp
#     (translation, QA, RAG: the same 15 prompts, benchmarks/questions/), measured again
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --max-new-tokens 256 --temperature 0 \
  --questions benchmarks/questions/spec-bench-short-tasks-15.jsonl \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/graded-short-tasks-15p-256t

# 17. Step 16 again after the graded prior became Laplace's rule of succession (a grade never
#     seen starts at (g + 1) / (g + 2) instead of 1), three passes to separate the methods from
#     the machine's noise (about 35 minutes)
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --max-new-tokens 256 --temperature 0 --repeats 3 \
  --questions benchmarks/questions/spec-bench-short-tasks-15.jsonl \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/succession-short-tasks-15p-256t-3r

# 18. Step 17 again after the cost model became a level times a shape (a size not run lately no
#     longer keeps a stale absolute time beside the sizes that were; profiles are medians of 5
#     over sizes 1-5, 8, 16), three passes (about 35 minutes)
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --max-new-tokens 256 --temperature 0 --repeats 3 \
  --questions benchmarks/questions/spec-bench-short-tasks-15.jsonl \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/levelshape-short-tasks-15p-256t-3r

# 19. Step 15 (HumanEval, first 10 problems, 128 tokens) on the code of step 18 (about 10 minutes)
outpace bench $COMMON --suite humaneval --per-task 10 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/levelshape-humaneval-10p-128t

# 20. Step 14 (all six Spec-Bench tasks, 5 prompts each, 256 tokens) on the code of steps 18-19
#     plus the first token taken from the prefill's last logits row (the first step forwards only
#     its draft), without the fixed `rest` (about an hour)
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 5 --max-new-tokens 256 --temperature 0 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/prefill-head-5p-256t

# 21. Step 20 with a verification budget of 16 nodes instead of 4: on a machine whose cost curve
#     is steep for a few tokens and flat beyond 8 (AVX-512), only long drafts can pay
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 16 --per-task 5 --max-new-tokens 256 --temperature 0 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/prefill-head-dl16-5p-256t

# 22. Step 20 in three passes (about 45 minutes on the AVX-512 machine of steps 20-21), and
# 23. step 19 (HumanEval, first 10 problems, 128 tokens) in three passes on the same code
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 5 --max-new-tokens 256 --temperature 0 --repeats 3 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/prefill-head-5p-256t-3r
outpace bench $COMMON --suite humaneval --per-task 10 --repeats 3 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/prefill-head-humaneval-10p-128t-3r

# 24. Step 20 on the Q4_0 requantization (step 9's file, every method on that one file): on the
#     AVX-512 machine its repacked kernel verifies 4 tokens for 1.9 single ones, against 2.6 for
#     Q4_K_M (about 15 minutes)
outpace bench --target "$Q40" --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 5 --max-new-tokens 256 --temperature 0 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/prefill-head-q4_0-5p-256t

# 25. Step 24 in two more passes (about 23 minutes)
outpace bench --target "$Q40" --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 5 --max-new-tokens 256 --temperature 0 --repeats 2 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/prefill-head-q4_0-5p-256t-2r

# 26. Step 23 (HumanEval, first 10 problems, 128 tokens, three passes) on the Q4_0 file of
#     steps 24-25 (about 8 minutes on the AVX-512 machine)
outpace bench --target "$Q40" --backend llama.cpp --threads 2 --dtype float32 --max-new-tokens 128 \
  --draft-length 4 --suite humaneval --per-task 10 --repeats 3 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/prefill-head-q4_0-humaneval-10p-128t-3r

# 27. Does the policy know what a step costs? Belief against measured relative cost per task
#     and forward size, for each graded drafter (3 minutes each), and what moves the relative
#     cost (context, a parked sequence, time; 3 minutes)
python benchmarks/cost_tracking.py --drafter prompt-lookup --per-task 3 --out $R/cost-tracking-prompt-lookup-epyc.json
python benchmarks/cost_tracking.py --drafter rest --per-task 3 --out $R/cost-tracking-rest-epyc.json
python benchmarks/cost_tracking.py --sweep --out $R/cost-sweep-epyc.json

# 28. Steps 22 and 23 again after graded budgets stopped probing: drafts cut whole are judged
#     against the committed token, and grade rates are kept in order (about 40 + 6 minutes on
#     the AVX-512 machine), then steps 25 and 26 on the Q4_0 file (about 24 + 8 minutes). The
#     reports also compare on the turns of equal length.
python benchmarks/replay_drafts.py $R/prefill-head-5p-256t-3r --costs 1:1,2:1.9,3:2.5,4:3.0,5:3.7
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 5 --max-new-tokens 256 --temperature 0 --repeats 3 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/free-evidence-5p-256t-3r
outpace bench $COMMON --suite humaneval --per-task 10 --repeats 3 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/free-evidence-humaneval-10p-128t-3r
outpace bench --target "$Q40" --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 5 --max-new-tokens 256 --temperature 0 --repeats 2 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/free-evidence-q4_0-5p-256t-2r
outpace bench --target "$Q40" --backend llama.cpp --threads 2 --dtype float32 --max-new-tokens 128 \
  --draft-length 4 --suite humaneval --per-task 10 --repeats 3 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/free-evidence-q4_0-humaneval-10p-128t-3r
# ... and the 35 turns in two more passes after the drafting-cost fix (d443828, about 27 minutes)
outpace bench --target qwen2.5-coder-1.5b --backend llama.cpp --dtype float32 --threads 2 \
  --draft-length 4 --per-task 5 --max-new-tokens 256 --temperature 0 --repeats 2 \
  --methods "ar,llama-cpp-ar,prompt-lookup@adaptive,rest@adaptive" --out $R/free-evidence-5p-256t-2r-d443828
