# The laptop-CPU demo: train on what the pipeline keeps of the built-in sample (~100 pages, ~75k GPT-2
# tokens of Python, PostgreSQL and git docs), a few minutes on a laptop CPU:
#   python scrape.py --warc=data/sample/pages.warc.gz && python clean.py && python dedup.py && python prepare.py
#   python train.py config/tiny_cpu.py
#   python sample.py --ckpt=out/ckpt.pt
# A 4-layer, 128-wide GPT (7.2M parameters, 6.4M of them the 50k-token embedding, so the output layer is
# most of the work). 120 steps of 2,048 tokens, about 3 passes over the data: the val loss falls from
# 10.8 (uniform over 50k tokens) to about 6, enough for samples that look like the pages (their words,
# their markup-ish structure), not for sense.
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.0
batch_size = 16
batch_tokens = 2048  # 16 x 128: one forward pass per step
max_iters = 120
learning_rate = 2e-3  # small models take a larger learning rate
warmup_iters = 10
lr_decay_iters = 120
min_lr = 2e-4
eval_interval = 30
eval_iters = 5
device = 'cpu'  # 'auto' would pick mps on a Mac
dtype = 'float32'
compile = False  # compiling takes longer than this whole run saves
