"""Peak per-GPU memory of each training stage of a recipe, at its real shapes, against the card it is sized for.

    python -m bench.memory_plan --recipe llama32_3b_a100 [--json PATH] [--set stage2.recompute=none ...] [--full]

For each stage it prints the phases that can set the peak and writes, with --json,
`{"recipe": ..., "stages": {"stage1": {"peak_gib": x, "capacity_gib": 80, ...}, "stage2": {...}}}`.

How each part is obtained:
- transient memory (activations kept for backward, logits and the loss head's temporaries, activation gradients):
  MEASURED. The real model code (megatron_ext.models.build_model, Megatron's local layer spec) runs one
  micro-batch's forward, the stage's real loss (stage one: Megatron's per-token LM loss; stage two:
  pipeline.rl.learner.microbatch_policy_loss with the recipe's log-prob chunking) and backward under torch's
  FakeTensorMode (shapes and dtypes, no memory, no arithmetic) while torch's MemTracker counts every live tensor.
  Gradients are freed as they are made, as Megatron's DDP does (they go to its buffer, counted below). It is
  measured at 2 and 4 layers and extrapolated linearly to the model's depth (every layer keeps the same);
  `--full` also measures the full depth and reports the extrapolation's error.
- static memory: COUNTED from the same model's parameters and Megatron's layout: weights in the training dtype,
  the DDP gradient buffer in fp32 (4 B/param), Adam's fp32 main weights and two moments (12 B/param; divided by DP
  with the distributed optimizer, the default on GPUs at DP > 1), and in stage two a frozen reference model when
  kl_coef > 0.
- stage two's colocated vLLM: while generating, vLLM holds its `gpu_memory_utilization` share of the card next to
  the learner's static memory; while the learner trains vLLM sleeps (level 1: weights offloaded, KV cache freed),
  keeping VLLM_ASLEEP_GIB (an allowance for its CUDA-graph pool, not measured here); the weight sync wakes it and
  adds the largest exported tensor (the embedding, gathered, in the training dtype).
Limits: TP = PP = 1 only (what the recipes use; other layouts are refused). On GPU the stages use
transformer-engine's layers, which are not importable here; TE fuses the norms into the next linear and keeps less,
so the local layers measured here are an upper bound for the layers. CUDA context, NCCL buffers and allocator
fragmentation are not tensors: the 10% headroom the recipes keep is for them. scripts/gpu_check.sh compares the
prediction with torch.cuda.max_memory_allocated on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GIB = 2**30
VLLM_ASLEEP_GIB = 1.0
HEADROOM = 0.10
MEASURED_LAYERS = (2, 4)
_DTYPE_BYTES = {torch.bfloat16: 2, torch.float16: 2, torch.float32: 4}


@dataclasses.dataclass
class Shape:
    """One stage's training step as the memory plan sees it."""

    hf_config: object
    micro_batch: int
    seq_length: int
    dtype: torch.dtype
    recompute: str
    loss: str
    """'lm' (stage one) or 'policy' (stage two)."""
    rl_config: object = None
    """Stage two: the RLConfig whose loss head is measured."""


def _fake_step(shape: Shape, num_layers: int) -> dict:
    """Forward + loss + backward of one micro-batch under FakeTensorMode; MemTracker's peak by category (bytes)."""
    return _step(shape, num_layers, fake=True)


def _step(shape: Shape, num_layers: int, *, fake: bool) -> dict:
    """One micro-batch's forward + loss + backward of `shape` at `num_layers` layers; its peak memory (bytes).

    fake=True: under FakeTensorMode (shapes only) with MemTracker counting every live tensor: the plan's measurement.
    fake=False: the same body on real tensors on this process's device; on CUDA the peak is
    `torch.cuda.max_memory_allocated()` over a second step (the first warms caches: cuBLAS workspace, RoPE tables),
    after `reset_peak_memory_stats()` (scripts/gpu_check.sh compares it with the fake prediction); elsewhere MemTracker's.
    Returns params, param_bytes and total_bytes (the peak, parameters included)."""
    import contextlib

    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker

    from megatron_ext.models import build_model, recompute_overrides

    fields = {**shape.hf_config.to_dict(), "num_hidden_layers": num_layers}
    if fields.get("layer_types"):  # Qwen2 / Qwen3: one attention type per layer
        fields["layer_types"] = fields["layer_types"][:num_layers]
    config = shape.hf_config.__class__.from_dict(fields)
    B, S = shape.micro_batch, shape.seq_length
    with FakeTensorMode(allow_non_fake_inputs=True) if fake else contextlib.nullcontext():
        extra = {"calculate_per_token_loss": True} if shape.loss == "lm" else {}
        if fake:  # weight values do not matter to memory; and Megatron's GPU init forks its CUDA RNG tracker, which
            extra["perform_initialization"] = False  # compares real RNG states with .item(): impossible on fake tensors
        model = build_model(config, dtype=shape.dtype, max_sequence_length=S, **extra,
                        **recompute_overrides(shape.recompute))
        model.train()
        for p in model.parameters():  # Megatron's DDP moves each gradient into its buffer at once
            p.register_post_accumulate_grad_hook(lambda p: setattr(p, "grad", None))
        params = sum(p.numel() for p in model.parameters())
        device = next(model.parameters()).device
        tokens = torch.randint(0, config.vocab_size, (B, S), device=device)
        positions = torch.arange(S, device=device).expand(B, S)

        def forward_backward():
            if shape.loss == "lm":
                losses = model(tokens, positions, None, labels=tokens)
                loss = (losses.float() * torch.ones(B, S, device=device)).sum()
            else:
                loss = _policy_loss(model, tokens, positions, shape.rl_config, config.vocab_size)
            loss.backward()

        if not fake and device.type == "cuda":
            param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
            forward_backward()
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            forward_backward()
            torch.cuda.synchronize(device)
            return {"params": params, "param_bytes": param_bytes, "total_bytes": torch.cuda.max_memory_allocated(device),
                    "allocated_before_bytes": before}
        tracker = MemTracker()
        tracker.track_external(model)
        with tracker:
            forward_backward()
        peak = tracker.get_tracker_snapshot("peak")
    (categories,) = [v for k, v in peak.items() if str(k) == str(device)]
    by_name = {str(getattr(k, "value", k)): v for k, v in categories.items()}
    return {"params": params, "param_bytes": by_name["Parameter"], "total_bytes": by_name["Total"]}


def _policy_loss(model, tokens, positions, cfg, vocab_size: int):
    """Stage two's loss through the learner's own code: one row per response (the layout on GPU layers), responses
    filling the whole budget after a full-length prompt (the worst case)."""
    from pipeline.rl.learner import microbatch_policy_loss
    from pipeline.rl.rollout import PolicyBatch

    B, S = tokens.shape
    mask = torch.zeros(B, S, dtype=torch.bool, device=tokens.device)
    mask[:, cfg.max_prompt_tokens:] = True
    batch = PolicyBatch(tokens, mask, torch.zeros(B, S, device=tokens.device), torch.ones(B, device=tokens.device))
    logits = model(tokens, positions, None)
    loss, _, _ = microbatch_policy_loss(logits, {"tokens": tokens, "rows": slice(0, B)}, batch, None, None, cfg,
                                        vocab_size, num_responses=B * 8, num_tokens=B * cfg.max_new_tokens)
    return loss


def measure_transient(shape: Shape, *, full: bool = False) -> dict:
    """Transient bytes of one training micro-batch at the model's depth (extrapolated from MEASURED_LAYERS), and the
    parameter count; with `full` the full-depth measurement and the extrapolation's relative error too."""
    depth = shape.hf_config.num_hidden_layers
    small = {n: _fake_step(shape, n) for n in MEASURED_LAYERS}
    (l0, a), (l1, b) = small.items()

    def at_depth(key: str) -> float:
        return a[key] + (b[key] - a[key]) / (l1 - l0) * (depth - l0)

    transient = at_depth("total_bytes") - at_depth("param_bytes")
    out = {"transient_bytes": transient, "params": int(round(at_depth("params"))), "method": (
        f"FakeTensorMode + MemTracker at {l0} and {l1} layers, extrapolated linearly to {depth}")}
    if full:
        measured = _fake_step(shape, depth)
        real = measured["total_bytes"] - measured["param_bytes"]
        out["full_depth_transient_bytes"] = real
        out["extrapolation_rel_error"] = (transient - real) / real
    return out


def static_bytes(params: int, dtype: torch.dtype, dp: int, distributed_optimizer: bool, reference: bool,
                 grad_reduce_in_fp32: bool = True) -> dict:
    """Weights, gradient buffer (fp32 or the weights' dtype), Adam state (fp32 main weights + 2 moments), optional
    frozen reference."""
    weight = params * _DTYPE_BYTES[dtype]
    optimizer = params * (12 if dtype != torch.float32 else 8)  # fp32 weights are their own main copy
    if distributed_optimizer:
        optimizer /= dp
    grad = params * (4 if grad_reduce_in_fp32 else _DTYPE_BYTES[dtype])
    return {"weights": weight, "grad_buffer": grad, "optimizer": optimizer,
            "reference": weight if reference else 0}


# ---- a recipe's stages ------------------------------------------------------------------------------------------


def plan(recipe, *, full: bool = False, log=print) -> dict:
    """The plan of every training stage of `recipe` (a PipelineRecipe): a dict as written by --json."""
    from megatron_ext.distributed import init_distributed
    from recipes.pipeline_recipe import model_shape

    layouts = {"stage1": (recipe.stage1.parallel.tp, recipe.stage1.parallel.pp),
               "stage2": (recipe.stage2.tp, recipe.stage2.pp)}
    if recipe.skip_stage1:
        del layouts["stage1"]
    for name, (tp, pp) in layouts.items():
        if (tp, pp) != (1, 1):
            raise ValueError(f"recipe.{name}: tp={tp} pp={pp}; the memory plan measures TP = PP = 1 layouts only")
    init_distributed()
    hf_config = model_shape(recipe)
    world = recipe.nodes * recipe.ranks_per_node
    gpu = recipe.gpu_memory_gib > 0
    dtype = torch.bfloat16 if gpu else torch.float32
    capacity = recipe.gpu_memory_gib or None
    stages = {}

    if not recipe.skip_stage1:
        s1 = recipe.stage1
        t0 = time.time()
        shape = Shape(hf_config, s1.schedule.micro_batch_size, s1.data.seq_length, dtype, s1.parallel.recompute, "lm")
        measured = measure_transient(shape, full=full)
        dist_opt = _flag(s1.parallel.use_distributed_optimizer, gpu and world > 1)
        static = static_bytes(measured["params"], dtype, world, dist_opt, reference=False)
        phases = {"train": sum(static.values()) + measured["transient_bytes"]}
        stages["stage1"] = _stage(phases, static, measured, capacity,
                                  micro_batch=f"{shape.micro_batch} x {shape.seq_length} tokens",
                                  settings={"recompute": s1.parallel.recompute, "distributed_optimizer": dist_opt})
        log(f"[memory_plan] stage one measured in {time.time() - t0:.0f} s")

    s2 = recipe.stage2
    t0 = time.time()
    shape = Shape(hf_config, s2.micro_batch_size, s2.max_prompt_tokens + s2.max_new_tokens, dtype, s2.recompute,
                  "policy", rl_config=s2)
    measured = measure_transient(shape, full=full)
    dist_opt = gpu and world > 1  # the learner's rule
    static = static_bytes(measured["params"], dtype, world, dist_opt, reference=s2.kl_coef > 0,
                          grad_reduce_in_fp32=s2.grad_reduce_in_fp32)
    learner_static = sum(static.values())
    vllm_share = float(s2.engine_options.get("gpu_memory_utilization", 0.3)) * (capacity or 0) * GIB
    largest_export = hf_config.vocab_size * hf_config.hidden_size * _DTYPE_BYTES[dtype]  # TP-gathered, as trained
    phases = {"train": learner_static + measured["transient_bytes"] + (VLLM_ASLEEP_GIB * GIB if gpu else 0),
              "generate": learner_static + vllm_share, "weight_sync": learner_static + vllm_share + largest_export}
    stages["stage2"] = _stage(phases, static, measured, capacity,
                              micro_batch=f"{shape.micro_batch} x ({s2.max_prompt_tokens} + {s2.max_new_tokens}) tokens",
                              settings={"recompute": s2.recompute, "logprob_chunk_tokens": s2.logprob_chunk_tokens,
                                  "grad_reduce_in_fp32": s2.grad_reduce_in_fp32,
                                        "distributed_optimizer": dist_opt, "vllm_gpu_memory_utilization":
                                        s2.engine_options.get("gpu_memory_utilization", 0.3),
                                        "vllm_asleep_gib_assumed": VLLM_ASLEEP_GIB if gpu else 0})
    log(f"[memory_plan] stage two measured in {time.time() - t0:.0f} s")
    return {"recipe": getattr(recipe, "name", ""), "model": {"layers": hf_config.num_hidden_layers,
            "hidden": hf_config.hidden_size, "vocab": hf_config.vocab_size, "params": measured["params"]},
            "world_size": world, "dtype": str(dtype).replace("torch.", ""), "stages": stages}


def _flag(value: str, auto: bool) -> bool:
    value = str(value).lower()
    return auto if value == "auto" else value == "true"


def _stage(phases: dict, static: dict, measured: dict, capacity, **info) -> dict:
    peak_phase = max(phases, key=phases.get)
    out = {"peak_gib": phases[peak_phase] / GIB, "capacity_gib": capacity, "peak_phase": peak_phase,
           "phases_gib": {k: v / GIB for k, v in phases.items()},
           "static_gib": {k: v / GIB for k, v in static.items()},
           "transient_gib": measured["transient_bytes"] / GIB, "transient_method": measured["method"], **info}
    if "extrapolation_rel_error" in measured:
        out["full_depth_transient_gib"] = measured["full_depth_transient_bytes"] / GIB
        out["extrapolation_rel_error"] = measured["extrapolation_rel_error"]
    if capacity:
        out["headroom"] = 1 - out["peak_gib"] / capacity
        out["fits"] = out["headroom"] >= HEADROOM
    return out


def format_plan(result: dict) -> str:
    lines = [f"recipe {result['recipe']}: {result['model']['params'] / 1e9:.2f}B params, {result['dtype']}, "
             f"{result['world_size']} GPUs"]
    for name, st in result["stages"].items():
        cap = st["capacity_gib"]
        verdict = "" if not cap else (f" of {cap:.0f} GiB, headroom {st['headroom']:.0%} "
                                      f"({'fits' if st['fits'] else 'DOES NOT FIT'} with >= {HEADROOM:.0%})")
        lines.append(f"  {name}: peak {st['peak_gib']:.1f} GiB ({st['peak_phase']}){verdict}; micro-batch "
                     f"{st['micro_batch']}; {st['settings']}")
        lines.append("    phases: " + ", ".join(f"{k} {v:.1f}" for k, v in st["phases_gib"].items())
                     + " GiB; static: " + ", ".join(f"{k} {v:.1f}" for k, v in st["static_gib"].items())
                     + f" GiB; transient (measured) {st['transient_gib']:.1f} GiB")
        if "extrapolation_rel_error" in st:
            lines.append(f"    full depth measured {st['full_depth_transient_gib']:.2f} GiB: extrapolation error "
                         f"{st['extrapolation_rel_error']:+.2%}")
    return "\n".join(lines)


def load_recipe(name: str, overrides: list[str]):
    """A shipped recipe by name with `section.field=value` overrides (values parse as JSON when they can)."""
    from recipes.pipeline_recipe import RECIPES

    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; valid: {sorted(RECIPES)}")
    recipe = RECIPES[name]()
    recipe.name = name
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected section.field=value, e.g. stage2.recompute=none")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        *path, last = key.split(".")
        target = recipe
        for part in path:
            target = getattr(target, part, None)
            if target is None:
                raise ValueError(f"--set {item!r}: the recipe has no section {part!r}")
        if not hasattr(target, last):
            raise ValueError(f"--set {item!r}: {'.'.join(path) or 'recipe'} has no field {last!r}")
        setattr(target, last, value)
    return recipe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory_plan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="a recipe of recipes/pipeline_recipe.py, e.g. llama32_3b_a100")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override a recipe field, e.g. --set stage2.recompute=none")
    p.add_argument("--json", help="write the plan as JSON to this path")
    p.add_argument("--full", action="store_true", help="also measure at full depth and report the extrapolation error")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex|traceable wrapper-subclass).*")
    try:
        recipe = load_recipe(args.recipe, args.set)
        result = plan(recipe, full=args.full)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_plan(result))
    if args.json:
        path = Path(args.json)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        tmp.replace(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
