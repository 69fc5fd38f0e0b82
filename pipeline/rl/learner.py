"""The Megatron-core policy of stage two: log-probs of sampled responses and PPO updates, at any TP/PP/DP.

Every rank holds its shard. A `PolicyBatch` is this data-parallel rank's share of a step's responses, already
padded to one length (pipeline stages exchange fixed-size activations). Losses come from
`pipeline.rl.loss.policy_loss` on vocab-parallel log-probs, normalised by the counts of the whole step so
that micro-batching and data parallelism never change the gradient. Where micro-batches hold whole groups, the
update runs in megatron_ext.shared_prefix's layout: each group's prompt once, the same loss and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from megatron_ext import shared_prefix
from megatron_ext.llama import build_llama_model, unwrap_model
from megatron_ext.logprobs import vocab_parallel_logprobs, vocab_parallel_logprobs_and_entropy
from megatron_ext.schedule import forward_backward, wrap_with_ddp
from megatron_ext.weights import export_hf_weights, load_hf_weights
from pipeline.rl.loss import policy_loss

METRIC_KEYS = ("loss", "entropy", "clip_frac", "approx_kl", "kl_ref", "logp_mismatch", "tokens")


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits of the sampling distribution; at temperature 1 the logits themselves (x / 1 is x: no copy)."""
    return logits if temperature == 1.0 else logits / temperature


@dataclass
class PolicyBatch:
    tokens_BS: torch.Tensor
    """Prompt + response token ids, right-padded, [B, S]."""
    response_mask_BS: torch.Tensor
    """True where the token at that position is a generated response token (bool, [B, S])."""
    engine_logp_BS: torch.Tensor
    """Behaviour log-prob of each response token from the rollout engine, at the token's position (0 elsewhere)."""
    adv_B: torch.Tensor
    """Advantage of each response."""

    def rows(self, sl: slice) -> "PolicyBatch":
        return PolicyBatch(self.tokens_BS[sl], self.response_mask_BS[sl], self.engine_logp_BS[sl], self.adv_B[sl])

    @property
    def size(self) -> int:
        return self.tokens_BS.shape[0]


class Learner:
    def __init__(self, cfg, layout, hf_dir: str, *, hf_config=None):
        from transformers import AutoConfig

        from pipeline.optim import OptimConfig, build_optimizer

        self.cfg = cfg
        self.layout = layout
        hf_config = hf_config or AutoConfig.from_pretrained(hf_dir)
        self.vocab_size = hf_config.vocab_size
        on_gpu = torch.cuda.is_available()
        dtype = torch.bfloat16 if on_gpu and cfg.bf16 else torch.float32
        model = build_llama_model(hf_config, tp=layout.tp, pp=layout.pp, dtype=dtype)
        load_hf_weights(model, hf_dir)
        distributed_optimizer = on_gpu and layout.dp > 1
        self.model = wrap_with_ddp(model, use_distributed_optimizer=distributed_optimizer)
        from megatron_ext.attention import SDPAttention

        self.local_layers = bool(model.decoder.layers) and isinstance(
            model.decoder.layers[0].self_attention.core_attention, SDPAttention)  # shared_prefix's attention
        optim = OptimConfig(lr=cfg.lr, min_lr=cfg.lr, warmup_iters=0, decay_style="constant",
                            adam_beta1=cfg.adam_betas[0], adam_beta2=cfg.adam_betas[1], adam_eps=cfg.adam_eps,
                            weight_decay=cfg.weight_decay, clip_grad=cfg.grad_clip)
        self.optimizer = build_optimizer([self.model], optim, dtype=dtype,
                                         use_distributed_optimizer=distributed_optimizer)
        self.reference = None
        if cfg.kl_coef > 0:
            self.reference = build_llama_model(hf_config, tp=layout.tp, pp=layout.pp, dtype=dtype)
            load_hf_weights(self.reference, hf_dir)
            self.reference.eval().requires_grad_(False)

    # ---- log-probs ---------------------------------------------------------------------------------------

    def _microbatches(self, batch: PolicyBatch, extra: dict | None = None) -> list[dict]:
        mbs = self.cfg.micro_batch_size
        out = []
        for start in range(0, batch.size, mbs):
            mb = {"tokens": batch.tokens_BS[start : start + mbs], "rows": slice(start, start + mbs)}
            out.append(mb)
        return out

    @torch.no_grad()
    def logprobs(self, batch: PolicyBatch, model=None) -> torch.Tensor | None:
        """Log-probs [B, S] of each token at its position under `model` (default: the policy); last PP stage
        only (None elsewhere)."""
        from megatron.core import parallel_state as ps

        model = model or self.model
        model.eval()
        temperature = self.cfg.temperature

        def loss_fn(logits, mb):
            logp = vocab_parallel_logprobs(_scaled(logits[:, :-1], temperature), mb["tokens"][:, 1:], self.vocab_size)
            return logits.new_zeros(()), {"logp": torch.nn.functional.pad(logp, (1, 0))}

        outputs = forward_backward([model], self._microbatches(batch), loss_fn, forward_only=True)
        if not ps.is_pipeline_last_stage():
            return None
        return torch.cat([o["logp"] for o in outputs])

    # ---- update ------------------------------------------------------------------------------------------

    def train(self, batch: PolicyBatch, *, num_responses_global: int, num_tokens_global: int) -> dict:
        """PPO epochs over this DP rank's responses; returns step metrics averaged over the whole step."""
        cfg = self.cfg
        dp = self.layout.dp
        minibatches = max(1, cfg.minibatches_per_step)
        # One update per step from the weights that the step's old log-probs would be computed with: they are the
        # update's own forward pass, detached (ratio exactly 1; the same gradient), so no separate pass is run.
        on_policy = cfg.behaviour_logprobs == "learner" and cfg.ppo_epochs * minibatches == 1
        if on_policy:
            old_logp = None
        else:
            old_logp = self.logprobs(batch) if cfg.behaviour_logprobs == "learner" else batch.engine_logp_BS
        ref_logp = self.logprobs(batch, self.reference) if self.reference is not None else None
        mask = batch.response_mask_BS
        sums = {k: 0.0 for k in METRIC_KEYS}
        if old_logp is not None:
            sums["logp_mismatch"] = ((old_logp - batch.engine_logp_BS).abs() * mask).sum().item()
        rows_per_minibatch = batch.size // minibatches
        grad_norms = []
        for _ in range(cfg.ppo_epochs):
            for m in range(minibatches):
                sl = slice(m * rows_per_minibatch, (m + 1) * rows_per_minibatch)
                grad_norms.append(self._update(batch.rows(sl), old_logp[sl] if old_logp is not None else None,
                                               ref_logp[sl] if ref_logp is not None else None,
                                               num_responses_global // minibatches // dp,
                                               max(1, num_tokens_global // minibatches // dp), sums))
        updates = cfg.ppo_epochs * minibatches
        totals = torch.tensor([sums[k] for k in METRIC_KEYS], dtype=torch.float64)
        from megatron.core import parallel_state as ps

        if not ps.is_pipeline_last_stage():
            totals.zero_()
        dist.all_reduce(totals)
        totals /= self.layout.tp  # every TP rank of the last stage holds the same values
        t = dict(zip(METRIC_KEYS, totals.tolist()))
        n_tok = max(t["tokens"] / updates, 1.0)
        return {
            "train/loss": t["loss"] / (updates * dp),
            "train/entropy": t["entropy"] / (n_tok * updates),
            "train/clip_frac": t["clip_frac"] / (n_tok * updates),
            "train/approx_kl": t["approx_kl"] / (n_tok * updates),
            "train/kl_ref": t["kl_ref"] / (n_tok * updates),
            "train/logp_mismatch": t["logp_mismatch"] / n_tok,
            "train/grad_norm": float(sum(grad_norms) / len(grad_norms)),
        }

    def _shared_prompt_microbatches(self, batch: PolicyBatch) -> list[dict] | None:
        """Micro-batches in the shared-prompt layout, or None where it does not apply (see the config field)."""
        cfg = self.cfg
        if not (cfg.shared_prompt_update and self.local_layers and cfg.group_size > 1
                and cfg.micro_batch_size % cfg.group_size == 0):
            return None
        packed = shared_prefix.pack_groups(batch.tokens_BS, batch.response_mask_BS, cfg.group_size)
        return None if packed is None else shared_prefix.microbatches(packed, cfg.micro_batch_size)

    def _update(self, batch, old_logp, ref_logp, num_responses, num_tokens, sums) -> float:
        """One optimizer step. `old_logp` None: on-policy, the behaviour log-probs are this forward pass's own
        (detached), and their gap to the engine's is measured here."""
        cfg = self.cfg
        self.model.train()
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        temperature = cfg.temperature
        microbatches = self._shared_prompt_microbatches(batch) or self._microbatches(batch)

        def loss_fn(logits, mb):
            rows = mb["rows"]
            if "layout" in mb:  # shared prompt: each response token's predicting logits, response-major [b, R]
                vocab = logits.shape[-1]
                predicting = logits.reshape(-1, vocab).index_select(0, mb["source_index"].reshape(-1))
                predicting = predicting.view(*mb["source_index"].shape, vocab)
                target, mask = mb["response_tokens"], mb["response_mask"]

                def at_tokens(per_position_BS):
                    return per_position_BS[rows].gather(1, mb["position_index"])
            else:  # one row per response: position t's logits predict token t + 1
                predicting, target, mask = logits[:, :-1], mb["tokens"][:, 1:], batch.response_mask_BS[rows][:, 1:]

                def at_tokens(per_position_BS):
                    return per_position_BS[rows][:, 1:]
            scaled = _scaled(predicting, temperature)  # once, for the log-probs and the entropy
            logp, entropy = vocab_parallel_logprobs_and_entropy(scaled, target, self.vocab_size)
            engine_logp = at_tokens(batch.engine_logp_BS)
            if old_logp is None:
                old = logp.detach()
                sums["logp_mismatch"] += ((old - engine_logp).abs() * mask).sum().item()
            else:
                old = at_tokens(old_logp)
            loss, metrics = policy_loss(
                logp, old, batch.adv_B[rows], mask, clip_eps=cfg.clip_eps,
                aggregation=cfg.aggregation, max_new_tokens=cfg.max_new_tokens, kl_coef=cfg.kl_coef,
                ref_logp_BT=at_tokens(ref_logp) if ref_logp is not None else None,
                num_responses=num_responses, num_tokens=num_tokens,
            )
            n = mask.sum().item()
            sums["loss"] += loss.item()
            sums["tokens"] += n
            sums["entropy"] += (entropy * mask).sum().item()
            sums["clip_frac"] += float(metrics.get("clip_frac", 0.0)) * n
            sums["approx_kl"] += float(metrics.get("approx_kl", 0.0)) * n
            sums["kl_ref"] += float(metrics.get("kl_ref", 0.0)) * n
            return loss, {}

        forward_backward([self.model], microbatches, loss_fn, forward_only=False)
        ok, grad_norm, _ = self.optimizer.step()
        if not ok:
            raise FloatingPointError("optimizer step skipped: non-finite gradients")
        return float(grad_norm or 0.0)

    # ---- weights and checkpoints ------------------------------------------------------------------------

    def export_weights(self):
        """Full HF-named tensors on every rank (for the rollout engine), lm_head included."""
        return export_hf_weights(self.model, include_tied_lm_head=True, dtype=torch.float32)

    def sharded_state_dict(self, *, is_loading: bool = False) -> dict:
        from pipeline.optim import optimizer_sharded_state_dict

        model_sd = self.model.sharded_state_dict()
        return {"model": model_sd,
                "optimizer": optimizer_sharded_state_dict(self.optimizer, model_sd, is_loading=is_loading)}

    def load_state_dict(self, state: dict) -> None:
        unwrap_model(self.model).load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
