"""SwiGLU, RoPE, RMSNorm and the LM loss for Megatron's local (non-transformer-engine) layers, without extra
copies.

Megatron's unfused SwiGLU chunks fc1's output, so its backward concatenates the two gradient halves; its unfused
RoPE chunks, negates and concatenates in the forward and concatenates again in the backward (plus a cat with an
empty pass-through part); torch's RMSNorm, when its input needs a gradient, runs as pow / mean / rsqrt / two
multiplies and autograd differentiates each (~10 passes over the activations backward); its vocab-parallel
cross entropy takes ~8 ops where one tensor-parallel rank needs torch's fused log-softmax + NLL. On a CPU these
are ~12% of a tiny model's forward+backward. Same maths, same or nearly the same floating-point results
(tests/test_local_kernels.py compares with Megatron's own, torch's and transformers' outputs). GPU runs with
transformer-engine use TE's fused kernels instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.module import MegatronModule

from megatron_ext import shared_prefix


class _SwiGLU(torch.autograd.Function):
    """silu(x[..., :I]) * x[..., I:]; the backward writes both gradient halves into one buffer (no cat)."""

    @staticmethod
    def forward(ctx, x):
        gate, up = x.chunk(2, dim=-1)
        ctx.save_for_backward(x)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        gate, up = x.chunk(2, dim=-1)
        grad_x = torch.empty_like(x)
        grad_gate, grad_up = grad_x.chunk(2, dim=-1)
        torch.ops.aten.silu_backward.grad_input(grad * up, gate, grad_input=grad_gate)
        torch.mul(grad, F.silu(gate), out=grad_up)
        return grad_x


class SwiGLU(MegatronModule):
    """The MLP activation for `use_te_activation_func=True` on the local spec: fc1's [.., 2 * ffn] -> [.., ffn]."""

    def forward(self, x):
        return _SwiGLU.apply(x)


class _RMSNorm(torch.autograd.Function):
    """x * rstd * w with rstd = rsqrt(mean(x^2) + eps): torch's fused forward (which also returns rstd) and a
    hand-written backward of six passes, grad_x = rstd * (g*w - xhat * mean(g*w*xhat)), xhat = x * rstd."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], weight, eps)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, rstd, weight = ctx.saved_tensors
        hidden = x.shape[-1]
        xhat = x * rstd
        grad_weight_per_position = grad * xhat
        grad_weight = grad_weight_per_position.reshape(-1, hidden).sum(0)
        mean_term = (grad_weight_per_position @ weight).unsqueeze(-1).div_(hidden)  # mean(g * w * xhat)
        grad_x = torch.addcmul(grad * weight, xhat, mean_term, value=-1).mul_(rstd)
        return grad_x, grad_weight, None


class RMSNorm(torch.nn.RMSNorm):
    """torch.nn.RMSNorm (same parameters, same state dict) whose training forward is `_RMSNorm`."""

    def forward(self, x):
        if (self.eps is None or self.weight is None or x.dtype != torch.float32 or self.weight.dtype != torch.float32
                or not (x.requires_grad or self.weight.requires_grad) or not torch.is_grad_enabled()):
            return super().forward(x)  # torch's own path: inference (already fused), other dtypes, no eps / weight
        return _RMSNorm.apply(x, self.weight, self.eps)


def install_rms_norm(model: torch.nn.Module) -> None:
    """Make every torch.nn.RMSNorm in `model` (Megatron's local-spec norms) an `RMSNorm`."""
    for module in model.modules():
        if type(module) is torch.nn.RMSNorm:
            module.__class__ = RMSNorm


def rope_tables(freqs: torch.Tensor, dtype: torch.dtype, mscale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin of RoPE angles `freqs` [.., d]: the sin is negated on the first half (rotate_half's sign)."""
    half = freqs.shape[-1] // 2
    cos = (torch.cos(freqs) * mscale).to(dtype)
    sign = torch.ones(freqs.shape[-1], dtype=dtype, device=freqs.device)
    sign[:half] = -1
    return cos, (torch.sin(freqs) * mscale).to(dtype) * sign


def rotate(t: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """t * cos + rotate_half(t) * sin, with rotate_half(t) = roll(t, d/2) * [-1.., +1..] (`rope_tables`' sign)."""
    return t * cos + torch.roll(t, t.shape[-1] // 2, dims=-1) * signed_sin


def rope_without_copies(t: torch.Tensor, freqs: torch.Tensor, mscale: float = 1.0) -> torch.Tensor:
    """Megatron's `_apply_rotary_pos_emb_bshd` (non-interleaved, rotary over the whole head) with one roll
    forward and one backward instead of chunk / neg / cat."""
    return rotate(t, *rope_tables(freqs, t.dtype, mscale))


def install_rope() -> None:
    """Route Megatron's attention to `rope_without_copies` where it applies (CPU / no fused RoPE, no packed
    sequences, full-width non-interleaved rotary); everything else goes to Megatron's own function."""
    import megatron.core.transformer.attention as attention

    original = getattr(attention.apply_rotary_pos_emb, "__wrapped_original__", attention.apply_rotary_pos_emb)

    def apply_rotary_pos_emb(t, freqs, config, cu_seqlens=None, mscale=1.0, cp_group=None):
        plain = (cu_seqlens is None and not config.apply_rope_fusion and not config.rotary_interleaved
                 and not config.multi_latent_attention and freqs.shape[-1] == t.shape[-1])
        layout = shared_prefix.active()
        if layout is not None:
            if not plain:
                raise ValueError("the shared-prefix layout needs unfused, non-interleaved, full-width RoPE")
            key = ("rope", t.dtype, mscale)  # one forward's q and k of every layer share them
            if key not in layout.cache:
                layout.cache[key] = rope_tables(shared_prefix.rope_freqs(freqs, layout), t.dtype, mscale)
            return rotate(t, *layout.cache[key])
        if plain:
            return rope_without_copies(t, freqs, mscale)
        return original(t, freqs, config=config, cu_seqlens=cu_seqlens, mscale=mscale, cp_group=cp_group)

    apply_rotary_pos_emb.__wrapped_original__ = original
    attention.apply_rotary_pos_emb = apply_rotary_pos_emb


def install_cross_entropy() -> None:
    """Megatron's LM loss through `F.cross_entropy` when the vocabulary is not split (one TP rank); split
    vocabularies (and label smoothing) still go through Megatron's vocab-parallel kernel."""
    from megatron.core import parallel_state
    from megatron.core import tensor_parallel

    original = getattr(tensor_parallel.vocab_parallel_cross_entropy, "__wrapped_original__",
                       tensor_parallel.vocab_parallel_cross_entropy)

    def vocab_parallel_cross_entropy(vocab_parallel_logits, target, label_smoothing=0.0):
        if label_smoothing == 0.0 and parallel_state.get_tensor_model_parallel_world_size() == 1:
            logits = vocab_parallel_logits.float()
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
            return loss.view(target.shape)
        return original(vocab_parallel_logits, target, label_smoothing)

    vocab_parallel_cross_entropy.__wrapped_original__ = original
    tensor_parallel.vocab_parallel_cross_entropy = vocab_parallel_cross_entropy
