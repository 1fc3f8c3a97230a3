# A few minutes on a laptop CPU, on the built-in sample (~0.7M GPT-2 tokens of Debian and Python docs):
#   python prepare.py --input=data/sample        # or the whole pipeline on data/sample/pages.warc.gz
#   python train.py config/tiny_cpu.py
#   python sample.py --ckpt=out/ckpt.pt
# A 4-layer, 128-wide GPT: the loss falls from ~10.8 (uniform over 50k tokens) to ~5.5-6 in ~0.9 epoch,
# enough for samples that look like the pages (words, markup-ish structure), not for sense.
n_layer = 4
n_head = 4
n_embd = 128
block_size = 128
dropout = 0.0
batch_size = 16
batch_tokens = 2048  # 16 x 128: one forward pass per step
max_iters = 300
learning_rate = 2e-3  # small models take a larger learning rate
warmup_iters = 30
lr_decay_iters = 300
min_lr = 2e-4
eval_interval = 50
eval_iters = 10
device = 'cpu'  # 'auto' would pick mps on a Mac
dtype = 'float32'
compile = False  # compiling takes longer than this whole run saves
