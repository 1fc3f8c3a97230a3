# The laptop-CPU demo: train on what the pipeline keeps of the built-in sample (~1,200 pages, ~1.2M
# tokens of our own 4,096-token vocabulary: PostgreSQL, SQLite, GIMP, Debian and Python manuals), in
# about three minutes on 2 cores:
#   python scrape.py --warc=data/sample/pages.warc.gz && python clean.py && python dedup.py
#   python tokenizer.py && python prepare.py --tokenizer=data/tokenizer
#   python train.py config/tiny_cpu.py && python sample.py --ckpt=out/ckpt.pt
# Where the compute goes: with GPT-2's 50k vocabulary a model this small spends ~85% of its work in the
# output layer and its embedding rows are mostly never trained; with the corpus's own 4k vocabulary the
# same budget trains 5x more tokens per CPU-second (~3,500 vs ~660 on one core) through 4 layers of 128
# with a context of 256 tokens. 220 steps of 4,096 tokens is ~0.9M tokens, about 0.8 passes over the
# training data: no repetition, so the val loss keeps falling to the end. Measured (2026-12-01): val loss
# 8.34 -> 6.11 nats, 2.28 bits per byte on the held-out pages; the goal of 2.0 is not reached yet (the run
# spends steps ~20-110 at the unigram plateau; see bench/RESULTS.md).
vocab_size = 4096  # tokenizer.py's default: 4,095 merges + <|endoftext|>
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
dropout = 0.0
bias = False
batch_size = 16
batch_tokens = 4096  # 16 x 256, one forward pass a step; divisible by block_size x 2 for torchrun on 2 processes
max_iters = 220
learning_rate = 2e-3  # small models take a larger learning rate
warmup_iters = 20     # ~10% of the run
lr_decay_iters = 220  # cosine down to min_lr at the last step
min_lr = 2e-4
eval_interval = 55
eval_iters = 8        # 8 x 16 windows of 256 tokens: ~33k val tokens, the same ones every eval
device = 'cpu'  # 'auto' would pick mps on a Mac
dtype = 'float32'
compile = False  # compiling takes longer than this whole run saves
