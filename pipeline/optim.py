"""Megatron optimizer and learning-rate schedule, shared by stage one and the stage-two learner.

`OptimConfig` holds the settings (AdamW, warmup + cosine / linear / constant decay, grad clipping);
`build_optimizer` returns Megatron's optimizer (`get_megatron_optimizer`: fp32 on CPU, bf16 params with fp32
master weights on GPU, the distributed optimizer when asked) and `build_scheduler` Megatron's
`OptimizerParamScheduler` counted in optimizer steps. `optimizer_sharded_state_dict` gives the optimizer's
part of a distributed checkpoint.
"""

from dataclasses import dataclass

import torch

DECAY_STYLES = ("cosine", "linear", "constant")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    """Peak learning rate (reached at the end of warmup)."""
    min_lr: float = 1e-4
    """Learning rate at the end of the decay (cosine / linear); ignored by 'constant'."""
    warmup_iters: int = 20
    """Linear warmup from 0 to `lr` over this many optimizer steps (0: start at `lr`)."""
    decay_style: str = "cosine"
    """After warmup: 'cosine' or 'linear' decay to `min_lr`, or 'constant' at `lr`."""
    decay_iters: int = 0
    """Steps over which warmup + decay run (0: the whole run, schedule.train_iters); min_lr after it."""
    adam_beta1: float = 0.9
    """AdamW first-moment decay."""
    adam_beta2: float = 0.95
    """AdamW second-moment decay (0.95 as in Llama pretraining)."""
    adam_eps: float = 1e-8
    """AdamW denominator epsilon."""
    weight_decay: float = 0.1
    """Decoupled (AdamW) weight decay; Megatron exempts biases and 1-D parameters (norms)."""
    clip_grad: float = 1.0
    """Clip the global gradient norm to this value (0 disables clipping)."""

    def validate(self, train_iters: int) -> None:
        if self.decay_style not in DECAY_STYLES:
            raise ValueError(f"optim.decay_style={self.decay_style!r}; valid: {list(DECAY_STYLES)}")
        if self.lr <= 0:
            raise ValueError(f"optim.lr={self.lr} must be > 0")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"optim.min_lr={self.min_lr} must be in [0, optim.lr={self.lr}]")
        decay = self.decay_iters or train_iters
        if self.warmup_iters < 0 or self.warmup_iters >= decay:
            raise ValueError(f"optim.warmup_iters={self.warmup_iters} must be >= 0 and below the decay length "
                             f"({decay} steps: optim.decay_iters or schedule.train_iters); lower warmup_iters")
        if not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError("optim.adam_beta1 and optim.adam_beta2 must be in [0, 1)")
        if self.weight_decay < 0 or self.clip_grad < 0 or self.adam_eps <= 0:
            raise ValueError("optim.weight_decay and optim.clip_grad must be >= 0 and optim.adam_eps > 0")


def build_optimizer(model_chunks: list, cfg: OptimConfig, *, dtype: torch.dtype, use_distributed_optimizer: bool):
    """Megatron optimizer over the DDP-wrapped chunks (their params must be in `dtype`)."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    config = OptimizerConfig(
        optimizer="adam", lr=cfg.lr, min_lr=cfg.min_lr, weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_eps=cfg.adam_eps,
        clip_grad=cfg.clip_grad, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, params_dtype=dtype,
        use_distributed_optimizer=use_distributed_optimizer,
    )
    optimizer = get_megatron_optimizer(config, model_chunks)
    for group in _param_groups(optimizer):  # Megatron applies wd_mult only from its scheduler, which RL runs without
        group["weight_decay"] = cfg.weight_decay * group.get("wd_mult", 1.0)
    if not torch.cuda.is_available():
        _fuse_cpu_adam(optimizer)
    return optimizer


def _param_groups(optimizer) -> list[dict]:
    chained = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    return [group for megatron_optimizer in chained for group in megatron_optimizer.optimizer.param_groups]


def _fuse_cpu_adam(optimizer) -> None:
    """Megatron builds torch's AdamW without `fused` on CPU, i.e. the per-parameter loop; torch's fused CPU kernel
    does the same update ~3x faster (the loop is ~2.5% of a tiny model's step)."""
    chained = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    for megatron_optimizer in chained:
        inner = getattr(megatron_optimizer, "optimizer", None)
        if isinstance(inner, torch.optim.Adam | torch.optim.AdamW):
            for group in inner.param_groups:
                group["foreach"], group["fused"] = False, True


def build_scheduler(optimizer, cfg: OptimConfig, train_iters: int):
    """Megatron's `OptimizerParamScheduler` counted in optimizer steps.

    Call `scheduler.step(1)` *before* each optimizer step: step k (1-based) then runs at lr(k), so warmup's first
    step is not wasted at lr 0 and step `decay_iters` ends at `min_lr`.
    """
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    decay = cfg.decay_iters or train_iters
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0 if cfg.warmup_iters else cfg.lr, max_lr=cfg.lr,
        min_lr=cfg.lr if cfg.decay_style == "constant" else cfg.min_lr,
        lr_warmup_steps=cfg.warmup_iters, lr_decay_steps=decay, lr_decay_style=cfg.decay_style,
        start_wd=cfg.weight_decay, end_wd=cfg.weight_decay, wd_incr_steps=decay, wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True, override_opt_param_scheduler=False,
    )


def current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def checkpoint_format(optimizer, want_reshardable: bool) -> str:
    """How `optimizer`'s state goes into a checkpoint: 'model_space' (Megatron's plain optimizers: reshards across
    TP, PP and DP), or for the distributed optimizer 'fully_reshardable' (gathered over DP on DP rank 0; any layout)
    or 'dp_reshardable' (each rank writes its shard; same TP / PP, any DP). Megatron-core 0.16 cannot load
    fully_reshardable into torch's Adam (no TE / Apex, i.e. CPU: KeyError 'step'), so there it is dp_reshardable."""
    from megatron.core.optimizer.distrib_optimizer import HAVE_APEX_OR_TE, DistributedOptimizer

    chained = getattr(optimizer, "chained_optimizers", [optimizer])
    if not any(isinstance(opt, DistributedOptimizer) for opt in chained):
        return "model_space"
    return "fully_reshardable" if want_reshardable and HAVE_APEX_OR_TE else "dp_reshardable"


def optimizer_sharded_state_dict(optimizer, model_sharded_state_dict: dict, *, is_loading: bool,
                                 fmt: str = "model_space") -> dict:
    """The optimizer's part of a distributed checkpoint in format `fmt` (see `checkpoint_format`; a load must ask
    for the format the checkpoint was saved in)."""
    metadata = {"distrib_optim_sharding_type": "dp_reshardable" if fmt == "dp_reshardable" else "fully_reshardable",
                "distrib_optim_fully_reshardable_mem_efficient": True}
    if is_loading:
        _init_distributed_optimizer_state(optimizer)
    return optimizer.sharded_state_dict(model_sharded_state_dict, is_loading=is_loading, metadata=metadata)


def _init_distributed_optimizer_state(optimizer) -> None:
    """Megatron-core 0.16's DistributedOptimizer.state_dict() asserts when torch's Adam (no TE / Apex: CPU) has no
    state yet, which is exactly the optimizer a resume loads into. Give it Adam's zero state and step 0 (Megatron's
    init_state_fn plus 'step'); the checkpoint overwrites all of it."""
    from megatron.core.optimizer.distrib_optimizer import HAVE_APEX_OR_TE, DistributedOptimizer

    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        if HAVE_APEX_OR_TE or not isinstance(opt, DistributedOptimizer):
            continue
        for group in opt.optimizer.param_groups:
            for p in group["params"]:
                state = opt.optimizer.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p.data)
                    state["exp_avg_sq"] = torch.zeros_like(p.data)
                    state["step"] = torch.zeros((), dtype=torch.float32)


def finish_loading(optimizer) -> None:
    """After `optimizer.load_state_dict(...)`. On torch's Adam (no TE / Apex: CPU) megatron-core 0.16's
    DistributedOptimizer keeps the true step count only in the param groups: the per-parameter 'step' tensors
    end up shared by all parameters (Adam then increments one tensor once per parameter) or copied from the
    placeholder state the load started from. Give each parameter its own step from its group."""
    from megatron.core.optimizer.distrib_optimizer import HAVE_APEX_OR_TE, DistributedOptimizer

    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        if not HAVE_APEX_OR_TE and isinstance(opt, DistributedOptimizer):
            for group in opt.optimizer.param_groups:
                if "step" not in group:
                    continue
                for p in group["params"]:
                    state = opt.optimizer.state[p]
                    if "step" in state:
                        state["step"] = torch.tensor(float(group["step"]), dtype=torch.float32)
