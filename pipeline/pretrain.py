"""Stage one: continued pretraining of a Llama on tokenized math corpora with Megatron-core (TP / PP / DP).

    torchrun --nproc_per_node 2 -m pipeline.pretrain --config pretrain.json [section.field=value ...]
    python -m pipeline.pretrain model.tokenizer_dir=DATA/tokenizer data.blend='["DATA/pretrain_text_document"]'
    python -m pipeline.pretrain --print-config            # every field with its default

Fields are those of pipeline.pretrain_config.PretrainConfig, each value read by its field's type (cli.config). Writes
OUT/checkpoints/iter_*, OUT/metrics.jsonl, OUT/tensorboard/ and, at the end, OUT/hf/ (a Hugging Face directory
with the tokenizer, stage two's input) and OUT/DONE. Resumes from the newest complete checkpoint in
OUT/checkpoints (or --resume-from); a finished run exits 0 at once, so SLURM requeues are safe. SIGTERM /
SIGUSR1 (SLURM's --signal) or schedule.exit_duration_min save a checkpoint and exit 0.
From Python (NeMo-Run `run.Partial`): `run_pretrain(PretrainConfig(...)) -> Path`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from cli.errors import add_debug_flag, run_command
from megatron_ext.checkpoint import RUN_DONE_FILE
from pipeline.pretrain_config import PretrainConfig, ResolvedModel, flag, resume_incompatibility


def run_pretrain(cfg: PretrainConfig) -> Path:
    """Train stage one; returns OUT/hf, or the checkpoint saved when a signal / exit_duration stopped it early."""
    started = time.time()
    out = Path(cfg.output_dir)
    if _finished(out, cfg.schedule.train_iters):  # before validation: a requeued finished job always exits 0
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"[pretrain] {out} already finished ({(out / RUN_DONE_FILE).read_text().strip()} steps): nothing to do")
        return out / "hf"
    resolved = cfg.validate(int(os.environ.get("WORLD_SIZE", "1")))
    from megatron_ext.distributed import init_distributed, set_cpu_threads

    set_cpu_threads(cfg.parallel.threads_per_rank)

    layout = init_distributed(tp=cfg.parallel.tp, pp=cfg.parallel.pp, seed=cfg.seed)
    trainer = Trainer(cfg, resolved, layout, deadline=started + cfg.schedule.exit_duration_min * 60
                      if cfg.schedule.exit_duration_min else None)
    try:
        return trainer.train()
    finally:
        trainer.close()


def _finished(out: Path, train_iters: int) -> bool:
    done = out / RUN_DONE_FILE
    if not (done.is_file() and (out / "hf" / "config.json").is_file()):
        return False
    try:
        return int(done.read_text().split()[0]) >= train_iters
    except (ValueError, IndexError):
        return False


class Trainer:
    """One rank's share of the run: model stage, optimizer, data, checkpoints, metrics."""

    def __init__(self, cfg: PretrainConfig, resolved: ResolvedModel, layout, deadline: float | None):
        from megatron_ext.models import build_model, padded_vocab_size, recompute_overrides
        from megatron_ext.schedule import wrap_with_ddp
        from megatron_ext.training import train_flops_per_token
        from pipeline.metrics import MetricsWriter
        from pipeline.optim import build_optimizer, build_scheduler
        from pipeline.signals import ExitSignalHandler

        self.cfg, self.resolved, self.layout, self.deadline = cfg, resolved, layout, deadline
        self.out = Path(cfg.output_dir)
        self.ckpt_root = self.out / "checkpoints"
        on_gpu = torch.cuda.is_available()
        auto_dtype = torch.bfloat16 if on_gpu else torch.float32
        self.dtype = auto_dtype if cfg.parallel.dtype == "auto" else getattr(torch, cfg.parallel.dtype)
        self.device = layout.device
        hf_config = resolved.hf_config
        self.exit_handler = ExitSignalHandler()
        self._log(f"model: {hf_config.num_hidden_layers} layers, hidden {hf_config.hidden_size}, "
                  f"vocab {hf_config.vocab_size}; layout tp={layout.tp} pp={layout.pp} dp={layout.dp}; "
                  f"{self.dtype}; {torch.get_num_threads()} threads/rank")

        model = build_model(hf_config, tp=layout.tp, pp=layout.pp, dtype=self.dtype,
                            max_sequence_length=cfg.data.seq_length, calculate_per_token_loss=True,
                            **recompute_overrides(cfg.parallel.recompute))
        resume = self._resume_path()
        if resume is None:
            self._init_weights(model)
        dist_opt = self.distributed_optimizer = flag(cfg.parallel.use_distributed_optimizer,
                                                     layout.device.type != "cpu" and layout.dp > 1)
        self.model = wrap_with_ddp(model, use_distributed_optimizer=dist_opt,
                                   overlap_grad_reduce=flag(cfg.parallel.overlap_grad_reduce, on_gpu))
        self.optimizer = build_optimizer([self.model], cfg.optim, dtype=self.dtype, use_distributed_optimizer=dist_opt)
        self.scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.schedule.train_iters)
        self.iteration, self.consumed = 0, 0
        if resume is not None:
            self._load(resume)
        self.train_ds, self.valid_ds = self._datasets()
        self.evaluating = self.valid_ds is not None and cfg.schedule.eval_interval > 0 and cfg.schedule.eval_iters > 0
        self.metrics = MetricsWriter(self.out, enabled=layout.is_main, resume_step=self.iteration + 1 if self.iteration else 0,
                                     wandb=cfg.logging.wandb, run_config=cfg.to_dict())
        self.flops_per_token = train_flops_per_token(hf_config, cfg.data.seq_length,
                                                     padded_vocab_size(hf_config.vocab_size, layout.tp))
        self.peak_flops = self._peak_flops()

    # ---- setup -----------------------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        if self.layout.is_main:
            print(f"[pretrain] {message}", flush=True)

    def _resume_path(self) -> Path | None:
        from megatron_ext.checkpoint import find_latest_checkpoint
        from pipeline.pretrain_config import explicit_checkpoint

        if self.cfg.checkpoint.resume_from:
            return explicit_checkpoint(self.cfg.checkpoint.resume_from)
        latest = find_latest_checkpoint(self.ckpt_root, resume_option="checkpoint.resume_from")
        newer = [p.name for p in sorted(self.ckpt_root.glob("iter_*")) if latest is None or p.name > latest.name]
        if newer:
            self._log(f"ignoring unfinished checkpoint write(s) {newer}")
        return latest

    def _init_weights(self, model) -> None:
        """HF weights, or a random init made once in HF space (seeded), so every TP/PP layout starts the same."""
        from megatron_ext.weights import load_hf_weights

        if self.cfg.model.hf_dir:
            self._log(f"loading {self.cfg.model.hf_dir}")
            load_hf_weights(model, self.cfg.model.hf_dir)
            return
        init_dir = self.out / "init_hf"
        if self.layout.is_main:
            from transformers import AutoModelForCausalLM

            torch.manual_seed(self.cfg.seed)
            hf = AutoModelForCausalLM.from_config(self.resolved.hf_config).to(self.dtype)  # the config's family
            tmp = init_dir.with_name("init_hf.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            hf.save_pretrained(tmp)
            shutil.rmtree(init_dir, ignore_errors=True)
            tmp.rename(init_dir)
            del hf
        dist.barrier()
        load_hf_weights(model, init_dir)
        dist.barrier()
        if self.layout.is_main:
            shutil.rmtree(init_dir, ignore_errors=True)
        torch.manual_seed(self.cfg.seed)

    def _datasets(self):
        from megatron_ext.training import DatasetTokenizer, build_gpt_datasets, parse_blend

        c, s = self.cfg.data, self.cfg.schedule
        evaluating = s.eval_interval > 0 and s.eval_iters > 0
        tokenizer = DatasetTokenizer(self.resolved.hf_config.vocab_size, self.resolved.eod_token_id,
                                     self.resolved.tokenizer_dir)
        return build_gpt_datasets(
            blend=parse_blend(c.blend, "data.blend"),
            valid_blend=parse_blend(c.valid_blend, "data.valid_blend") if c.valid_blend else None,
            split=c.split, seq_length=c.seq_length, seed=self.cfg.seed, tokenizer=tokenizer,
            train_samples=s.train_iters * s.global_batch_size,
            valid_samples=s.eval_iters * s.global_batch_size if evaluating else 0,
            eod_mask_loss=c.eod_mask_loss, reset_attention_mask=c.reset_attention_mask,
            cache_dir=c.cache_dir or self.out / "data_cache",
        )

    def _peak_flops(self) -> float:
        from megatron_ext.training import measure_matmul_flops

        per_rank = self.cfg.logging.peak_flops_per_rank
        if per_rank <= 0:
            dist.barrier()  # measure with every rank busy, as during training
            per_rank = measure_matmul_flops(self.dtype, self.device, min_seconds=0.3)
        total = torch.tensor([per_rank], dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        self._log(f"peak matmul throughput {total.item() / 1e9:.1f} GFLOP/s over {self.layout.world_size} rank(s) "
                  f"(MFU denominator); model {self.flops_per_token / 1e6:.1f} MFLOP per trained token")
        return total.item()

    # ---- steps -----------------------------------------------------------------------------------------------

    def _run_batch(self, dataset, first_sample: int, forward_only: bool) -> float:
        """Forward (+ backward) of one global batch; returns its per-token loss on every rank."""
        from megatron.core import parallel_state as ps
        from megatron.core.pipeline_parallel import get_forward_backward_func

        from megatron_ext.training import microbatches

        s, layout = self.cfg.schedule, self.layout
        n_micro = s.global_batch_size // (s.micro_batch_size * layout.dp)
        batches = microbatches(dataset, first_sample, micro_batch_size=s.micro_batch_size,
                               num_microbatches=n_micro, dp=layout.dp, dp_rank=layout.dp_rank)
        batches = [{k: v.to(self.device, non_blocking=True) for k, v in b.items()} for b in batches]
        outputs = get_forward_backward_func()(
            forward_step_func=_forward_step, data_iterator=iter(batches), model=[self.model],
            num_microbatches=n_micro, seq_length=self.cfg.data.seq_length, micro_batch_size=s.micro_batch_size,
            forward_only=forward_only)
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        if ps.is_pipeline_last_stage() and layout.tp_rank == 0:
            for o in outputs:
                totals += o["lm_loss"].to(torch.float64)
        dist.all_reduce(totals)
        return (totals[0] / totals[1].clamp(min=1)).item()

    def train_step(self) -> dict:
        from pipeline.optim import current_lr

        self.model.train()
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        loss = self._run_batch(self.train_ds, self.consumed, forward_only=False)
        self.scheduler.step(1)  # this step runs at lr(iteration + 1)
        ok, grad_norm, _ = self.optimizer.step()
        if not ok:
            raise FloatingPointError(f"optimizer step {self.iteration + 1} skipped: non-finite gradients")
        self.iteration += 1
        self.consumed += self.cfg.schedule.global_batch_size
        return {"train/loss": loss, "train/lr": current_lr(self.optimizer),
                "train/grad_norm": float(grad_norm) if grad_norm is not None else float("nan")}

    @torch.no_grad()
    def evaluate(self) -> dict:
        self.model.eval()
        s = self.cfg.schedule
        losses = [self._run_batch(self.valid_ds, i * s.global_batch_size, forward_only=True) for i in range(s.eval_iters)]
        self.model.train()
        return {"val/loss": sum(losses) / len(losses)}

    # ---- checkpoints -----------------------------------------------------------------------------------------

    def _sharded_state_dict(self, is_loading: bool, with_rng: bool, fmt: str) -> dict:
        from megatron_ext.models import unwrap_model
        from megatron_ext.training import rng_sharded_object
        from pipeline.optim import optimizer_sharded_state_dict

        # The bare GPTModel's keys (no DDP "module." prefix): the layout megatron_ext.convert reads and writes.
        model_sd = unwrap_model(self.model).sharded_state_dict()
        sd = {"model": model_sd,
              "optimizer": optimizer_sharded_state_dict(self.optimizer, model_sd, is_loading=is_loading, fmt=fmt)}
        if with_rng:
            sd["rng_state"] = rng_sharded_object(self.layout)
        return sd

    def save(self) -> Path:
        from megatron_ext.checkpoint import save_checkpoint
        from pipeline.optim import checkpoint_format

        layout = self.layout
        fmt = checkpoint_format(self.optimizer, self.cfg.checkpoint.reshardable_optimizer)
        trainer_state = {"consumed_train_samples": self.consumed, "scheduler": self.scheduler.state_dict(),
                         "layout": {"tp": layout.tp, "pp": layout.pp, "dp": layout.dp}, "optimizer_format": fmt,
                         "config": self.cfg.to_dict()}
        path = save_checkpoint(self.ckpt_root, self.iteration, self._sharded_state_dict(False, True, fmt),
                               hf_config=self.resolved.hf_config, tokenizer_dir=self.resolved.tokenizer_dir,
                               trainer_state=trainer_state, keep_last=self.cfg.checkpoint.keep_last or None)
        self._log(f"saved {path}")
        return path

    @torch.no_grad()  # the distributed optimizer copies into views of leaf parameters
    def _load(self, path: Path) -> None:
        from megatron.core.dist_checkpointing.core import CheckpointingException
        from torch.distributed.checkpoint.api import CheckpointException  # a BaseException, not an Exception

        from megatron_ext.checkpoint import load_checkpoint
        from megatron_ext.models import unwrap_model
        from megatron_ext.training import set_rng_state
        from pipeline.optim import finish_loading

        saved = json.loads((path / "trainer_state.json").read_text())
        same_layout = saved.get("layout") == {"tp": self.layout.tp, "pp": self.layout.pp, "dp": self.layout.dp}
        problem = resume_incompatibility(saved, self.layout.tp, self.layout.pp, self.distributed_optimizer)
        if problem:
            raise ValueError(f"checkpoint {path}: {problem}")
        try:
            state, trainer_state = load_checkpoint(path, self._sharded_state_dict(True, same_layout,
                                                                           saved.get("optimizer_format", "model_space")))
        except (CheckpointingException, CheckpointException, RuntimeError, OSError, EOFError, KeyError) as e:
            raise ValueError(f"checkpoint {path} could not be read ({type(e).__name__}: {e}); it is corrupt or "
                             "was written by another model: delete it or resume from an earlier iter_*") from e
        missing, unexpected = unwrap_model(self.model).load_state_dict(state["model"], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        assert not missing and not unexpected, (missing, unexpected)
        self.optimizer.load_state_dict(state["optimizer"])
        finish_loading(self.optimizer)
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        if same_layout:
            set_rng_state(state["rng_state"])
        self.iteration = int(trainer_state["iteration"])
        self.consumed = int(trainer_state["consumed_train_samples"])
        self._log(f"resumed from {path} at step {self.iteration}" +
                  ("" if same_layout else f" (resharded from {saved.get('layout')}; RNG state reseeded)"))

    # ---- the loop --------------------------------------------------------------------------------------------

    def train(self) -> Path:
        """The loop: returns OUT/hf when done, or the checkpoint saved when asked to stop early."""
        from tqdm import tqdm

        from megatron_ext.weights import save_hf_checkpoint

        s = self.cfg.schedule
        if self.iteration == 0 and self.evaluating:
            self.metrics.log(0, self.evaluate())
        bar = tqdm(total=s.train_iters, initial=self.iteration, desc="pretrain", dynamic_ncols=True,
                   disable=not (self.layout.is_main and self.cfg.logging.progress_bar))
        while self.iteration < s.train_iters:
            saved, stop = self.iterate(bar)
            if stop and self.iteration < s.train_iters:
                bar.close()
                self._log(f"exit requested (signal or exit_duration_min): checkpoint {saved.name} saved, exiting")
                return saved
        bar.close()
        save_hf_checkpoint(self.model, self.out / "hf", tokenizer_dir=self.resolved.tokenizer_dir,
                           extra_eos_ids=(self.resolved.eod_token_id,))
        if self.layout.is_main:
            (self.out / RUN_DONE_FILE).write_text(f"{self.iteration}\n")
        dist.barrier()
        self._log(f"done: {self.iteration} steps; metrics {self.out / 'metrics.jsonl'}; model {self.out / 'hf'}")
        return self.out / "hf"

    def iterate(self, bar) -> tuple[Path | None, bool]:
        """One pass of the loop body: step, metrics, validation, progress, exit check, checkpoint.
        Returns (checkpoint saved or None, whether to stop)."""
        cfg, s = self.cfg, self.cfg.schedule
        tokens_per_step = s.global_batch_size * cfg.data.seq_length
        t0 = time.perf_counter()
        record = self.train_step()
        elapsed = time.perf_counter() - t0
        record["train/tokens_per_s"] = tokens_per_step / elapsed
        record["train/mfu"] = self.flops_per_token * tokens_per_step / elapsed / self.peak_flops
        record["train/step_time_s"] = elapsed
        if self.evaluating and (self.iteration % s.eval_interval == 0 or self.iteration == s.train_iters):
            record.update(self.evaluate())
        if self.iteration % cfg.logging.log_interval == 0 or "val/loss" in record:
            self.metrics.log(self.iteration, record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['train/loss']:.3f}", lr=f"{record['train/lr']:.2e}",
                        tok_s=f"{record['train/tokens_per_s']:.0f}", refresh=False)
        stop = self.exit_handler.should_exit(also=self.deadline is not None and time.time() > self.deadline)
        interval = cfg.checkpoint.interval
        saved = None
        if (interval and self.iteration % interval == 0) or self.iteration == s.train_iters or stop:
            saved = self.save()
        return saved, stop

    def close(self) -> None:
        self.metrics.close()
        self.exit_handler.restore()


def _forward_step(data_iterator, model):
    mb = next(data_iterator)
    output = model(mb["tokens"], mb["position_ids"], mb.get("attention_mask"), labels=mb["labels"])
    return output, functools.partial(_loss_func, mb["loss_mask"])


def _loss_func(loss_mask_BS: torch.Tensor, losses_BS: torch.Tensor):
    """Megatron's per-token loss: the sum over unmasked tokens and their count; the schedules and
    finalize_model_grads divide by the count over all micro-batches and DP ranks (calculate_per_token_loss)."""
    mask = loss_mask_BS.reshape(-1).float()
    loss_sum = (losses_BS.reshape(-1).float() * mask).sum()
    count = mask.sum()
    return loss_sum, count.to(torch.int), {"lm_loss": torch.stack([loss_sum.detach(), count])}


def parse_args(argv: list[str]) -> tuple[PretrainConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m pipeline.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="JSON or YAML file of PretrainConfig fields (nested sections)")
    p.add_argument("--output-dir", help="same as output_dir=...")
    p.add_argument("--resume-from", help="same as checkpoint.resume_from=... (an iter_* directory or a root)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    add_debug_flag(p)
    p.add_argument("overrides", nargs="*", help="section.field=value, e.g. schedule.train_iters=100")
    args = p.parse_args(argv)
    cfg = PretrainConfig.from_file(args.config) if args.config else PretrainConfig()
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    if args.resume_from:
        overrides.append(f"checkpoint.resume_from={args.resume_from}")
    return cfg.with_overrides(overrides), args


def main(argv: list[str] | None = None) -> int:
    if not torch.cuda.is_available():  # the CPU fallbacks Megatron announces once per module are expected here
        warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex) (and Apex )?(is|are) not installed.*")
    def body():
        cfg, args = parse_args(sys.argv[1:] if argv is None else argv)
        if args.print_config:
            print(cfg.to_json())
            return 0
        run_pretrain(cfg)

    try:
        return run_command(body, argv)
    finally:
        from megatron_ext.distributed import destroy_distributed

        if dist.is_initialized():
            destroy_distributed()


if __name__ == "__main__":
    sys.exit(main())
