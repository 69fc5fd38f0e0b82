"""The Megatron-core policy of stage two: log-probs of sampled responses and PPO updates, at any TP/PP/DP.

Every rank holds its shard. A `PolicyBatch` is this data-parallel rank's share of a step's responses, already
padded to one length (pipeline stages exchange fixed-size activations); built on the host, it is moved to the
model's device here, and step metrics stay there until one host transfer per step. Losses come from
`pipeline.rl.loss.policy_loss` on vocab-parallel log-probs, normalised by the counts of the whole step so
that micro-batching and data parallelism never change the gradient. Where micro-batches hold whole groups, the
update runs in megatron_ext.shared_prefix's layout: each group's prompt once, the same loss and gradients.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from megatron_ext import shared_prefix
from megatron_ext.models import build_model, recompute_overrides, unwrap_model
from megatron_ext.logprobs import vocab_parallel_logprobs_and_entropy, vocab_parallel_logprobs_and_entropy_chunked
from megatron_ext.schedule import forward_backward, wrap_with_ddp
from megatron_ext.weights import export_hf_weights, load_hf_weights
from pipeline.rl.loss import policy_loss, tis_weights
from pipeline.rl.rollout import PolicyBatch

METRIC_KEYS = ("loss", "entropy", "clip_frac", "approx_kl", "kl_ref", "logp_mismatch", "tis_truncated", "tokens")
MISMATCH_QUANTILE = 0.99


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits of the sampling distribution; at temperature 1 the logits themselves (x / 1 is x: no copy)."""
    return logits if temperature == 1.0 else logits / temperature


def token_logprobs_and_entropy(logits_BTV: torch.Tensor, target_BT: torch.Tensor, vocab_size: int, temperature: float,
                               chunk_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (differentiable) and entropy of the sampling distribution (logits / temperature) from this
    rank's vocab-parallel logits; `chunk_tokens` > 0 works through that many tokens at a time, never holding fp32
    [B, T, V] (megatron_ext.logprobs)."""
    if chunk_tokens > 0:
        return vocab_parallel_logprobs_and_entropy_chunked(logits_BTV, target_BT, vocab_size, chunk_tokens=chunk_tokens,
                                                           temperature=temperature)
    return vocab_parallel_logprobs_and_entropy(_scaled(logits_BTV, temperature), target_BT, vocab_size)


def microbatch_policy_loss(logits, mb: dict, batch: PolicyBatch, old_logp_BS, ref_logp_BS, cfg, vocab_size: int, *,
                           num_responses: int, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The Dr. GRPO (or configured) loss of one micro-batch from its logits, its metric sums in METRIC_KEYS' order
    (a device tensor: no host sync per micro-batch) and, on-policy, each response token's |learner - engine|
    log-prob gap (NaN elsewhere). `old_logp_BS` None: on-policy, the behaviour log-probs are this forward's own,
    detached. With `cfg.tis_cap` each token's surrogate is weighted by min(pi_behaviour / pi_engine, tis_cap)."""
    rows = mb["rows"]
    if "layout" in mb:  # shared prompt: each response token's predicting logits, response-major [b, R]
        vocab = logits.shape[-1]
        predicting = logits.reshape(-1, vocab).index_select(0, mb["source_index"].reshape(-1))
        predicting = predicting.view(*mb["source_index"].shape, vocab)
        target, mask = mb["response_tokens"], mb["response_mask"]

        def at_tokens(per_position_BS):
            return per_position_BS[rows].gather(1, mb["position_index"])
    else:  # one row per response: position t's logits predict token t + 1 (rows cut to the micro-batch's width)
        width = mb["tokens"].shape[1]
        predicting, target = logits[:, :-1], mb["tokens"][:, 1:]

        def at_tokens(per_position_BS):
            return per_position_BS[rows, 1:width]

        mask = at_tokens(batch.response_mask_BS)
    logp, entropy = token_logprobs_and_entropy(predicting, target, vocab_size, cfg.temperature, cfg.logprob_chunk_tokens)
    engine_logp = at_tokens(batch.engine_logp_BS)
    gaps = None
    if old_logp_BS is None:
        old = logp.detach()
        gaps = torch.where(mask, (old - engine_logp).abs(), float("nan"))
    else:
        old = at_tokens(old_logp_BS)
    weights = tis_weights(old, engine_logp, cfg.tis_cap) if cfg.tis_cap > 0 else None
    loss, metrics = policy_loss(
        logp, old, batch.adv_B[rows], mask, clip_eps=cfg.clip_eps, aggregation=cfg.aggregation,
        max_new_tokens=cfg.max_new_tokens, kl_coef=cfg.kl_coef,
        ref_logp_BT=at_tokens(ref_logp_BS) if ref_logp_BS is not None else None,
        num_responses=num_responses, num_tokens=num_tokens, check_lengths=False,  # Learner.update checked them
        token_weight_BT=weights,
    )
    n = metrics["num_tokens"]
    zero = n.new_zeros(())
    with torch.no_grad():
        stats = torch.stack([
            loss.detach(), (entropy * mask).sum(), metrics["clip_frac"] * n, metrics["approx_kl"] * n,
            metrics.get("kl_ref", zero) * n, zero if gaps is None else gaps.nansum(),
            zero if weights is None else (((old - engine_logp) > math.log(cfg.tis_cap)) & mask).sum(), n])
    return loss, stats.to(torch.float64), gaps


class Learner:
    def __init__(self, cfg, layout, hf_dir: str, *, hf_config=None):
        from transformers import AutoConfig

        from pipeline.optim import OptimConfig, build_optimizer

        self.cfg = cfg
        self.layout = layout
        hf_config = hf_config or AutoConfig.from_pretrained(hf_dir)
        self.vocab_size = hf_config.vocab_size
        self.device = layout.device
        dtype = torch.bfloat16 if torch.cuda.is_available() and cfg.bf16 else torch.float32
        model = build_model(hf_config, tp=layout.tp, pp=layout.pp, dtype=dtype, **recompute_overrides(cfg.recompute))
        load_hf_weights(model, hf_dir)
        distributed_optimizer = self.device.type != "cpu" and layout.dp > 1
        self.model = wrap_with_ddp(model, use_distributed_optimizer=distributed_optimizer,
                                   grad_reduce_in_fp32=cfg.grad_reduce_in_fp32 or dtype == torch.float32)
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
            self.reference = build_model(hf_config, tp=layout.tp, pp=layout.pp, dtype=dtype)
            load_hf_weights(self.reference, hf_dir)
            self.reference.eval().requires_grad_(False)

    # ---- log-probs ---------------------------------------------------------------------------------------

    def _microbatches(self, batch: PolicyBatch) -> list[dict]:
        """One row per response, `micro_batch_size` rows each. With `trim_microbatch_padding` (and PP = 1: pipeline
        stages exchange one fixed shape) each micro-batch is cut after its own last response token instead of the
        step's longest row: the positions cut predict nothing that is trained."""
        mbs, width = self.cfg.micro_batch_size, batch.tokens_BS.shape[1]
        widths = [width] * -(-batch.size // mbs)
        if self.cfg.trim_microbatch_padding and self.layout.pp == 1:
            columns = torch.arange(width, device=batch.response_mask_BS.device)
            row_ends = (batch.response_mask_BS * (columns + 1)).amax(dim=1)  # last response column + 1 (0: none)
            ends = torch.stack([e.max() for e in row_ends.split(mbs)]).tolist()  # one device -> host transfer
            widths = [max(2, int(e)) for e in ends]
        return [{"tokens": batch.tokens_BS[start : start + mbs, :w], "rows": slice(start, start + mbs)}
                for start, w in zip(range(0, batch.size, mbs), widths)]

    @torch.no_grad()
    def logprobs(self, batch: PolicyBatch, model=None) -> torch.Tensor | None:
        """Log-probs [B, S] of each token at its position under `model` (default: the policy); last PP stage
        only (None elsewhere)."""
        from megatron.core import parallel_state as ps

        model = model or self.model
        model.eval()
        temperature = self.cfg.temperature
        batch = batch.to(self.device)

        width = batch.tokens_BS.shape[1]

        def loss_fn(logits, mb):
            logp, _ = token_logprobs_and_entropy(logits[:, :-1], mb["tokens"][:, 1:], self.vocab_size, temperature,
                                                 self.cfg.logprob_chunk_tokens)
            return logits.new_zeros(()), {"logp": torch.nn.functional.pad(logp, (1, width - logp.shape[1] - 1))}

        outputs = forward_backward([model], self._microbatches(batch), loss_fn, forward_only=True)
        if not ps.is_pipeline_last_stage():
            return None
        return torch.cat([o["logp"] for o in outputs])

    # ---- update ------------------------------------------------------------------------------------------

    def update(self, batch: PolicyBatch, *, num_responses_global: int, num_tokens_global: int) -> dict:
        """PPO epochs over this DP rank's responses; returns step metrics averaged over the whole step."""
        cfg = self.cfg
        dp = self.layout.dp
        minibatches = max(1, cfg.minibatches_per_step)
        # One update per step from the weights that the step's old log-probs would be computed with: they are the
        # update's own forward pass, detached (ratio exactly 1; the same gradient), so no separate pass is run.
        on_policy = cfg.behaviour_logprobs == "learner" and cfg.ppo_epochs * minibatches == 1
        longest = int(batch.response_mask_BS.sum(1).max()) if batch.size else 0
        if longest > cfg.max_new_tokens:
            raise ValueError(f"a response has {longest} tokens but max_new_tokens is {cfg.max_new_tokens}: the "
                             "rollout engine must stop at the generation budget (the Dr. GRPO normaliser)")
        batch = batch.to(self.device)
        if on_policy:
            old_logp = None
        else:
            old_logp = self.logprobs(batch) if cfg.behaviour_logprobs == "learner" else batch.engine_logp_BS
        ref_logp = self.logprobs(batch, self.reference) if self.reference is not None else None
        mask = batch.response_mask_BS
        sums = torch.zeros(len(METRIC_KEYS), dtype=torch.float64, device=self.device)  # METRIC_KEYS' sums
        gaps = []  # |learner - engine| log-prob of each response token (NaN elsewhere): the mismatch's max, quantile
        if old_logp is not None:
            gaps.append(torch.where(mask, (old_logp - batch.engine_logp_BS).abs(), float("nan")))
            sums[METRIC_KEYS.index("logp_mismatch")] += gaps[0].nansum()
        rows_per_minibatch = batch.size // minibatches
        grad_norms = []
        for _ in range(cfg.ppo_epochs):
            for m in range(minibatches):
                sl = slice(m * rows_per_minibatch, (m + 1) * rows_per_minibatch)
                grad_norms.append(self._update(batch.rows(sl), old_logp[sl] if old_logp is not None else None,
                                               ref_logp[sl] if ref_logp is not None else None,
                                               num_responses_global // minibatches // dp,
                                               max(1, num_tokens_global // minibatches // dp), sums, gaps))
        updates = cfg.ppo_epochs * minibatches
        from megatron.core import parallel_state as ps

        extremes = torch.zeros(2, dtype=torch.float64, device=self.device)  # this rank's max and quantile
        flat = torch.cat([g.flatten() for g in gaps]) if gaps else None
        if ps.is_pipeline_last_stage() and flat is not None and flat.numel():
            extremes = torch.stack([flat.nan_to_num(0.0).max(), flat.nanquantile(MISMATCH_QUANTILE)]).double()
            extremes = extremes.nan_to_num(0.0)
        else:
            sums.zero_()
        dist.all_reduce(sums)
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        sums /= self.layout.tp  # every TP rank of the last stage holds the same values
        t = dict(zip(METRIC_KEYS, sums.tolist()))
        mismatch_max, mismatch_quantile = extremes.tolist()
        n_tok = max(t["tokens"] / updates, 1.0)
        return {
            "train/loss": t["loss"] / (updates * dp),
            "train/entropy": t["entropy"] / (n_tok * updates),
            "train/clip_frac": t["clip_frac"] / (n_tok * updates),
            "train/approx_kl": t["approx_kl"] / (n_tok * updates),
            "train/kl_ref": t["kl_ref"] / (n_tok * updates),
            "train/logp_mismatch": t["logp_mismatch"] / n_tok,
            "train/logp_mismatch_max": mismatch_max,
            f"train/logp_mismatch_p{round(MISMATCH_QUANTILE * 100)}": mismatch_quantile,
            "train/tis_truncated_frac": t["tis_truncated"] / (n_tok * updates),
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

    def _update(self, batch, old_logp, ref_logp, num_responses, num_tokens, sums, gaps) -> float:
        """One optimizer step. `old_logp` None: on-policy, the behaviour log-probs are this forward pass's own
        (detached), and their gap to the engine's is measured here."""
        cfg = self.cfg
        self.model.train()
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        microbatches = self._shared_prompt_microbatches(batch) or self._microbatches(batch)

        def loss_fn(logits, mb):
            loss, stats, mb_gaps = microbatch_policy_loss(logits, mb, batch, old_logp, ref_logp, cfg, self.vocab_size,
                                                          num_responses=num_responses, num_tokens=num_tokens)
            sums.add_(stats)
            if mb_gaps is not None:
                gaps.append(mb_gaps)
            return loss, {}

        forward_backward([self.model], microbatches, loss_fn, forward_only=False)
        ok, grad_norm, _ = self.optimizer.step()
        if not ok:
            raise FloatingPointError("optimizer step skipped: non-finite gradients")
        return float(grad_norm or 0.0)

    # ---- weights and checkpoints ------------------------------------------------------------------------

    def export_weights(self):
        """Full HF-named tensors on every rank (for the rollout engine), lm_head included, in the learner's dtype
        (engines cast on load: no full-precision copy of each tensor on the device)."""
        return export_hf_weights(self.model, include_tied_lm_head=True)

    def sharded_state_dict(self, *, is_loading: bool = False) -> dict:
        """The learner's part of a distributed checkpoint. The distributed optimizer (an accelerator's default at
        DP > 1) is saved in the format this machine can load back (pipeline.optim.checkpoint_format)."""
        from pipeline.optim import checkpoint_format, optimizer_sharded_state_dict

        model_sd = self.model.sharded_state_dict()
        fmt = checkpoint_format(self.optimizer, want_reshardable=True)
        return {"model": model_sd,
                "optimizer": optimizer_sharded_state_dict(self.optimizer, model_sd, is_loading=is_loading, fmt=fmt)}

    @torch.no_grad()  # the distributed optimizer copies into views of leaf parameters
    def load_state_dict(self, state: dict) -> None:
        from pipeline.optim import finish_loading

        unwrap_model(self.model).load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        finish_loading(self.optimizer)
