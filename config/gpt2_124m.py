# GPT-2 (124M) on ~10B tokens, llm.c's recipe, on one node of 8 GPUs (~1 hour on 8 H100s at 40% MFU;
# llm.c takes 90 minutes on 8 A100s):
#   torchrun --nproc_per_node=8 train.py config/gpt2_124m.py [--parallel=fsdp]
# 8 GPUs x 64 sequences x 1024 tokens = 524,288 tokens per step, no accumulation; on fewer GPUs, or
# with --batch_size lowered to fit memory, accumulation keeps the step at 524,288 tokens.
# On 10B tokens of FineWeb, llm.c's run of this recipe edges out OpenAI's GPT-2 (124M) on HellaSwag.
n_layer = 12
n_head = 12
n_embd = 768
block_size = 1024
vocab_size = 50304  # 50257 padded to a multiple of 64: faster matmuls
bias = True  # GPT-2's and llm.c's architecture
dropout = 0.0
batch_size = 64
batch_tokens = 524288
max_iters = 19073  # x 524,288 = 10.0B tokens
learning_rate = 6e-4
warmup_iters = 700
lr_decay_iters = 19073
min_lr = 0.0  # llm.c decays to zero
weight_decay = 0.1
grad_clip = 1.0
eval_interval = 500  # evaluate and checkpoint (~1.5 GB) every 262M tokens
eval_iters = 20  # 20 x 524,288 = 10.5M val tokens per eval: prepare.py's whole default val shard
compile = True
