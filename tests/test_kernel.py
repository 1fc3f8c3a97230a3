"""The fused cross-entropy of cross_entropy.py: the Triton kernel itself, run on the CPU by Triton's
interpreter when there is no GPU, against a float64 torch reference; each trap of DESIGN.md; the
chunked linear + cross-entropy against the plain one. Inputs are fresh random numbers on every run."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported (conftest.py does it too)

import pytest
import torch

import cross_entropy as ce

triton = pytest.importorskip("triton")
tl = triton.language
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
BF16_RTOL = 2 * 2 ** -7 * (1 + 2 ** -7) + 1e-5  # two roundings (store, then scaling), < 1 ulp each


def reference(logits, targets, **options):
    """Loss and gradient in float64 with plain autograd."""
    x = logits.detach().double().requires_grad_()
    loss = ce.cross_entropy_torch(x, targets, **options)
    return loss, x


def check_grad(got, want, dtype):
    # relative to each element, plus an absolute term for fp32's rounding of p (a few ulps of 1, times
    # the row's scale) where p - 1 cancels near p = 1; scaled by the largest gradient, which is about
    # that scale. (1e-6 of it was seen to fail once in ~20 runs: p's rounding reaches ~3e-7.)
    rtol = BF16_RTOL if dtype == torch.bfloat16 else 1e-5
    err = (got.double() - want).abs()
    assert (err <= rtol * want.abs() + 1e-5 * want.abs().max()).all(), f"max error {err.max().item():.3g}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("blocks", ["several", "one"])
def test_kernel_matches_float64_reference(dtype, reduction, blocks):
    n_rows = int(torch.randint(1, 12, ()))
    n_cols = int(torch.randint(2, 700, ()))                        # odd sizes too
    n_valid = int(torch.randint(1, n_cols + 1, ()))                # the rest is vocabulary padding
    # several blocks per row: the online softmax and a second pass; one: the row read once
    block = int(2 ** torch.randint(4, 8, ())) if blocks == "several" else 0
    if blocks == "several":
        n_cols = max(n_cols, 2 * block + 1)
        n_valid = max(n_valid, block + 1)
    assert ce._launch(block, n_cols)["ONE_PASS"] == (blocks == "one")
    z_loss = float(torch.rand(())) * 1e-2 * int(torch.randint(0, 2, ()))
    logits = (torch.randn(n_rows, n_cols, device=DEVICE) * 4).to(dtype)
    targets = torch.randint(0, n_valid, (n_rows,), device=DEVICE)
    targets[torch.rand(n_rows, device=DEVICE) < 0.25] = -1         # some ignored rows
    options = dict(reduction=reduction, z_loss=z_loss, n_valid=n_valid)

    x = logits.clone().requires_grad_()
    loss = ce.cross_entropy(x, targets, block=block, **options)
    grad_output = torch.rand_like(loss) + 0.5                      # != 1
    loss.backward(grad_output)
    want_loss, want_x = reference(logits, targets, **options)
    want_loss.backward(grad_output.double())

    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-5, atol=1e-5)
    check_grad(x.grad, want_x.grad, dtype)
    assert (x.grad[:, n_valid:] == 0).all()                        # padding: never predicted
    assert (x.grad[targets == -1] == 0).all()


def test_true_class_gradient_is_computed_in_fp32():
    # a confident bf16 row: p(true) ~ 1 - 4e-4. Stored as bf16 first and then decremented (a bf16
    # read-modify-write), p rounds to 1.0 or 0.996 and the gradient to 0 or -0.004 instead of -4e-4
    logits = torch.zeros(4, 64, device=DEVICE, dtype=torch.bfloat16)
    targets = torch.tensor([3, 10, 20, 63], device=DEVICE)
    logits[torch.arange(4), targets] = 12.0
    x = logits.clone().requires_grad_()
    ce.cross_entropy(x, targets, reduction="sum", block=16).backward()
    want_loss, want_x = reference(logits, targets, reduction="sum")
    want_loss.backward()
    got, want = x.grad[torch.arange(4), targets].double(), want_x.grad[torch.arange(4), targets]
    assert (want < -3e-4).all()
    torch.testing.assert_close(got, want, rtol=2 ** -7, atol=0)


def test_all_rows_ignored_gives_zero_not_nan():
    logits = torch.randn(5, 33, device=DEVICE).requires_grad_()
    targets = torch.full((5,), -1, device=DEVICE)
    loss = ce.cross_entropy(logits, targets, block=16)
    loss.backward()
    assert loss.item() == 0.0 and (logits.grad == 0).all()
    assert ce.cross_entropy_torch(logits, targets).item() == 0.0  # the torch path agrees


def test_other_ignore_index():
    logits, targets = torch.randn(6, 40, device=DEVICE), torch.randint(0, 40, (6,), device=DEVICE)
    targets[::2] = -100
    got = ce.cross_entropy(logits, targets, ignore_index=-100, block=16)
    want = torch.nn.functional.cross_entropy(logits.double(), targets, ignore_index=-100)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_global_token_count_for_gradient_accumulation():
    # two micro-batches, each scaled by the count of both: their summed gradients equal the gradient
    # of the mean over the whole batch, even though the micro-batches have different counts
    logits = torch.randn(10, 50, device=DEVICE)
    targets = torch.randint(0, 50, (10,), device=DEVICE)
    targets[:4] = -1
    n_tokens = (targets != -1).sum()
    x = logits.clone().requires_grad_()
    total = sum(ce.cross_entropy(x[s:s + 5].clone(), targets[s:s + 5], n_tokens=n_tokens, block=16)
                for s in (0, 5))
    total.backward()
    want_loss, want_x = reference(logits, targets)
    want_loss.backward()
    torch.testing.assert_close(total.double(), want_loss, rtol=1e-5, atol=1e-6)
    check_grad(x.grad, want_x.grad, torch.float32)


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("layout", ["row_strided", "transposed"])
def test_non_contiguous_logits(layout, inplace):
    # row_strided: rows further apart than their length (a slice), handled in place;
    # transposed: columns not adjacent, so the kernel works on a contiguous copy
    base = torch.randn(7, 100, device=DEVICE) if layout == "row_strided" else torch.randn(61, 7, device=DEVICE)
    x = base.clone().requires_grad_()
    z = x * 1.0                                                  # non-leaf logits, as a matmul makes them
    logits = z[:, :61] if layout == "row_strided" else z.t()
    targets = torch.randint(0, 61, (14,), device=DEVICE)[::2]   # strided targets too
    loss = ce.cross_entropy(logits, targets, inplace=inplace, block=16)
    loss.backward()
    want_loss, want_logits = reference(base[:, :61] if layout == "row_strided" else base.t(), targets)
    want_loss.backward()
    torch.testing.assert_close(loss.double(), want_loss, rtol=1e-5, atol=1e-6)
    if layout == "row_strided":
        check_grad(x.grad[:, :61], want_logits.grad, torch.float32)
        assert (x.grad[:, 61:] == 0).all()
        assert torch.equal(z[:, 61:], base[:, 61:])              # the gaps between rows untouched
        if inplace:                                              # the gradient is where the logits were
            check_grad(z[:, :61].detach(), want_logits.grad, torch.float32)
    else:
        check_grad(x.grad.t(), want_logits.grad, torch.float32)
    if not inplace:
        assert torch.equal(z, base)                              # the caller's logits untouched


def test_inplace_refuses_to_corrupt_a_tensor_autograd_saved():
    logits = torch.randn(4, 30, device=DEVICE)
    targets = torch.randint(0, 30, (4,), device=DEVICE)
    # y ** 2 saves y for its backward; overwriting y with the gradient must not go unnoticed
    x = logits.clone().requires_grad_()
    y = x * 1.0
    aux = (y ** 2).mean()
    loss = ce.cross_entropy(y, targets, inplace=True, block=16) + aux
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    # the default (inplace=False) works on a copy and gives the right answer
    x = logits.clone().requires_grad_()
    y = x * 1.0
    aux = (y ** 2).mean()
    (ce.cross_entropy(y, targets, block=16) + aux).backward()
    w = logits.double().requires_grad_()
    (ce.cross_entropy_torch(w, targets) + (w ** 2).mean()).backward()
    check_grad(x.grad, w.grad, torch.float32)


def test_no_grad_computes_the_loss_only_and_leaves_logits_alone():
    logits = torch.randn(5, 70, device=DEVICE)
    targets = torch.randint(0, 70, (5,), device=DEVICE)
    before = logits.clone()
    with torch.no_grad():
        loss = ce.cross_entropy(logits, targets, inplace=True, block=32)
    assert torch.equal(logits, before)
    torch.testing.assert_close(loss.double(), reference(logits, targets)[0], rtol=1e-5, atol=1e-6)


def test_row_offsets_are_int64():
    # The kernel finds a row at base + row * stride (ce._row_start). With N * V > 2^31 that product
    # overflows int32. We cannot allocate 2^31 elements here, so we run _row_start itself on a row and
    # stride whose product is 2^32 + 12 and read back the offset it computes, next to the naive int32
    # product, which wraps: that shows the test would catch a missing widening.
    @triton.jit
    def offsets(rows_ptr, stride, out_ptr):
        row = tl.load(rows_ptr)                                # an int32 row index, as program_id
        tl.store(out_ptr, ce._row_start(0, row, stride))    # base 0: the offset itself
        tl.store(out_ptr + 1, (row * stride).to(tl.int64))     # what the naive code computes

    row, stride = 2 ** 20 + 3, 4096
    rows = torch.tensor([row], dtype=torch.int32, device=DEVICE)
    out = torch.zeros(2, dtype=torch.int64, device=DEVICE)
    offsets[(1,)](rows, stride, out)
    assert row * stride > 2 ** 32
    assert out[0].item() == row * stride
    assert out[1].item() != row * stride                       # int32 wraps


def test_compiles_without_graph_breaks():
    # fullgraph=True fails on any graph break, e.g. a .item() host sync inside the loss
    logits = torch.randn(6, 45, device=DEVICE)
    targets = torch.randint(0, 45, (6,), device=DEVICE)
    targets[0] = -1

    def step(x):
        y = x * 2.0  # the logits, as a matmul would produce them
        return ce.cross_entropy(y, targets, inplace=True, z_loss=1e-3, block=16)

    torch._dynamo.reset()
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    l1, l2 = step(x1), compiled(x2)
    l1.backward()
    l2.backward()
    torch.testing.assert_close(l2, l1)
    torch.testing.assert_close(x2.grad, x1.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_linear_cross_entropy_matches_plain(dtype):
    n, c, v, n_valid = 37, 24, 150, 131
    x = torch.randn(n, c, device=DEVICE, dtype=dtype)
    w = (torch.randn(v, c, device=DEVICE) * 0.3).to(dtype)
    targets = torch.randint(0, n_valid, (n,), device=DEVICE)
    targets[::5] = -1
    xa, wa = x.clone().requires_grad_(), w.clone().requires_grad_()
    loss = ce.linear_cross_entropy(xa, wa, targets, n_valid=n_valid, z_loss=1e-3, chunk=16, block=64)
    (loss * 1.5).backward()
    xb, wb = x.double().requires_grad_(), w.double().requires_grad_()
    want = ce.cross_entropy_torch(xb @ wb.t(), targets, n_valid=n_valid, z_loss=1e-3)
    (want * 1.5).backward()
    tol = dict(rtol=3e-2, atol=3e-2) if dtype == torch.bfloat16 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss.double(), want, **tol)
    torch.testing.assert_close(xa.grad.double(), xb.grad, **tol)
    torch.testing.assert_close(wa.grad.double(), wb.grad, **tol)
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(ce.linear_cross_entropy(x, w, targets, n_valid=n_valid, z_loss=1e-3,
                                                              chunk=16, block=64).double(), want, **tol)
