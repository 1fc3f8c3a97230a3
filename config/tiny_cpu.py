# The laptop-CPU demo: train on what the pipeline keeps of the built-in sample (~1,200 pages, ~1.2M
# tokens of our own 4,096-token vocabulary: PostgreSQL, SQLite, GIMP, Debian and Python manuals); the
# whole main command took 3 min 53 s on a quiet 2-core VM, 2 min 49 s of it here:
#   python scrape.py --warc=data/sample/pages.warc.gz && python clean.py && python dedup.py
#   python tokenizer.py && python prepare.py --tokenizer=data/tokenizer
#   python train.py config/tiny_cpu.py && python sample.py --ckpt=out/ckpt.pt
# Where the compute goes: with GPT-2's 50k vocabulary a model this small spends ~85% of its work in the
# output layer; with the corpus's own 4k vocabulary the same budget trains ~5x more tokens per CPU-second
# through 4 layers of 128 with a context of 256 tokens. What decides the loss at this budget is how many
# optimizer steps it buys more than how big they are: the same 0.9M tokens (0.8 passes over the training
# data) as 880 steps of 1,024 tokens end at 2.01 bits per byte, as 220 steps of 4,096 at 2.22 (19% more
# CPU for the small steps; probes in bench/RESULTS.md). The output layer is untied from the embedding
# (tied: 2.28, and the loss sat at the unigram plateau from step ~20 to ~110 of 220), and the learning
# rate stays flat, then falls to zero over the last 30% (cosine down to 2e-4: 2.01). Then the token
# embedding got a learning rate of its own, 100x the rest (0.2 against 2e-3, as nanochat's embedding
# has), and no weight decay: the loss falls through the unigram entropy (6.86 nats) by step ~25 and
# keeps falling, where at 2e-3 it sat there until step ~100; the run ends at 1.80 bits per byte instead
# of 1.96, and the spike the untied layout had after the warmup (step 31) is gone. AdamW's betas
# (0.8, 0.99) instead of (0.9, 0.95) took it to 1.77.
# Measured (2026-12-01, one thread, 240-320 CPU-s by the VM's load): val loss 8.34 -> 4.78 nats, 1.77 bits per
# byte on the held-out pages.
vocab_size = 4096  # tokenizer.py's default: 4,095 merges + <|endoftext|>
tie_embeddings = False  # see above; export.py writes the separate output layer to HF and GGUF
n_layer = 4
n_head = 4
n_embd = 128
block_size = 256
dropout = 0.0
bias = False
batch_size = 4
batch_tokens = 1024  # 4 x 256, one forward pass a step; a multiple of block_size x 2, so torchrun on 2 processes splits it
max_iters = 880
learning_rate = 2e-3  # small models take a larger learning rate
embedding_lr = 0.2    # the token embedding's own rate (see above); at 0.05: 1.81 bits per byte
weight_decay = 0.0    # 0.8 passes over the data leave little to overfit; 0.1 (at embedding_lr 0.05): 1.83
beta1 = 0.8           # the gradient's running mean forgets faster (nanochat's and modded-nanogpt's Adam)
beta2 = 0.99          # and its running size slower, as nanoGPT's small runs have it: 1.80 -> 1.78 -> 1.77
warmup_iters = 20
schedule = 'wsd'      # flat, then linear down to min_lr over the last decay_frac (before the embedding rate:
decay_frac = 0.3      # 1.96 bits per byte, where cosine down to 2e-4 ended at 2.01; with it, 0.5: 1.80 too)
min_lr = 0.0
eval_interval = 220
eval_iters = 32       # 32 x 4 windows of 256 tokens: ~33k val tokens, the same ones every eval
device = 'cpu'  # 'auto' would pick mps on a Mac
dtype = 'float32'
compile = False  # compiling takes longer than this whole run saves
