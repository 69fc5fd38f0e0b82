"""`vocab_parallel_logprobs_and_entropy_chunked`: the same log-probs, entropy and gradients as the unchunked
`vocab_parallel_logprobs_and_entropy` (TP=1 in process, TP=2 under torchrun + gloo, also on the simulated
accelerator), and no fp32 [B, T, V] tensor alive at any point (a dispatch-mode tracker of fp32 allocations)."""

from pathlib import Path

import pytest
import torch
from conftest import read_rank_results, run_torchrun
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from megatron_ext.logprobs import (_tp_info, vocab_parallel_logprobs_and_entropy,
                                   vocab_parallel_logprobs_and_entropy_chunked)
from megatron_ext.simulated_accelerator import SIMULATED_ACCELERATOR_ENV

DIST = Path(__file__).parent / "dist"


@pytest.fixture(autouse=True)
def _tensor_parallel_off():
    if _tp_info()[0] != 1:
        pytest.skip("Megatron's model-parallel state is initialised in this process; these tests need TP=1")


def _case(B=3, T=11, V=96, scale=2.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    logits_BTV = (torch.randn(B, T, V, generator=g) * scale).to(dtype)
    target_BT = torch.randint(0, V, (B, T), generator=g)
    grad_BT = torch.randn(B, T, generator=g)
    return logits_BTV, target_BT, grad_BT


def _reference(logits_BTV, target_BT, grad_BT, vocab_size=None, temperature=1.0):
    """The unchunked function on logits / temperature: log-probs, entropy, d(sum grad * logp)/d logits."""
    leaf = logits_BTV.detach().requires_grad_(True)
    scaled = leaf if temperature == 1.0 else leaf / temperature
    logp_BT, entropy_BT = vocab_parallel_logprobs_and_entropy(scaled, target_BT, vocab_size)
    (grad_BTV,) = torch.autograd.grad(logp_BT, leaf, grad_BT)
    return logp_BT.detach(), entropy_BT, grad_BTV


def _chunked(logits_BTV, target_BT, grad_BT, vocab_size=None, **kwargs):
    leaf = logits_BTV.detach().requires_grad_(True)
    logp_BT, entropy_BT = vocab_parallel_logprobs_and_entropy_chunked(leaf, target_BT, vocab_size, **kwargs)
    assert logp_BT.dtype == entropy_BT.dtype == torch.float32 and not entropy_BT.requires_grad
    (grad_BTV,) = torch.autograd.grad(logp_BT, leaf, grad_BT)
    assert grad_BTV.dtype == logits_BTV.dtype and grad_BTV.shape == logits_BTV.shape
    return logp_BT.detach(), entropy_BT, grad_BTV


def _assert_close(got, want, atol=1e-6, rtol=0.0):
    for name, g, w in zip(("logp", "entropy", "grad"), got, want):
        torch.testing.assert_close(g.float(), w.float(), atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("chunk_tokens", [1, 4, 11, 33, 5000], ids=lambda c: f"chunk{c}")  # B*T = 33
@pytest.mark.parametrize("vocab_size", [None, 90], ids=["no_padding", "padding6"])
def test_values_and_gradients_equal_the_unchunked_function(chunk_tokens, vocab_size):
    logits_BTV, target_BT, grad_BT = _case()
    if vocab_size is not None:
        target_BT = target_BT % vocab_size
        logits_BTV[..., vocab_size:] = 50.0  # padding columns that would dominate the softmax if not masked
    got = _chunked(logits_BTV, target_BT, grad_BT, vocab_size, chunk_tokens=chunk_tokens)
    _assert_close(got, _reference(logits_BTV, target_BT, grad_BT, vocab_size))
    if vocab_size is not None:
        assert got[2][..., vocab_size:].abs().max() == 0


@pytest.mark.parametrize("vocab_size", [None, 90], ids=["no_padding", "padding6"])
def test_temperature_divides_the_logits_inside_the_chunk(vocab_size):
    logits_BTV, target_BT, grad_BT = _case(seed=1)
    target_BT = target_BT % 90
    got = _chunked(logits_BTV, target_BT, grad_BT, vocab_size, chunk_tokens=7, temperature=0.7)
    _assert_close(got, _reference(logits_BTV, target_BT, grad_BT, vocab_size, temperature=0.7))
    untempered = _chunked(logits_BTV, target_BT, grad_BT, vocab_size, chunk_tokens=7)
    assert (got[0] - untempered[0]).abs().max() > 1e-2  # the temperature does change the result


def test_non_contiguous_logits_as_the_learner_slices_them():
    """`logits[:, :-1]` cannot be flattened without a copy: chunks are gathered row by row."""
    logits_BTV, target_BT, grad_BT = _case(T=12)
    sliced_BTV, target_BT = logits_BTV[:, :-1], target_BT % 90
    got = _chunked(sliced_BTV, target_BT[:, 1:], grad_BT[:, 1:], 90, chunk_tokens=5, temperature=0.7)
    _assert_close(got, _reference(sliced_BTV, target_BT[:, 1:], grad_BT[:, 1:], 90, temperature=0.7))


def test_closer_to_float64_than_fp32_rounding_allows():
    """Against an exact (float64) log-softmax, at larger logits where rounding order shows."""
    logits_BTV, target_BT, grad_BT = _case(T=40, V=1000, scale=10.0)
    logp_BT, entropy_BT, grad_BTV = _chunked(logits_BTV, target_BT, grad_BT, chunk_tokens=17, temperature=0.7)
    x64 = logits_BTV.double().requires_grad_(True)
    logp64_BTV = torch.log_softmax(x64 / 0.7, dim=-1)
    logp64_BT = logp64_BTV.gather(-1, target_BT.unsqueeze(-1)).squeeze(-1)
    (grad64_BTV,) = torch.autograd.grad(logp64_BT, x64, grad_BT.double())
    entropy64_BT = -(logp64_BTV.exp() * logp64_BTV).sum(-1)
    rel = lambda a, b: ((a.double() - b.detach()).abs() / b.detach().abs().clamp_min(1.0)).max().item()  # noqa: E731
    assert rel(logp_BT, logp64_BT) < 1e-6 and rel(entropy_BT, entropy64_BT) < 1e-6
    assert (grad_BTV.double() - grad64_BTV).abs().max() < 3e-6


def test_gradcheck_float64():
    logits_BTV, target_BT, _ = _case(B=2, T=3, V=7, seed=2, dtype=torch.float64)
    target_BT = target_BT % 6
    leaf = logits_BTV.requires_grad_(True)

    def logp(x, temperature):
        return vocab_parallel_logprobs_and_entropy_chunked(x, target_BT, 6, chunk_tokens=4, temperature=temperature)[0]

    assert torch.autograd.gradcheck(lambda x: logp(x, 1.0), (leaf,))
    assert torch.autograd.gradcheck(lambda x: logp(x, 0.7), (leaf,))


def test_bf16_logits():
    """bf16 logits: fp32 math inside, so the values equal fp32's on the same (bf16-rounded) logits up to fp32
    rounding; the gradient is stored in bf16 (relative 2^-8); against the unrounded fp32 logits, bf16's own error."""
    logits_BTV, target_BT, grad_BT = _case(T=20, V=500, scale=3.0)
    bf16_BTV, target_BT = logits_BTV.bfloat16(), target_BT % 450
    logp_BT, entropy_BT, grad_BTV = _chunked(bf16_BTV, target_BT, grad_BT, 450, chunk_tokens=16, temperature=0.7)
    ref_logp, ref_entropy, ref_grad = _reference(bf16_BTV.float(), target_BT, grad_BT, 450, temperature=0.7)
    torch.testing.assert_close(logp_BT, ref_logp, atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy_BT, ref_entropy, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_BTV.float(), ref_grad, atol=1e-6, rtol=2**-8)
    fp32_logp, fp32_entropy, fp32_grad = _reference(logits_BTV, target_BT, grad_BT, 450, temperature=0.7)
    torch.testing.assert_close(logp_BT, fp32_logp, atol=0.1, rtol=0.02)
    torch.testing.assert_close(entropy_BT, fp32_entropy, atol=0.05, rtol=0.02)
    torch.testing.assert_close(grad_BTV.float(), fp32_grad, atol=0.02, rtol=0.05)


def test_user_errors():
    logits_BTV, target_BT, _ = _case()
    with pytest.raises(ValueError, match="chunk_tokens"):
        vocab_parallel_logprobs_and_entropy_chunked(logits_BTV, target_BT, chunk_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        vocab_parallel_logprobs_and_entropy_chunked(logits_BTV, target_BT, temperature=0.0)
    with pytest.raises(ValueError, match="target shape"):
        vocab_parallel_logprobs_and_entropy_chunked(logits_BTV, target_BT[:, 1:])


class Fp32AllocationTracker(TorchDispatchMode):
    """Records every fp32 storage an op allocates (views and in-place results are not allocations): the largest
    one, those above `report_bytes`, and the peak of their live total (storages the autograd graph keeps count)."""

    def __init__(self, report_bytes: int = 1 << 62):
        super().__init__()
        self.largest_bytes, self.peak_live_bytes, self.report_bytes = 0, 0, report_bytes
        self.large_shapes: list[tuple[int, ...]] = []
        self._live: dict[int, tuple[StorageWeakRef, int]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._live = {ptr: (ref, n) for ptr, (ref, n) in self._live.items() if not ref.expired()}
        inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
                continue
            storage = t.untyped_storage()
            ptr, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or ptr in inputs or ptr in self._live:
                continue
            self._live[ptr] = (StorageWeakRef(storage), nbytes)
            self.largest_bytes = max(self.largest_bytes, nbytes)
            if nbytes > self.report_bytes:
                self.large_shapes.append(tuple(t.shape))
        self.peak_live_bytes = max(self.peak_live_bytes, sum(n for _, n in self._live.values()))
        return out


def track_forward_backward(fn, logits_BTV, target_BT, vocab_size, report_bytes=1 << 62, **kwargs):
    """fp32 allocations of one forward + backward of `fn(logits, target, vocab_size, **kwargs)` (log-probs summed)."""
    leaf = logits_BTV.detach().requires_grad_(True)
    with Fp32AllocationTracker(report_bytes) as tracker:
        logp_BT, entropy_BT = fn(leaf, target_BT, vocab_size, **kwargs)
        logp_BT.sum().backward()
    return tracker


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_no_fp32_tensor_of_the_whole_logits(dtype):
    B, T, V, chunk = 2, 96, 512, 32
    logits_BTV, target_BT, _ = _case(B=B, T=T + 1, V=V, dtype=dtype)
    logits_BTV, target_BT = logits_BTV[:, :-1], target_BT[:, 1:] % 500  # the learner's non-contiguous slice
    chunk_bytes, whole_bytes = chunk * V * 4, B * T * V * 4
    per_position_bytes = 16 * 4 * B * T  # a few fp32 vectors over the positions (log-probs, max, log-sum-exp, ...)
    chunked = track_forward_backward(vocab_parallel_logprobs_and_entropy_chunked, logits_BTV, target_BT, 500,
                                     report_bytes=chunk_bytes + 1024, chunk_tokens=chunk, temperature=0.7)
    unchunked = track_forward_backward(
        lambda x, t, v: vocab_parallel_logprobs_and_entropy(x / 0.7, t, v), logits_BTV, target_BT, 500)
    assert unchunked.largest_bytes >= whole_bytes and unchunked.peak_live_bytes > 2 * whole_bytes
    if dtype == torch.bfloat16:  # the gradient buffer is bf16: no fp32 tensor above one chunk
        assert chunked.largest_bytes <= chunk_bytes + 1024, chunked.large_shapes
        assert chunked.peak_live_bytes <= 2 * chunk_bytes + per_position_bytes, chunked.peak_live_bytes
    else:  # fp32 logits: the only allocation above one chunk is the gradient itself
        assert chunked.large_shapes == [(B, T, V)]
        assert chunked.peak_live_bytes <= whole_bytes + chunk_bytes + per_position_bytes, chunked.peak_live_bytes


@pytest.mark.multirank
@pytest.mark.parametrize("device", ["cpu", "simulated"])
def test_tensor_parallel_two_ranks(tmp_path, device):
    """TP=2 (gloo): chunked vs the unchunked TP=2 function and vs a full-vocabulary fp32 reference; on the simulated
    accelerator every tensor the function makes must be on the logits' device and collectives see device tensors."""
    env = {SIMULATED_ACCELERATOR_ENV: "1"} if device == "simulated" else None
    run_torchrun(DIST / "chunked_logprobs_worker.py", 2, tmp_path, env=env)
    results = read_rank_results(tmp_path, 2)
    assert [r["tp_rank"] for r in results] == [0, 1]
    for r in results:
        assert r["device"] == ("sim:0" if device == "simulated" else "cpu")
        assert len(r["cases"]) == 6
        for case, diffs in r["cases"].items():
            assert ("grad_vs_full_vocab" in diffs) == (r["tp_rank"] == 0)
            for key, value in diffs.items():
                # same algorithm as the unchunked TP=2 function; vs a plain log-softmax, 2 ulp of log-probs near -5
                tolerance = 1e-6 if key.endswith("unchunked_tp2") else 2e-6
                assert value <= tolerance, (r["tp_rank"], case, key, value)
