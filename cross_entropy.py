"""
The loss of model.py: cross-entropy fused into one Triton kernel family, and a linear +
cross-entropy that also runs lm_head's matmuls (optionally a chunk of rows at a time, so the full
logits never exist). Off GPU the same semantics run in plain torch (cross_entropy_torch), and the tests
run the Triton kernel itself on the CPU through Triton's interpreter (TRITON_INTERPRET=1).

The logits of a batch are tokens x vocabulary: 65536 x 50304 in bf16 is 6.6 GB, more than the 124M
model with its optimizer state. Unfused, F.cross_entropy reads them and writes log-probabilities,
then the backward reads those and writes a gradient as large again. Yet all the loss needs is one
sweep of each row: its maximum and sum of exponentials together (an "online" softmax rescales the
running sum when the maximum grows), then the gradient softmax - onehot, which can go straight into
the logits' own memory, since nothing reads them afterwards. The floor is one read and one write per
logit (4 bytes in bf16). cross_entropy() below takes logits; its backward only scales the gradient
by grad_output, and skips even that when it is 1. The model uses linear_cross_entropy(), which also
runs lm_head's matmuls, so the backward scales only the small gradients of x and of the weight.
Traps, each tested: row offsets need int64 (N * V passes 2^31); the true-class gradient p - 1 is
computed in fp32 (a bf16 read-modify-write rounds p ~ 1 to 1 and the gradient to 0); ignored rows
get zero gradient; all rows ignored gives 0, not 0/0; and writing over a tensor that autograd saved
elsewhere fails loudly (the custom op bumps the version counter autograd checks).

References: Liger-Kernel (LinkedIn), llm.c (Karpathy), PaLM (z-loss).
"""
import os

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton: the plain torch path is used everywhere
    triton = None

INTERPRET = os.environ.get('TRITON_INTERPRET') == '1'  # Triton's CPU interpreter: how the tests run it

if triton is not None:
    @triton.jit
    def _row_start(base, row, stride):
        # widen before multiplying: in int32, row * stride wraps once N * V passes 2^31
        return base + row.to(tl.int64) * stride

    @triton.jit
    def _grad(x, cols, target, lse, z_loss, scale):
        # d loss / d x = softmax * (1 + 2 z lse) - onehot, all in fp32: p - 1 for the true class is
        # never rounded to bf16 before the subtraction
        return (tl.exp(x - lse) * (1.0 + 2.0 * z_loss * lse) - tl.where(cols == target, 1.0, 0.0)) * scale

    @triton.jit
    def _cross_entropy_kernel(logits_ptr, stride, targets_ptr, loss_ptr, scale_ptr, n_cols, n_valid,
                              ignore_index, z_loss, WRITE_GRAD: tl.constexpr, BLOCK: tl.constexpr,
                              ONE_PASS: tl.constexpr):
        row = tl.program_id(0)  # one program per row (token)
        ptr = _row_start(logits_ptr, row, stride)
        target = tl.load(targets_ptr + row)
        cols = tl.arange(0, BLOCK)
        dtype = logits_ptr.dtype.element_ty
        if target == ignore_index:  # no loss, zero gradient
            tl.store(loss_ptr + row, 0.0)
            if WRITE_GRAD:
                for start in range(0, n_cols, BLOCK):
                    tl.store(ptr + start + cols, tl.zeros([BLOCK], dtype=tl.float32).to(dtype),
                             mask=start + cols < n_cols)
        else:
            if ONE_PASS:  # the row fits in one block: read it once and keep it in registers
                x = tl.load(ptr + cols, mask=cols < n_valid, other=float('-inf')).to(tl.float32)
                m = tl.max(x, axis=0)
                lse = m + tl.log(tl.sum(tl.exp(x - m), axis=0))
            else:  # online softmax: running max m, and sum d of exp(x - m) rescaled when m grows
                m, d = float('-inf'), 0.0
                for start in range(0, n_valid, BLOCK):
                    xs = tl.load(ptr + start + cols, mask=start + cols < n_valid, other=float('-inf'))
                    m_new = tl.maximum(m, tl.max(xs.to(tl.float32), axis=0))
                    d = d * tl.exp(m - m_new) + tl.sum(tl.exp(xs.to(tl.float32) - m_new), axis=0)
                    m = m_new
                lse = m + tl.log(d)  # log Z, in fp32
            x_true = tl.load(ptr + target).to(tl.float32)
            tl.store(loss_ptr + row, lse - x_true + z_loss * lse * lse)
            if WRITE_GRAD:  # the gradient goes over the logits; padding columns get 0
                scale = tl.load(scale_ptr)
                if ONE_PASS:
                    grad = _grad(x, cols, target, lse, z_loss, scale)
                    tl.store(ptr + cols, grad.to(dtype), mask=cols < n_cols)
                else:  # a second read of the row, mostly from L2: it was just read
                    for start in range(0, n_cols, BLOCK):
                        c = start + cols
                        xs = tl.load(ptr + c, mask=c < n_valid, other=float('-inf')).to(tl.float32)
                        grad = _grad(xs, c, target, lse, z_loss, scale)
                        tl.store(ptr + c, grad.to(dtype), mask=c < n_cols)

    @triton.jit
    def _scale_rows_kernel(grad_ptr, stride, g_ptr, g_stride, n_cols, BLOCK: tl.constexpr,
                           ONE_PASS: tl.constexpr):  # (ONE_PASS unused: the loop serves both)
        row = tl.program_id(0)
        g = tl.load(g_ptr + row * g_stride).to(tl.float32)
        if g != 1.0:  # loss.backward() passes 1: then no memory is touched, and no host sync asked why
            ptr = _row_start(grad_ptr, row, stride)
            cols = tl.arange(0, BLOCK)
            for start in range(0, n_cols, BLOCK):
                c = start + cols
                x = tl.load(ptr + c, mask=c < n_cols).to(tl.float32)
                tl.store(ptr + c, (x * g).to(grad_ptr.dtype.element_ty), mask=c < n_cols)


def _use_triton(t):
    return triton is not None and (t.is_cuda or (INTERPRET and t.device.type == 'cpu'))


def _launch(block, n_cols):
    """Columns per step of a row (a power of 2), warps, and whether one step covers the row. The
    default is a guess until measured on a GPU: python bench/ce.py --blocks=2048,4096,8192,65536"""
    block = block or min(1 << (n_cols - 1).bit_length(), 4096)
    return dict(BLOCK=block, num_warps=32 if block >= 32768 else min(16, max(4, block // 512)),
                ONE_PASS=block >= n_cols)


# custom ops: torch.compile sees one opaque call with a known output (no graph break, no host sync),
# and autograd learns the logits were overwritten (their version counter is bumped)
@torch.library.custom_op('model::cross_entropy_fwd', mutates_args=('logits',))
def _cross_entropy_fwd(logits: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor, n_valid: int,
                       ignore_index: int, z_loss: float, write_grad: bool, block: int) -> torch.Tensor:
    """Per-row loss (float32); if write_grad, logits (N, V) become d loss / d logits times scale."""
    loss = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)
    if _use_triton(logits):
        n_rows, n_cols = logits.shape
        _cross_entropy_kernel[(n_rows,)](logits, logits.stride(0), targets, loss, scale, n_cols, n_valid,
                                         ignore_index, z_loss, write_grad, **_launch(block, n_cols))
        return loss
    x = logits[:, :n_valid].float()  # the same math in torch
    lse = torch.logsumexp(x, dim=1)
    keep = targets != ignore_index
    true = torch.where(keep, targets, 0)[:, None]
    loss.copy_(torch.where(keep, lse - x.gather(1, true)[:, 0] + z_loss * lse * lse, 0.0))
    if write_grad:
        grad = torch.exp(x - lse[:, None]) * (1.0 + 2.0 * z_loss * lse[:, None])
        grad.scatter_add_(1, true, torch.full_like(true, -1, dtype=grad.dtype))
        logits[:, :n_valid] = grad * (scale * keep)[:, None]
        logits[:, n_valid:] = 0
    return loss


@_cross_entropy_fwd.register_fake
def _(logits, targets, scale, n_valid, ignore_index, z_loss, write_grad, block):
    return logits.new_empty(logits.shape[0], dtype=torch.float32)


@torch.library.custom_op('model::scale_rows_', mutates_args=('grad',))
def _scale_rows(grad: torch.Tensor, g: torch.Tensor, block: int) -> None:
    """grad (N, V) *= g, one value per row, or one for all (g of stride 0)."""
    if _use_triton(grad):
        _scale_rows_kernel[(grad.shape[0],)](grad, grad.stride(0), g, g.stride(0), grad.shape[1],
                                             **_launch(block, grad.shape[1]))
    else:
        grad.copy_(grad.float() * g[:, None])


@_scale_rows.register_fake
def _(grad, g, block):
    return None


def _scale(targets, ignore_index, reduction, n_tokens):
    """1 / count for 'mean' (count = non-ignored targets, or n_tokens; at least 1: all ignored gives
    0, not 0/0), else 1. A device tensor: no host sync."""
    if reduction == 'mean':
        count = (targets != ignore_index).sum() if n_tokens is None else n_tokens
        count = torch.as_tensor(count, device=targets.device)
        return 1.0 / count.clamp(min=1).float()
    return torch.ones((), dtype=torch.float32, device=targets.device)


class _CrossEntropy(torch.autograd.Function):

    @staticmethod
    def forward(ctx, logits, targets, scale, n_valid, ignore_index, z_loss, reduction, inplace, block):
        in_place = inplace and logits.stride(1) == 1
        grad = logits if in_place else logits.clone(memory_format=torch.contiguous_format)
        rows = _cross_entropy_fwd(grad, targets, scale, n_valid, ignore_index, z_loss, True, block)
        ctx.save_for_backward(grad)  # after the write, so autograd checks this version
        ctx.block = block
        return rows if reduction == 'none' else rows.sum() * scale

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        _scale_rows(grad, grad_output.float().reshape(-1).expand(grad.shape[0]), ctx.block)
        return grad, None, None, None, None, None, None, None, None


def cross_entropy(logits, targets, ignore_index=-1, reduction='mean', z_loss=0.0, n_valid=None,
                  n_tokens=None, inplace=False, block=0):
    """Fused cross-entropy of logits (N, V) (float32/bf16/fp16, any strides) against targets (N,).

    reduction: 'mean' over non-ignored targets (or sum / n_tokens), 'sum', or 'none' (per row, 0 where
    ignored). z_loss adds z_loss * logZ^2 per row. Only the first n_valid columns are classes (the
    rest is padding: zero gradient). inplace=True writes the gradient over logits (when their last
    stride is 1): the logits are gone after this call, and if autograd saved them for another op, that
    op's backward raises an error. inplace=False works on a copy. Under no_grad only the loss is
    computed and logits are left alone. block: columns per kernel step (0 = automatic)."""
    n_valid, targets = n_valid or logits.shape[1], targets.contiguous()  # the kernel reads targets[row]
    scale = _scale(targets, ignore_index, reduction, n_tokens)
    if not (torch.is_grad_enabled() and logits.requires_grad):
        rows = _cross_entropy_fwd(logits if logits.stride(1) == 1 else logits.contiguous(), targets, scale,
                                  n_valid, ignore_index, z_loss, False, block)
        return rows if reduction == 'none' else rows.sum() * scale
    return _CrossEntropy.apply(logits, targets, scale, n_valid, ignore_index, z_loss, reduction, inplace,
                               block)


def cross_entropy_torch(logits, targets, ignore_index=-1, reduction='mean', z_loss=0.0, n_valid=None,
                        n_tokens=None):
    """Plain autograd torch with cross_entropy's semantics: the reference, and the off-GPU path."""
    x = logits[:, :n_valid or logits.shape[1]]
    x = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 -> fp32; fp64 stays fp64
    lse = torch.logsumexp(x, dim=1)
    keep = targets != ignore_index
    true = x.gather(1, torch.where(keep, targets, 0)[:, None])[:, 0]
    rows = torch.where(keep, lse - true + z_loss * lse * lse, 0.0)
    return rows if reduction == 'none' else rows.sum() * _scale(targets, ignore_index, reduction, n_tokens)


class _LinearCrossEntropy(torch.autograd.Function):
    """x (N, C) @ weight (V, C)^T, then cross-entropy, chunk by chunk of rows: each chunk's logits get
    their gradient from the kernel and are used at once for the gradients of x and weight, then freed.
    The same FLOPs as unfused (the backward's two matmuls run here in the forward), no N x V tensor
    left for the backward, which only scales the small gradients of x and weight by grad_output (a
    loss divided by the accumulation steps costs nothing extra); with chunk < N the logits never
    exist whole: chunk x V at a time."""

    @staticmethod
    def forward(ctx, x, weight, targets, scale, n_valid, ignore_index, z_loss, chunk, block):
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros_like(weight, dtype=torch.float32)
        for s in range(0, x.shape[0], chunk):
            logits = x[s:s + chunk] @ weight.t()
            rows = _cross_entropy_fwd(logits, targets[s:s + chunk], scale, n_valid, ignore_index, z_loss,
                                      True, block)  # the gradient lands in logits
            loss += rows.sum()
            grad_x[s:s + chunk] = logits @ weight
            grad_w += logits.t() @ x[s:s + chunk]
        ctx.save_for_backward(grad_x, grad_w.to(weight.dtype))
        return loss * scale

    @staticmethod
    def backward(ctx, grad_output):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_output, grad_w * grad_output, None, None, None, None, None, None, None


def linear_cross_entropy(x, weight, targets, ignore_index=-1, reduction='mean', z_loss=0.0, n_valid=None,
                         n_tokens=None, chunk=2048, block=0):
    """cross_entropy(x @ weight.T, targets) ('mean' or 'sum') without ever holding the (N, V) logits."""
    if reduction not in ('mean', 'sum'):
        raise ValueError("linear_cross_entropy supports reduction 'mean' or 'sum'")
    n_valid, targets = n_valid or weight.shape[0], targets.contiguous()
    scale = _scale(targets, ignore_index, reduction, n_tokens)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _LinearCrossEntropy.apply(x, weight, targets, scale, n_valid, ignore_index, z_loss, chunk,
                                         block)
    loss = sum(_cross_entropy_fwd(x[s:s + chunk] @ weight.t(), targets[s:s + chunk], scale, n_valid,
                                  ignore_index, z_loss, False, block).sum()
               for s in range(0, x.shape[0], chunk))
    return loss * scale
