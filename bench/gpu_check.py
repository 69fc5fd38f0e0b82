"""The GPU validation's measurements on one CUDA GPU, written to one JSON (scripts/gpu_check.sh runs this after the GPU
tests; run it that way, the script installs what the machine lacks and passes the tests' result in).

    python -m bench.gpu_check [--out bench/results/gpu-DATE.json] [--parts throughput,rl,memory] [--budget-s 330]
    python -m bench.gpu_check --smoke --out /tmp/smoke.json      # tiny sizes, also without CUDA: a dry run of the code

Parts, each in its own process under a time limit (one failing or timing out does not stop the others):
- throughput: stage one's step at the Llama-3.2-3B shape (pipeline.model_presets "llama3.2-3b") in bf16 with
  Megatron's local layer spec (transformer-engine absent): build_model + wrap_with_ddp + build_optimizer +
  Megatron's forward_backward with stage one's per-token loss (pipeline.pretrain's step function) + optimizer step,
  on random tokens, `--micro-batches` x `--mbs` x `--seq` tokens per step. Reports tokens/s and MFU =
  train_flops_per_token x tokens/s / peak, against the bf16 matmul peak measured here
  (megatron_ext.training.measure_matmul_flops, 8192^3) and against the card's nominal dense bf16 peak (H200: 989
  TFLOP/s), both named in the JSON.
- rl: `python -m pipeline.rl` (one process) for `--rl-steps` Dr. GRPO steps with engine=torch on CUDA, fp32
  learner (bf16=false) and TF32 off, on the tiny warm addition policy of tests/tiny_models.py; passes when it
  finishes and every step's train/logp_mismatch (engine vs learner log-probs after the weight sync) is < 1e-3.
- memory: bench.memory_plan's prediction against torch.cuda.max_memory_allocated: for stage one and for stage two
  (recompute=full + logprob_chunk_tokens=4096, and recompute=none + no chunking) of the llama32_3b_a100 recipe,
  reduced to `--memory-layers` layers (same micro-batch and sequence length), the transient bytes predicted under
  FakeTensorMode (on the CUDA device here; the plan's extrapolation from 2 and 4 layers; and, in a child process
  with CUDA hidden, exactly as the plan runs on a CPU machine) and the real step's peak minus parameter bytes.
- gpu_tests / engine_vs_learner_logprobs: tests/test_gpu.py's result as passed in by scripts/gpu_check.sh
  (--pytest-exit, --pytest-junit); its torch-engine test is the engine-vs-learner log-prob check on CUDA.
JSON: machine (bench.common.machine_info + CUDA), each part's status (ok / failed / timeout / skipped / not_run),
seconds, figures and captured errors; written atomically. Exit status 0 when every part is ok.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PARTS = ("throughput", "rl", "memory")
PART_BUDGET_S = {"throughput": 90.0, "rl": 120.0, "memory": 110.0}
"""Upper limits per part (seconds); expected on an H200: ~40, ~60, ~60. They shrink to what --budget-s leaves."""
H200_BF16_DENSE_FLOPS = 989e12
NOMINAL_BF16_DENSE_FLOPS = (("H200 NVL", 835e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H200", 989e12),
                            ("H100", 989e12), ("A100", 312e12))
"""Dense bf16 tensor-core peaks from NVIDIA's data sheets, matched against torch.cuda.get_device_name in this order."""
LOGP_MISMATCH_LIMIT = 1e-3
TORCH_ENGINE_TEST = "test_cuda_torch_engine_logprobs_match_learner_after_sync"
MEMORY_RECIPE = "llama32_3b_a100"
GIB = 2**30


def default_out() -> str:
    return str(REPO / "bench" / "results" / f"gpu-{datetime.date.today().isoformat()}.json")


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown or [text]}; valid: {','.join(PARTS)}")
    return parts


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="JSON to write (default bench/results/gpu-<date>.json)")
    p.add_argument("--parts", type=_parts, default=list(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--budget-s", type=_positive(float), default=330.0,
                   help="seconds for all parts together; each part's limit shrinks to what is left (default 330)")
    p.add_argument("--log-dir", default=None, help="each part's full output (default: beside --out, NAME.logs/)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny sizes (tiny preset, tiny_cpu recipe), allowed without CUDA: a dry run of every part's code")
    g = p.add_argument_group("stage-one throughput")
    g.add_argument("--seq", type=_positive(int), default=4096, help="sequence length (default 4096, the recipe's)")
    g.add_argument("--mbs", type=_positive(int), default=2, help="micro-batch size (default 2, the recipe's)")
    g.add_argument("--micro-batches", type=_positive(int), default=2, help="micro-batches per optimizer step")
    g.add_argument("--steps", type=_positive(int), default=5, help="timed optimizer steps (after 2 warm-up steps)")
    g = p.add_argument_group("Dr. GRPO run and memory plan")
    g.add_argument("--rl-steps", type=_positive(int), default=3, help="Dr. GRPO steps (default 3)")
    g.add_argument("--memory-layers", type=_positive(int), default=8,
                   help="layers of the reduced model whose memory is predicted and measured (default 8)")
    g = p.add_argument_group("the GPU tests' result (scripts/gpu_check.sh passes it)")
    g.add_argument("--pytest-exit", type=int, default=None, help="exit status of pytest -m gpu tests/test_gpu.py")
    g.add_argument("--pytest-seconds", type=float, default=None)
    g.add_argument("--pytest-junit", default=None, help="its --junitxml report")
    g.add_argument("--pytest-timed-out", action="store_true")
    p.add_argument("--part", choices=(*PARTS, "memory-predict"), help=argparse.SUPPRESS)
    p.add_argument("--part-out", help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.out is None:
        args.out = default_out()
    if args.smoke:
        args.seq, args.mbs, args.micro_batches, args.steps = min(args.seq, 128), min(args.mbs, 2), 2, min(args.steps, 2)
        args.rl_steps, args.memory_layers = min(args.rl_steps, 2), min(args.memory_layers, 4)
    return args


# ---- orchestration -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part:
        return _child(args)
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check: error: CUDA is not available (torch.cuda.is_available() is False); run this on the GPU "
              "machine (bash scripts/gpu_check.sh), or pass --smoke for a CPU dry run", file=sys.stderr)
        return 2
    out = Path(args.out)
    log_dir = Path(args.log_dir) if args.log_dir else out.with_name(out.stem + ".logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    deadline = started + args.budget_s
    from bench.common import machine_info

    result = {"benchmark": "gpu_check", "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "machine": {**machine_info(), **_cuda_info()}, "smoke": args.smoke, "budget_s": args.budget_s,
              "log_dir": str(log_dir), "parts": {}}
    result["parts"]["gpu_tests"], result["parts"]["engine_vs_learner_logprobs"] = _pytest_parts(args)
    for name in PARTS:
        if name not in args.parts:
            result["parts"][name] = {"status": "not_run", "reason": "not in --parts"}
            continue
        result["parts"][name] = _run_part(name, args, deadline, log_dir)
        _print_part(name, result["parts"][name])
        _write_json(out, {**result, "wall_s": time.time() - started})  # a later part's crash still leaves the earlier
    rl = result["parts"].get("rl", {})
    if "logp_mismatch_max" in rl:
        result["parts"]["engine_vs_learner_logprobs"]["rl_train_logp_mismatch_max"] = rl["logp_mismatch_max"]
    result["wall_s"] = time.time() - started
    passing = ("ok", "not_run", "skipped") if args.smoke else ("ok", "not_run")  # a CPU dry run skips the GPU tests
    result["ok"] = all(p["status"] in passing for p in result["parts"].values())
    _write_json(out, result)
    print(f"[gpu_check] {'all parts ok' if result['ok'] else 'SOME PARTS FAILED'}; results: {out}; logs: {log_dir}",
          flush=True)
    return 0 if result["ok"] else 1


def _cuda_info() -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"cuda_available": False}
    props = torch.cuda.get_device_properties(0)
    return {"cuda_available": True, "cuda_version": torch.version.cuda, "gpu": props.name,
            "gpu_memory_gib": props.total_memory / GIB, "gpu_count": torch.cuda.device_count(),
            "compute_capability": f"{props.major}.{props.minor}"}


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)


def _run_part(name: str, args: argparse.Namespace, deadline: float, log_dir: Path) -> dict:
    """`python -m bench.gpu_check --part NAME` in its own process group under the part's time limit."""
    import torch

    scale = 1 if torch.cuda.is_available() else 4  # a --smoke dry run on a CPU is slower
    limit = min(PART_BUDGET_S[name] * scale, deadline - time.time() - 5)
    if limit < 20:
        return {"status": "skipped", "reason": f"{max(limit, 0):.0f} s of the --budget-s {args.budget_s:.0f} s left"}
    part_out = log_dir / f"{name}.json"
    part_out.unlink(missing_ok=True)
    log = log_dir / f"{name}.log"
    cmd = [sys.executable, "-m", "bench.gpu_check", "--part", name, "--part-out", str(part_out),
           "--deadline", str(time.time() + limit - 3), *_size_args(args)]
    print(f"[gpu_check] {name}: running (limit {limit:.0f} s, log {log})", flush=True)
    t0 = time.time()
    code, timed_out = run_in_group(cmd, limit, log)
    seconds = time.time() - t0
    record = {}
    if part_out.exists():
        try:
            record = json.loads(part_out.read_text())
        except json.JSONDecodeError as e:
            record = {"error": f"unreadable part result: {e}"}
    if timed_out:
        status = "timeout"
    elif code == 0 and record.get("status") == "ok":
        status = "ok"
    else:
        status = "failed"
    record.update(status=status, seconds=round(seconds, 1), exit_code=code, limit_s=round(limit, 1), log=str(log))
    if status != "ok":
        record["log_tail"] = _tail(log, 4000)
    return record


def run_in_group(cmd: list[str], timeout: float, log: Path | None, env: dict | None = None) -> tuple[int | None, bool]:
    """Run `cmd` in a new session writing to `log` (None: this process's stdout); on timeout kill its whole process
    group. Returns (exit code, timed out)."""
    with open(log, "w") if log else open(os.devnull) as f:
        out = f if log else None
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT if log else None, env=env,
                                start_new_session=True)
        try:
            return proc.wait(timeout=max(timeout, 1)), False
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            return None, True


def _tail(path: Path, n: int) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _size_args(args: argparse.Namespace) -> list[str]:
    return ["--seq", str(args.seq), "--mbs", str(args.mbs), "--micro-batches", str(args.micro_batches), "--steps",
            str(args.steps), "--rl-steps", str(args.rl_steps), "--memory-layers", str(args.memory_layers),
            *(["--smoke"] if args.smoke else [])]


def _pytest_parts(args: argparse.Namespace) -> tuple[dict, dict]:
    """tests/test_gpu.py's outcome (run by scripts/gpu_check.sh before this) and its engine-vs-learner test's."""
    if args.pytest_exit is None and not args.pytest_timed_out:
        missing = {"status": "not_run", "reason": "no --pytest-exit given (scripts/gpu_check.sh passes it)"}
        return dict(missing), dict(missing)
    tests = parse_junit(args.pytest_junit) if args.pytest_junit else {}
    status = "timeout" if args.pytest_timed_out else ("ok" if args.pytest_exit == 0 else "failed")
    gpu_tests = {"status": status, "exit_code": args.pytest_exit, "seconds": args.pytest_seconds, "tests": tests,
                 "command": "python -m pytest -q -m gpu tests/test_gpu.py"}
    outcome = tests.get(TORCH_ENGINE_TEST, {}).get("outcome")
    engine = {"status": {"passed": "ok", "skipped": "skipped", None: "timeout" if args.pytest_timed_out else "failed"}.get(
                  outcome, "failed"),
              "test": f"tests/test_gpu.py::{TORCH_ENGINE_TEST}", "outcome": outcome or "not reported",
              "criterion": "after each of 3 weight pushes the torch engine's sampled-token log-probs equal the Megatron "
                           "learner's (fp32, TF32 off) within 1e-3"}
    if outcome not in (None, "passed"):
        engine["message"] = tests[TORCH_ENGINE_TEST].get("message", "")
    return gpu_tests, engine


def parse_junit(path: str | Path) -> dict:
    """{test name: {"outcome": passed|failed|error|skipped, "seconds", "message"}} from pytest's --junitxml."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return {}
    tests = {}
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = (node.get("message") or node.text or "")[:2000]
                break
        tests[case.get("name")] = {"outcome": outcome, "seconds": float(case.get("time") or 0), "message": message}
    return tests


def _print_part(name: str, r: dict) -> None:
    line = f"[gpu_check] {name}: {r['status']} in {r.get('seconds', 0):.0f} s"
    if r["status"] == "ok" and name == "throughput":
        line += (f": {r['tokens_per_s']:,.0f} tokens/s; MFU {r['mfu_vs_measured_peak']:.1%} of the measured bf16 matmul "
                 f"peak ({r['matmul_peak_flops_measured'] / 1e12:.3g} TFLOP/s)")
        if r.get("mfu_vs_nominal_peak") is not None:
            line += f", {r['mfu_vs_nominal_peak']:.1%} of {r['nominal_peak_source']} ({r['nominal_peak_flops'] / 1e12:.0f} TFLOP/s)"
    elif r["status"] == "ok" and name == "rl":
        line += (f": {r['steps']} steps, reward {r['reward_mean_per_step']}, logp_mismatch max "
                 f"{r['logp_mismatch_max']:.2e} (< {LOGP_MISMATCH_LIMIT:g})")
    elif name == "memory" and "cases" in r:
        for case, c in r["cases"].items():
            real = c.get("real_transient_bytes")
            preds = ", ".join(f"{k} {v / GIB:.2f} GiB (x{real and v / real or float('nan'):.3f})"
                              for k, v in c.get("predicted_transient_bytes", {}).items())
            line += f"\n    {case}: real {real / GIB if real else float('nan'):.2f} GiB; predicted {preds or 'none'}"
    if r["status"] != "ok":
        err = r.get("error") or r.get("reason") or ((r.get("log_tail") or "").strip().splitlines() or [""])[-1]
        line += f"\n    {err}"
    print(line, flush=True)


# ---- the parts (each in its own process) ---------------------------------------------------------------------


def _child(args: argparse.Namespace) -> int:
    fn = {"throughput": part_throughput, "rl": part_rl, "memory": part_memory, "memory-predict": part_memory_predict}
    try:
        record = {"status": "ok", **fn[args.part](args)}
        code = 0 if record["status"] == "ok" else 1
    except Exception as e:  # recorded for the JSON; the traceback goes to the part's log
        import traceback

        traceback.print_exc()
        record, code = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:2000]}, 1
    if args.part_out:
        _write_json(Path(args.part_out), record)
    return code


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def part_throughput(args: argparse.Namespace) -> dict:
    import torch

    from megatron_ext.distributed import init_distributed

    layout = init_distributed(tp=1, pp=1, seed=0)
    try:
        return _throughput(args, layout, args.mbs, args.micro_batches)
    except torch.OutOfMemoryError as e:
        if args.mbs == 1:
            raise
        print(f"[throughput] out of memory at micro-batch {args.mbs} ({e}); retrying at 1", flush=True)
        gc.collect()
        torch.cuda.empty_cache()
        return {**_throughput(args, layout, 1, args.micro_batches * args.mbs), "oom_at_micro_batch": args.mbs}


def _throughput(args: argparse.Namespace, layout, mbs: int, n_micro: int) -> dict:
    import torch
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_ext.models import build_model, padded_vocab_size, use_transformer_engine
    from megatron_ext.schedule import wrap_with_ddp
    from megatron_ext.training import train_flops_per_token, measure_matmul_flops
    from pipeline.model_presets import build_preset
    from pipeline.optim import OptimConfig, build_optimizer
    from pipeline.pretrain import _forward_step

    on_gpu = layout.device.type == "cuda"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    preset = "tiny" if args.smoke else "llama3.2-3b"
    hf_config = build_preset(preset)
    seq = args.seq
    t0 = time.time()
    model = build_model(hf_config, dtype=dtype, max_sequence_length=seq, calculate_per_token_loss=True)
    ddp = wrap_with_ddp(model, overlap_grad_reduce=on_gpu)
    optimizer = build_optimizer([ddp], OptimConfig(lr=1e-5, min_lr=1e-6, warmup_iters=0, weight_decay=0.1),
                                dtype=dtype, use_distributed_optimizer=False)
    build_s = time.time() - t0
    gen = torch.Generator(device=layout.device).manual_seed(0)
    batches = []
    for _ in range(n_micro):
        ids = torch.randint(0, hf_config.vocab_size, (mbs, seq + 1), device=layout.device, generator=gen)
        batches.append({"tokens": ids[:, :-1].contiguous(), "labels": ids[:, 1:].contiguous(),
                        "loss_mask": torch.ones(mbs, seq, device=layout.device),
                        "position_ids": torch.arange(seq, device=layout.device).expand(mbs, seq)})

    def step() -> float:
        ddp.zero_grad_buffer()
        optimizer.zero_grad()
        outputs = get_forward_backward_func()(
            forward_step_func=_forward_step, data_iterator=iter(batches), model=[ddp], num_microbatches=n_micro,
            seq_length=seq, micro_batch_size=mbs, forward_only=False)
        ok, _, _ = optimizer.step()
        if not ok:
            raise FloatingPointError("optimizer step skipped: non-finite gradients")
        total = sum(o["lm_loss"].double() for o in outputs)
        return float(total[0] / total[1])

    size = 8192 if on_gpu else 512
    peaks = [measure_matmul_flops(dtype, layout.device, size=size, min_seconds=1.0 if on_gpu else 0.2)]
    losses, times = [], []
    for i in range(2 + args.steps):
        _sync()
        t = time.perf_counter()
        losses.append(step())
        _sync()
        if i >= 2:
            times.append(time.perf_counter() - t)
    peaks.append(measure_matmul_flops(dtype, layout.device, size=size, min_seconds=1.0 if on_gpu else 0.2))
    tokens_per_step = n_micro * mbs * seq
    median_s = statistics.median(times)
    tokens_per_s = tokens_per_step / median_s
    flops_per_token = train_flops_per_token(hf_config, seq, padded_vocab_size(hf_config.vocab_size, 1))
    peak = max(peaks)
    nominal_source, nominal = _nominal_peak()
    achieved = flops_per_token * tokens_per_s
    if not all(math.isfinite(x) for x in losses):
        raise FloatingPointError(f"non-finite loss: {losses}")
    return {
        "preset": preset, "params": sum(p.numel() for p in model.parameters()), "dtype": str(dtype),
        "layer_spec": "transformer-engine" if use_transformer_engine() else "local (Megatron's; transformer-engine absent)",
        "seq_length": seq, "micro_batch_size": mbs, "num_microbatches": n_micro, "tokens_per_step": tokens_per_step,
        "build_s": build_s, "step_times_s": times, "median_step_s": median_s, "tokens_per_s": tokens_per_s,
        "losses": losses, "model_flops_per_token": flops_per_token, "model_flops_per_s": achieved,
        "matmul_peak_flops_measured": peak, "matmul_peak_method": f"bf16 {size}^3 matmuls (measure_matmul_flops)",
        "mfu_vs_measured_peak": achieved / peak,
        "nominal_peak_source": nominal_source, "nominal_peak_flops": nominal,
        "mfu_vs_nominal_peak": achieved / nominal if nominal else None,
        "mfu_vs_h200_nominal_989_tflops": achieved / H200_BF16_DENSE_FLOPS,
        "max_memory_allocated_gib": torch.cuda.max_memory_allocated() / GIB if on_gpu else None,
    }


def _nominal_peak() -> tuple[str | None, float | None]:
    import torch

    if not torch.cuda.is_available():
        return None, None
    name = torch.cuda.get_device_name(0)
    for key, flops in NOMINAL_BF16_DENSE_FLOPS:
        if key.lower() in name.lower():
            return f"{key} nominal dense bf16 ({name})", flops
    return None, None


def part_rl(args: argparse.Namespace) -> dict:
    import torch

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_models import addition_questions, save_warm_addition_model

    work = Path(tempfile.mkdtemp(prefix="gpu_check_rl_"))
    t0 = time.time()
    torch.set_num_threads(min(8, os.cpu_count() or 1))  # a few seconds of SFT of a tiny model, on the host
    model_dir = save_warm_addition_model(work / "model")
    questions = work / "train.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in addition_questions(48, seed=1)))
    warm_s = time.time() - t0
    steps = args.rl_steps
    cfg = dict(model_dir=str(model_dir), output_dir=str(work / "run"), train_questions=str(questions),
               test_questions=str(questions), eval_max_questions=8, template="none", engine="torch",
               questions_per_step=4, group_size=4, max_new_tokens=12, steps=steps, eval_every=steps,
               checkpoint_every=steps, micro_batch_size=4, minibatches_per_step=1, lr=3e-4, seed=3,
               log_generations=-1, bf16=False)
    config = work / "rl.json"
    config.write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               HF_HUB_OFFLINE="1", NVIDIA_TF32_OVERRIDE="0", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "4"))
    limit = (args.deadline - time.time() - 2) if args.deadline else 600
    print(f"[rl] warm policy made in {warm_s:.0f} s; python -m pipeline.rl --config {config}", flush=True)
    t0 = time.time()
    code, timed_out = run_in_group([sys.executable, "-m", "pipeline.rl", "--config", str(config)], limit, None, env=env)
    run_s = time.time() - t0
    record = {"config": cfg, "warm_model_s": warm_s, "run_s": run_s, "exit_code": code, "workdir": str(work),
              "learner_device": "cuda" if torch.cuda.is_available() else "cpu", "tf32": "off (NVIDIA_TF32_OVERRIDE=0)"}
    if timed_out or code != 0:
        return {**record, "status": "failed",
                "error": f"python -m pipeline.rl {'timed out' if timed_out else f'exited {code}'} (see this part's log)"}
    rows = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r.get("step", 0) >= 1 and "train/logp_mismatch" in r]
    keys = ("rollout/reward_mean", "rollout/accuracy", "rollout/response_len_mean", "train/loss", "train/entropy",
            "train/clip_frac", "train/logp_mismatch", "train/grad_norm", "time/generate_s", "time/reward_s",
            "time/train_s", "time/sync_s", "eval/accuracy")
    record["metrics"] = [{"step": r["step"], **{k: r[k] for k in keys if k in r}} for r in rows]
    mismatch = [r["train/logp_mismatch"] for r in train]
    record.update(steps=len(train), logp_mismatch_max=max(mismatch) if mismatch else None,
                  logp_mismatch_limit=LOGP_MISMATCH_LIMIT,
                  reward_mean_per_step=[round(r["rollout/reward_mean"], 3) for r in train],
                  done=(work / "run" / "DONE").exists())
    problems = []
    if len(train) != steps:
        problems.append(f"{len(train)} training steps logged, expected {steps}")
    if not mismatch or max(mismatch) >= LOGP_MISMATCH_LIMIT:
        problems.append(f"train/logp_mismatch {mismatch} not all < {LOGP_MISMATCH_LIMIT:g}")
    if not all(math.isfinite(r["train/loss"]) and math.isfinite(r["train/grad_norm"]) for r in train):
        problems.append("non-finite train/loss or train/grad_norm")
    if not record["done"]:
        problems.append("no DONE marker")
    if problems:
        record.update(status="failed", error="; ".join(problems))
        return record
    left = (args.deadline - time.time()) if args.deadline else 0
    if torch.cuda.is_available() and left > max(60.0, 1.5 * run_s):  # for information: the bf16 learner's gap
        print("[rl] the same run with a bf16 learner (bf16=true, the recipes' setting), for information", flush=True)
        bf16_cfg = {**cfg, "output_dir": str(work / "run_bf16"), "bf16": True}
        config.write_text(json.dumps(bf16_cfg))
        t0 = time.time()
        code, timed_out = run_in_group([sys.executable, "-m", "pipeline.rl", "--config", str(config)], left - 5, None,
                                       env=env)
        info = {"exit_code": code, "timed_out": timed_out, "run_s": time.time() - t0}
        metrics = work / "run_bf16" / "metrics.jsonl"
        if code == 0 and metrics.exists():
            rows = [json.loads(line) for line in metrics.read_text().splitlines()]
            info["logp_mismatch"] = [r["train/logp_mismatch"] for r in rows if "train/logp_mismatch" in r]
            info["reward_mean"] = [r["rollout/reward_mean"] for r in rows if "rollout/reward_mean" in r]
        record["bf16_learner_run_informational"] = info
    shutil.rmtree(work, ignore_errors=True)
    record["workdir"] += " (removed)"
    return record


def memory_cases(args: argparse.Namespace) -> dict:
    """{name: bench.memory_plan.Shape} of the memory recipe's stages at --memory-layers layers."""
    import copy

    import torch

    from bench.memory_plan import Shape, _model_config, load_recipe

    recipe = load_recipe("tiny_cpu" if args.smoke else MEMORY_RECIPE, [])
    full = _model_config(recipe)
    hf = full.__class__.from_dict({**full.to_dict(), "num_hidden_layers": args.memory_layers})
    dtype = torch.bfloat16 if recipe.gpu_memory_gib > 0 else torch.float32  # the plan's rule
    s1, s2 = recipe.stage1, recipe.stage2
    cases = {"stage1": Shape(hf, s1.schedule.micro_batch_size, s1.data.seq_length, dtype, s1.parallel.recompute, "lm")}
    for name, recompute, chunk in (("stage2_recompute_full_chunk4096", "full", 4096),
                                   ("stage2_recompute_none_unchunked", "none", 0)):
        rl = copy.deepcopy(s2)
        rl.recompute, rl.logprob_chunk_tokens = recompute, chunk
        cases[name] = Shape(hf, rl.micro_batch_size, rl.max_prompt_tokens + rl.max_new_tokens, dtype, recompute,
                            "policy", rl_config=rl)
    return cases


def _describe(shape) -> dict:
    out = {"layers": shape.hf_config.num_hidden_layers, "micro_batch": shape.micro_batch,
           "seq_length": shape.seq_length, "dtype": str(shape.dtype), "recompute": shape.recompute, "loss": shape.loss}
    if shape.rl_config is not None:
        out["logprob_chunk_tokens"] = shape.rl_config.logprob_chunk_tokens
    return out


def _predict(shape) -> dict:
    """The fake predictions of one case on this process's device: same depth, and the plan's 2/4-layer extrapolation."""
    from bench.memory_plan import _fake_step, measure_transient

    out, errors = {}, {}
    try:
        r = _fake_step(shape, shape.hf_config.num_hidden_layers)
        out["fake_same_depth"] = r["total_bytes"] - r["param_bytes"]
    except Exception as e:  # noqa: BLE001 - recorded per case
        errors["fake_same_depth"] = f"{type(e).__name__}: {e}"[:1000]
    try:
        out["plan_extrapolated"] = measure_transient(shape)["transient_bytes"]
    except Exception as e:  # noqa: BLE001
        errors["plan_extrapolated"] = f"{type(e).__name__}: {e}"[:1000]
    return {"predicted": out, "errors": errors}


def part_memory_predict(args: argparse.Namespace) -> dict:
    from megatron_ext.distributed import init_distributed

    init_distributed()
    return {"device": "cpu (CUDA hidden)", "cases": {name: _predict(shape) for name, shape in memory_cases(args).items()}}


def part_memory(args: argparse.Namespace) -> dict:
    import torch

    from bench.memory_plan import _step
    from megatron_ext.distributed import init_distributed

    log_dir = Path(args.part_out).parent if args.part_out else Path(tempfile.mkdtemp())
    predict_out, predict_log = log_dir / "memory-predict.json", log_dir / "memory-predict.log"
    predict_out.unlink(missing_ok=True)
    cpu_env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    with open(predict_log, "w") as f:  # the planning machine's view, alongside the GPU work
        cpu_proc = subprocess.Popen([sys.executable, "-m", "bench.gpu_check", "--part", "memory-predict", "--part-out",
                                     str(predict_out), *_size_args(args)], cwd=REPO, env=cpu_env, stdout=f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
    layout = init_distributed()
    on_gpu = layout.device.type == "cuda"
    cases = {}
    for name, shape in memory_cases(args).items():
        case = {"shape": _describe(shape), "predicted_transient_bytes": {}, "errors": {}}
        pred = _predict(shape)
        where = "cuda" if on_gpu else "cpu"
        case["predicted_transient_bytes"].update({f"{k}_{where}": v for k, v in pred["predicted"].items()})
        case["errors"].update({f"{k}_{where}": v for k, v in pred["errors"].items()})
        try:
            real = _step(shape, shape.hf_config.num_hidden_layers, fake=False)
            case["real_peak_bytes"] = real["total_bytes"]
            case["real_param_bytes"] = real["param_bytes"]
            case["real_transient_bytes"] = real["total_bytes"] - real["param_bytes"]
            if "allocated_before_bytes" in real:
                case["real_peak_minus_allocated_before_bytes"] = real["total_bytes"] - real["allocated_before_bytes"]
            case["real_method"] = ("torch.cuda.max_memory_allocated() over the second step after reset_peak_memory_stats(), "
                                   "minus parameter bytes" if on_gpu else "MemTracker on real CPU tensors (smoke)")
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: recorded, the other cases still run
            case["errors"]["real"] = f"{type(e).__name__}: {e}"[:1000]
        gc.collect()
        if on_gpu:
            torch.cuda.empty_cache()
        cases[name] = case
        print(f"[memory] {name}: {json.dumps(case)}", flush=True)
    try:
        cpu_proc.wait(timeout=max((args.deadline - time.time() - 2) if args.deadline else 300, 5))
    except subprocess.TimeoutExpired:
        os.killpg(cpu_proc.pid, signal.SIGKILL)
        cpu_proc.wait()
    cpu = json.loads(predict_out.read_text()) if predict_out.exists() else {
        "status": "failed", "error": "no result", "log_tail": _tail(predict_log, 3000)}
    for name, case in cases.items():
        c = cpu.get("cases", {}).get(name, {})
        case["predicted_transient_bytes"].update({f"{k}_cpu_planner": v for k, v in c.get("predicted", {}).items()})
        case["errors"].update({f"{k}_cpu_planner": v for k, v in c.get("errors", {}).items()})
        real = case.get("real_transient_bytes")
        if real:
            case["ratio_predicted_over_real"] = {k: v / real for k, v in case["predicted_transient_bytes"].items()}
        if not case["errors"]:
            del case["errors"]
    record = {"recipe": "tiny_cpu" if args.smoke else MEMORY_RECIPE, "cases": cases,
              "planner_subprocess": {k: v for k, v in cpu.items() if k != "cases"},
              "note": "transient = peak minus parameter bytes (activations, logits and loss temporaries, activation "
                      "gradients; parameter gradients freed as made, as Megatron's DDP buffer takes them)"}
    missing = [n for n, c in cases.items() if "real_transient_bytes" not in c or not c["predicted_transient_bytes"]]
    if missing:
        record.update(status="failed", error=f"no real measurement or no prediction for {missing}")
    return record


if __name__ == "__main__":
    sys.exit(main())
