"""Continued math pretraining of Llama on Megatron-core, then Dr. GRPO (arXiv 2503.20783), as one NeMo-Run
experiment: data -> stage one -> eval -> stage two -> eval -> report.

    nemo-run recipes/llama3b_math_then_drgrpo.py                     # tiny CPU pipeline, local executor
    nemo-run recipes/llama3b_math_then_drgrpo.py recipe=smollm2_cpu  # a real model (SmolLM2-135M) on a laptop
    nemo-run recipes/llama3b_math_then_drgrpo.py recipe=llama32_3b_a100 \
        recipe.stage1.model.hf_dir=/models/Llama-3.2-3B recipe.data.tokenizer_dir=/models/Llama-3.2-3B \
        recipe.stage2.train_questions=math:/data/MATH?levels=3-5 recipe.eval.suite=/data/evaluation_suite \
        run.executor=slurm run.executor.account=ACCOUNT run.executor.partition=PARTITION \
        run.executor.container_image=nvcr.io/nvidia/pytorch:25.04-py3 'run.executor.container_mounts=["/data:/data"]' \
        run.executor.cpus_per_task=16                                # CPUs per rank (see `slurm` below)
    nemo-run recipes/llama3b_math_then_drgrpo.py recipe=qwen25_math_7b_oat_zero \
        recipe.stage2.model_dir=/models/Qwen2.5-Math-7B recipe.stage2.train_questions=math:/data/MATH \
        recipe.eval.suite=/data/evaluation_suite run.executor=slurm ...   # the paper's Oat-Zero-7B: RL only
    nemo-run recipes/llama3b_math_then_drgrpo.py recipe.skip_stage1=true recipe.stage2.model_dir=/models/ANY_HF_MODEL

Any field can be overridden (`recipe.stage2.lr=1e-6`, `recipe.output_dir=...`; executor fields as
`run.executor.FIELD=...`, e.g. `run.executor.ntasks_per_node=2 run.executor.tunnel.job_dir=...`); `--dryrun`
prints the tasks.
Exits non-zero if a task fails; later tasks are then not run.
"""


import dataclasses
import sys
from pathlib import Path

import nemo_run as run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recipes.experiment import PipelineFailed, run_pipeline  # noqa: E402
from recipes.pipeline_recipe import PipelineRecipe, default_ranks, llama32_3b_a100 as _llama32_3b_a100  # noqa: E402
from recipes.pipeline_recipe import llama32_3b_a100_oat_zero_data as _llama32_3b_a100_oat_zero_data  # noqa: E402
from recipes.pipeline_recipe import qwen25_math_1p5b as _qwen25_math_1p5b  # noqa: E402
from recipes.pipeline_recipe import qwen25_math_7b_oat_zero as _qwen25_math_7b_oat_zero  # noqa: E402
from recipes.pipeline_recipe import smollm2_cpu as _smollm2_cpu  # noqa: E402
from recipes.pipeline_recipe import tiny_cpu as _tiny_cpu  # noqa: E402


def _as_config(value):
    """A dataclass instance as nested run.Configs of all its fields, so that CLI overrides such as
    `recipe.stage2.lr=...` edit the recipe's values instead of replacing them with the classes' defaults."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return run.Config(type(value), **{f.name: _as_config(getattr(value, f.name))
                                          for f in dataclasses.fields(value) if f.init})
    return value


@run.cli.factory
def tiny_cpu() -> run.Config[PipelineRecipe]:
    return _as_config(_tiny_cpu())


@run.cli.factory
def smollm2_cpu() -> run.Config[PipelineRecipe]:
    return _as_config(_smollm2_cpu())


@run.cli.factory
def llama32_3b_a100() -> run.Config[PipelineRecipe]:
    return _as_config(_llama32_3b_a100())


@run.cli.factory
def llama32_3b_a100_oat_zero_data() -> run.Config[PipelineRecipe]:
    return _as_config(_llama32_3b_a100_oat_zero_data())


@run.cli.factory
def qwen25_math_7b_oat_zero() -> run.Config[PipelineRecipe]:
    return _as_config(_qwen25_math_7b_oat_zero())


@run.cli.factory
def qwen25_math_1p5b() -> run.Config[PipelineRecipe]:
    return _as_config(_qwen25_math_1p5b())


@run.cli.factory
@run.autoconvert
def local(ranks: int = 0) -> run.LocalExecutor:
    """This machine: torchrun with `ranks` processes (default: GPUs, or 2 on a CPU)."""
    return run.LocalExecutor(ntasks_per_node=ranks or default_ranks(), launcher="torchrun")


# torchrun forwards these to its ranks and waits for them (up to TORCH_ELASTIC_SHUTDOWN_TIMEOUT) instead of dying of
# USR1; SIGTERM, SIGINT, SIGHUP and SIGQUIT are its defaults. Its --signals-to-handle reads PET_SIGNALS_TO_HANDLE (it
# overwrites TORCHELASTIC_SIGNALS_TO_HANDLE with the option's value), and NeMo-Run's torchrun command has no room for
# the option.
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"


@run.cli.factory
def slurm(account: str = "", partition: str = "", nodes: int = 1, gpus_per_node: int = 8, ranks_per_node: int = 0,
          time: str = "04:00:00", container_image: str = "", container_mounts: list[str] = [], job_dir: str = "",
          host: str = "", user: str = "", mem: str = "", env_vars: dict = {},
          cpus_per_task: int = 0, signal_before_limit_s: int = 300) -> run.Config[run.SlurmExecutor]:
    """A SLURM cluster (8-GPU A100 nodes by default): submitted locally (LocalTunnel) or over SSH when `host` is
    set. `ranks_per_node` defaults to `gpus_per_node` (set it, with gpus_per_node=0, on CPU-only nodes).
    `cpus_per_task` (`run.executor.cpus_per_task=16`) is CPUs per training rank and per one-process task: torchrun
    runs all ranks of a node in one SLURM task, which gets ranks_per_node times it. 0 takes the cluster's default,
    often one CPU per task: on clusters that confine tasks to their CPUs set it (e.g. 16 on a 128-core 8-GPU node).

    Time limits and preemption, as slurm/*.sh: SLURM sends USR1 `signal_before_limit_s` seconds before a training
    task's time limit (`--signal=USR1@300`, to every process of the job step: NeMo-Run's batch script runs srun in
    the foreground, so it cannot forward a `B:` signal as slurm/rl.sh does); torchrun passes it on to the ranks
    (PET_SIGNALS_TO_HANDLE) and waits for them, they save a checkpoint and stop, and rank 0 requeues the job
    (recipes/tasks.py), which resumes from that checkpoint (0: no signal). Every job asks for `--requeue`: preemption
    and `scontrol requeue` requeue it, SLURM sends TERM, the ranks checkpoint, and the job resumes."""
    if host:
        tunnel = run.Config(run.SSHTunnel, host=host, user=user, job_dir=job_dir)
    else:
        tunnel = run.Config(run.LocalTunnel, job_dir=job_dir)
    env = dict(env_vars)
    if signal_before_limit_s:
        env = {"PET_SIGNALS_TO_HANDLE": TORCHRUN_SIGNALS,
               "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(signal_before_limit_s), "REQUEUE_ON_USR1": "1", **env}
    kwargs = dict(partition=partition or None, nodes=nodes,
                  ntasks_per_node=ranks_per_node or gpus_per_node or 1, gpus_per_node=gpus_per_node or None,
                  time=time, tunnel=tunnel, packager=run.Config(run.Packager),
                  container_image=container_image or None, container_mounts=list(container_mounts),
                  env_vars=env, mem=mem or None, cpus_per_task=cpus_per_task or None,
                  signal=f"USR1@{signal_before_limit_s}" if signal_before_limit_s else None,
                  additional_parameters={"requeue": True})
    return run.Config(run.SlurmExecutor, account=account, **{k: v for k, v in kwargs.items() if v is not None})


_completed = False


def _defaults() -> run.Partial:
    # Without it NeMo-Run starts `recipe.FIELD=...` overrides from PipelineRecipe(), not from the tiny_cpu default
    # (e.g. 3000-token generations instead of 48).
    return run.Partial(llama3b_math_then_drgrpo, recipe=tiny_cpu())


@run.cli.entrypoint(type="experiment", help=__doc__, default_factory=_defaults)
def llama3b_math_then_drgrpo(ctx: run.cli.RunContext, recipe: PipelineRecipe = _tiny_cpu()):
    global _completed
    executor = ctx.executor or run.LocalExecutor(ntasks_per_node=default_ranks(), launcher="torchrun")
    if isinstance(executor, run.SlurmExecutor):
        recipe.ranks_per_node = executor.ntasks_per_node or recipe.ranks_per_node
        recipe.nodes = executor.nodes
    else:
        recipe.ranks_per_node = executor.ntasks_per_node
    try:
        states = run_pipeline(recipe, executor, dryrun=ctx.dryrun)
    except (PipelineFailed, ValueError) as e:
        print(f"\nFAILED: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    _completed = True
    if states:
        out = Path(recipe.output_dir).resolve()
        stages = ["stage2"] if recipe.skip_stage1 else ["stage1", "stage2"]

        def each(*parts: str) -> str:
            return ", ".join(str(out.joinpath(stage, *parts)) for stage in stages)

        print(f"\nPipeline complete ({', '.join(states)}).\n"
              f"  report:      {out / 'report.md'}\n"
              f"  metrics:     {each('metrics.jsonl')} (TensorBoard: tensorboard --logdir {out})\n"
              f"  evaluation:  {out / 'eval' / 'before' / 'results.md'}, {out / 'eval' / 'after' / 'results.md'}\n"
              f"  checkpoints: {each('checkpoints')}\n"
              f"  models:      {each('hf')}", flush=True)


if __name__ == "__main__":
    # At a terminal NeMo-Run shows the resolved recipe and asks before launching (`--yes` skips it); without one
    # (scripts, CI, `install && nemo-run ...`) its prompt would abort the run with an empty error
    run.cli.main(llama3b_math_then_drgrpo, cmd_defaults={"skip_confirmation": not sys.stdin.isatty()})
    # NeMo-Run reports bad arguments and exceptions but exits 0; the entrypoint marks a completed run
    if not _completed and not {"-h", "--help"} & set(sys.argv):
        sys.exit(1)
