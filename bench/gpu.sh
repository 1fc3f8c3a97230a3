#!/usr/bin/env bash
# The checks that need a GPU, in one run, for a GPU machine borrowed for a few minutes:
#
#     bash bench/gpu.sh [LOG_FOLDER]        (default: $OUT if set, else /tmp/gpu-checks)
#
#   1. kernel  tests/test_kernel.py on the GPU, compiled by Triton (CI runs it in Triton's interpreter)
#   2. ce      bench/ce.py: the fused cross-entropy against the floor of 4 bytes per logit (goal >= 75%)
#   3. mfu     bench/train.py --gpu: GPT-2 124M on one GPU, tokens/s and MFU (goal >= 50%)
#   4. ddp, fsdp  torchrun over every GPU with NCCL, a few steps each from the same start; with one
#              GPU that is a world of one (the NCCL code path, not the 2-GPU check)
#   5. device  sample.py --device=cuda:0 on the DDP run's checkpoint (check_device's cuda:N branch)
#
# Each check has its own time limit and the next one runs whatever the last one did, so one hung or
# failing check costs its limit and no more; each writes LOG_FOLDER/NAME.log, and the summary at the
# end gives every check's exit status (124: it ran past its limit). Nothing here downloads: the data is
# the built-in sample, tokenized with the GPT-2 vocabulary shipped in data/. The limits add up to
# under 9 minutes, so one run fits a 10-minute call.
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${1:-${OUT:-/tmp/gpu-checks}}"
mkdir -p "$logs"
export PYTHONUNBUFFERED=1
python="${PYTHON:-python3}"
work="$(mktemp -d)"
summary=()

check() {  # check NAME SECONDS COMMAND...: run it under a time limit, log it, record its exit status
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s): $*"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$logs/$name.log" 2>&1
  local status=$?
  tail -n 25 "$logs/$name.log"
  summary+=("$name: exit $status after $((SECONDS - start)) s")
  echo "=== $name: exit $status after $((SECONDS - start)) s"
}

nvidia-smi -L
gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
"$python" -c 'import sys, torch, triton; print(f"python {sys.version.split()[0]}, torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.device_count()} GPU(s): {torch.cuda.get_device_name()}")'

check kernel 120 env TRITON_INTERPRET=0 "$python" -m pytest -q -p no:cacheprovider tests/test_kernel.py
check ce 120 "$python" bench/ce.py --blocks=0,4096,16384,65536
check mfu 150 "$python" bench/train.py --gpu --steps=30

"$python" prepare.py --input=data/sample --output="$work/tokens" > "$logs/prepare.log" 2>&1 || tail "$logs/prepare.log"
for parallel in ddp fsdp; do  # the same steps, seed and data: the two losses should agree to bf16's noise
  check "$parallel" 75 "$python" -m torch.distributed.run --standalone --nproc_per_node="$gpus" train.py \
    config/gpt2_124m.py --data="$work/tokens" --out_dir="$work/$parallel" --parallel="$parallel" \
    --max_iters=6 --batch_tokens=$((gpus * 8 * 1024)) --batch_size=8 --warmup_iters=2 --lr_decay_iters=6 \
    --eval_interval=6 --eval_iters=2 --compile=False
done
check device 45 "$python" sample.py --ckpt="$work/ddp/ckpt.pt" --device=cuda:0 --num_samples=1 --max_new_tokens=20

echo
echo "GPU checks on $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(date -u +%F):"
printf '  %s\n' "${summary[@]}"
grep -h "MFU" "$logs/mfu.log" | tail -1
for parallel in ddp fsdp; do echo "  $parallel: $(grep -h '^step' "$logs/$parallel.log" | tail -1)"; done
rm -rf "$work"
