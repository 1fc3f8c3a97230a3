"""
GPU benchmark of the fused cross-entropy (cross_entropy.py): loss + backward over N x V bf16 logits, against
F.cross_entropy eager and under torch.compile.

    python bench/ce.py [--tokens=8192,16384,32768,65536] [--vocab=50304] [--blocks=0] [--iters=20]

For each N, table 1 reports the time of loss + gradient w.r.t. the logits, the bandwidth achieved
against the floor of one read and one write of the logits (4 bytes per logit in bf16: whatever the
method, the logits must be read once and their gradient written once), that as a share of the GPU's
data-sheet bandwidth and of a measured device copy (also one read + one write), and the peak memory
allocated beyond the logits themselves. The fused kernel writes the gradient over the logits, so its
extra memory should be about zero; eager torch holds log-probabilities and a separate gradient.
--blocks=1024,4096,65536 also times the kernel with each column block size, to tune ce._launch
(0 = its automatic choice; a block as wide as the row reads each row once).

Table 2 is what training sees: lm_head's matmul + loss + backward from hidden states (N, --n_embd),
unfused (x @ W.T then F.cross_entropy) against ce.linear_cross_entropy over all rows at once (the
model's loss_impl='triton') and 2048 rows at a time ('chunked'), with their peak extra memory.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
import cross_entropy as ce  # noqa: E402

# HBM bandwidth from the data sheets, bytes/s; the first match in the device name wins
PEAK_BANDWIDTH = [('H100 PCIe', 2.0e12), ('H100 NVL', 3.9e12), ('H100', 3.35e12), ('H200', 4.8e12),
                  ('H800', 3.35e12), ('B200', 8.0e12), ('A100-SXM4-80GB', 2.039e12),
                  ('A100 80GB PCIe', 1.935e12), ('A100', 1.555e12), ('L40S', 0.864e12), ('L4', 0.3e12),
                  ('A10G', 0.6e12), ('A10', 0.6e12), ('RTX 4090', 1.008e12)]


def time_ms(fn, reset, iters):
    """Mean time of fn over iters runs, each after reset() (not timed), and the peak memory
    allocated during them beyond what was allocated before."""
    for _ in range(3):  # warm up: compile, autotune, allocator
        reset()
        fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    total = 0.0
    for _ in range(iters):
        reset()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        total += start.elapsed_time(end)
    return total / iters, torch.cuda.max_memory_allocated() - base


def grad_of(loss_fn, *inputs):
    return lambda: torch.autograd.grad(loss_fn(), inputs)


def loss_table(N, V, args, peak_bw, compiled, fused_compiled):
    master = torch.randn(N, V, device='cuda', dtype=torch.bfloat16) * 2
    logits = torch.empty_like(master).requires_grad_()
    targets = torch.randint(0, V, (N,), device='cuda')

    # sanity first: the kernel's loss and gradient against torch's in fp32, on a few rows
    x = master[:256].clone().requires_grad_()
    got = ce.cross_entropy(x, targets[:256])
    got_grad, = torch.autograd.grad(got, x)
    x32 = master[:256].float().requires_grad_()
    want = F.cross_entropy(x32, targets[:256])
    want_grad, = torch.autograd.grad(want, x32)
    assert torch.allclose(got, want, rtol=1e-4), (got, want)
    assert torch.allclose(got_grad.float(), want_grad, rtol=2 ** -7, atol=1e-9)

    def fresh():  # the fused kernel overwrites the logits: start every run from the same values
        logits.data.copy_(master)

    copy_dst = torch.empty_like(master)
    rows = [('device copy (1R+1W)', *time_ms(lambda: copy_dst.copy_(master), lambda: None, args.iters))]
    copy_dst = None  # free it
    methods = [('F.cross_entropy eager', grad_of(lambda: F.cross_entropy(logits, targets), logits))]
    if not args.no_compile:
        methods.append(('F.cross_entropy compile', grad_of(lambda: compiled(logits, targets), logits)))
    for block in [int(b) for b in args.blocks.split(',')]:
        methods.append((f"fused (block {block or 'auto'})", grad_of(
            lambda block=block: ce.cross_entropy(logits, targets, inplace=True, block=block), logits)))
    if not args.no_compile:  # train.py compiles the model: under compile the kernel must not clone
        methods.append(('fused under compile', grad_of(lambda: fused_compiled(logits, targets), logits)))
    methods.append(('fused, loss only (eval)', lambda: _loss_only(logits, targets)))
    for label, fn in methods:
        rows.append((label, *time_ms(fn, fresh, args.iters)))

    floor_bytes, logits_bytes = 4 * N * V, 2 * N * V  # bf16: 2 bytes read + 2 written per logit
    copy_ms = rows[0][1]
    for label, ms, extra in rows:
        tbps = floor_bytes / (ms * 1e-3) / 1e12
        sheet = f"{100 * tbps * 1e12 / peak_bw:.0f}%" if peak_bw else 'n/a'
        print(f"{label:<26}{N:>7}{ms:>10.3f}{tbps:>7.2f}{sheet:>9}{100 * copy_ms / ms:>7.0f}%"
              f"{extra / 1e9:>14.2f}{extra / logits_bytes:>10.2f}")
    print()


def linear_table(N, V, C, args):
    x = (torch.randn(N, C, device='cuda') * 0.5).to(torch.bfloat16).requires_grad_()
    w = (torch.randn(V, C, device='cuda') * 0.02).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, V, (N,), device='cuda')
    lce = ce.linear_cross_entropy
    methods = [('unfused: matmul + F.ce', grad_of(lambda: F.cross_entropy(x @ w.t(), targets), x, w)),
               ('linear_cross_entropy all', grad_of(lambda: lce(x, w, targets, chunk=N), x, w)),
               ('linear_cross_entropy 2048', grad_of(lambda: lce(x, w, targets, chunk=2048), x, w))]
    for label, fn in methods:
        ms, extra = time_ms(fn, lambda: None, args.iters)
        tflops = 6 * N * V * C / (ms * 1e-3) / 1e12  # one matmul forward, two backward
        print(f"{label:<26}{N:>7}{ms:>10.3f}{tflops:>9.0f}{extra / 1e9:>14.2f}{extra / (2 * N * V):>10.2f}")


def _loss_only(logits, targets):
    with torch.no_grad():
        return ce.cross_entropy(logits, targets)


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().split('\n\n')[0])
    p.add_argument('--tokens', default='8192,16384,32768,65536', help='comma-separated values of N')
    p.add_argument('--vocab', type=int, default=50304)
    p.add_argument('--n_embd', type=int, default=768, help='hidden size for table 2')
    p.add_argument('--blocks', default='0', help='kernel column block sizes to time (0 = automatic)')
    p.add_argument('--iters', type=int, default=20)
    p.add_argument('--no_compile', action='store_true', help='skip the torch.compile rows')
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench/ce.py needs a CUDA GPU (the kernel's correctness tests run on the CPU: "
                 "python -m pytest tests/test_kernel.py)")
    name = torch.cuda.get_device_name()
    peak_bw = next((bw for key, bw in PEAK_BANDWIDTH if key in name), None)
    sheet = f"{peak_bw / 1e12:.2f} TB/s" if peak_bw else "unknown"
    print(f"{name}, torch {torch.__version__}, triton {ce.triton.__version__}, V={args.vocab}, "
          f"bf16, data-sheet bandwidth {sheet}\n")
    tokens = [int(n) for n in args.tokens.split(',')]
    compiled = torch.compile(lambda x, t: F.cross_entropy(x, t))
    fused_compiled = torch.compile(lambda x, t: ce.cross_entropy(x, t, inplace=True))
    header = (f"{'1. loss + backward':<26}{'N':>7}{'ms':>10}{'TB/s':>7}{'% sheet':>9}{'% copy':>8}"
              f"{'extra mem GB':>14}{'x logits':>10}")
    print(header + '\n' + '-' * len(header))
    for N in tokens:
        loss_table(N, args.vocab, args, peak_bw, compiled, fused_compiled)
        torch.cuda.empty_cache()
    print("TB/s: the floor's 4 bytes per logit over the time: 100% of 'copy' is as fast as any loss + "
          "backward can be; the loss-only row does half that traffic.\n")
    header = (f"{'2. lm_head + loss + bwd':<26}{'N':>7}{'ms':>10}{'TFLOP/s':>9}{'extra mem GB':>14}"
              f"{'x logits':>10}")
    print(header + '\n' + '-' * len(header))
    for N in tokens:
        linear_table(N, args.vocab, args.n_embd, args)
        torch.cuda.empty_cache()


if __name__ == '__main__':
    main()
