"""megatron_ext.local_kernels: SwiGLU, RoPE and RMSNorm without autograd's copies give autograd's (and Megatron's
own) forward and gradients, and a Megatron model built on them has transformers' Llama gradients and Megatron's loss."""

import pytest
import torch
import torch.nn.functional as F
from conftest import read_rank_results, run_torchrun
from tiny_models import save_random_llama, tiny_llama_config

from megatron_ext.local_kernels import RMSNorm, _RMSNorm, _SwiGLU, install_rms_norm, rope_without_copies


def test_swiglu_matches_autograd():
    torch.manual_seed(0)
    x = torch.randn(7, 3, 2 * 40, requires_grad=True, dtype=torch.float64)
    grad = torch.randn(7, 3, 40, dtype=torch.float64)
    gate, up = x.chunk(2, dim=-1)
    (F.silu(gate) * up).backward(grad)
    expected = x.grad.clone()
    x.grad = None
    out = _SwiGLU.apply(x)
    out.backward(grad)
    torch.testing.assert_close(out, F.silu(gate) * up, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(_SwiGLU.apply, (x[:2, :1].detach().requires_grad_(),))


def test_rms_norm_matches_torch_forward_and_gradients():
    torch.manual_seed(3)
    x = torch.randn(5, 4, 48, dtype=torch.float64, requires_grad=True)
    weight = (1 + 0.3 * torch.randn(48, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, w: _RMSNorm.apply(a, w, 1e-5), (x[:2, :2], weight))

    reference = torch.nn.RMSNorm(48, eps=1e-5)
    with torch.no_grad():
        reference.weight.copy_(weight.float())
    fused = torch.nn.Sequential(torch.nn.RMSNorm(48, eps=1e-5))
    fused.load_state_dict({"0." + k: v for k, v in reference.state_dict().items()})
    install_rms_norm(fused)
    assert type(fused[0]) is RMSNorm and list(fused.state_dict()) == ["0.weight"]
    grad = torch.randn(5, 4, 48)
    outputs = []
    for norm in (reference, fused[0]):
        leaf = x.detach().float().requires_grad_()
        out = norm(leaf)
        out.backward(grad)
        outputs.append((out.detach(), leaf.grad, norm.weight.grad))
    for ours, theirs in zip(outputs[1], outputs[0]):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # inference goes through torch's own (fused) path
        torch.testing.assert_close(fused[0](x.detach().float()), reference(x.detach().float()), rtol=0, atol=0)


@pytest.mark.parametrize("mscale", [1.0, 1.3])
def test_rope_is_megatrons_rope_bit_for_bit(mscale):
    from megatron.core.models.common.embeddings.rope_utils import _apply_rotary_pos_emb_bshd

    torch.manual_seed(1)
    mixed = torch.randn(9, 2, 3, 4 * 16)  # [s, b, groups, (2 q + k + v) * head_dim], as Megatron splits it
    freqs = torch.randn(9, 1, 1, 16)
    results = []
    for rope in (lambda t: _apply_rotary_pos_emb_bshd(t, freqs, mscale=mscale), lambda t: rope_without_copies(t, freqs, mscale)):
        leaf = mixed.clone().requires_grad_()
        q, k, _ = torch.split(leaf, [32, 16, 16], dim=3)
        q = q.reshape(9, 2, 6, 16)
        out = torch.cat([rope(q).flatten(2), rope(k).flatten(2)], -1)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)))
        results.append((out.detach(), leaf.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])


@pytest.mark.multirank
def test_megatron_local_layers_have_transformers_gradients(tmp_path):
    hf_dir = save_random_llama(tmp_path / "hf", tiny_llama_config(tied=False), seed=4)
    run_torchrun("tests/dist/grad_equivalence_worker.py", 1, hf_dir, tmp_path)
    r = read_rank_results(tmp_path, 1)[0]
    assert r["uses_swiglu"] and r["uses_rope"] and r["uses_rms_norm"]
    assert r["compared"] == r["expected"] > 0
    assert r["worst_relative_diff"] < 1e-5, r
    assert r["lm_loss_vs_megatron_kernel"] < 1e-5 and r["ce_vs_megatron_kernel"] < 1e-5, r
