"""Executors and the NeMo-Run experiment of a PipelineRecipe, with failures that stop the pipeline.

NeMo-Run alone neither stops dependents of a failed task under LocalExecutor nor reports failure in its exit
code; `run_pipeline` does both (SLURM cancels afterok dependents itself with kill_invalid_depend). While tasks run,
their progress lines and log paths are shown on the console (recipes/console.py), and a failed task's last lines.
"""

from __future__ import annotations

from pathlib import Path

import nemo_run as run
from torchx.specs import AppState

from recipes import tasks
from recipes.console import TaskLogFollower
from recipes.pipeline_recipe import PipelineRecipe, eval_config, resolve


class PipelineFailed(RuntimeError):
    pass


class StopOnFailureExperiment(run.Experiment):
    """Runs dependency levels one after another (LocalExecutor) and stops at the first failed task."""

    _stopping = False
    progress_every_s = 30.0

    def _show(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def _wait_for_jobs(self, jobs):
        follower = TaskLogFollower(self._show, progress_every_s=self.progress_every_s)
        for job in jobs:
            if job.launched:
                follower.follow(job.id, *_log_location(job.executor))
        try:
            super()._wait_for_jobs(jobs)
        finally:
            follower.stop()
        failed = [job.id for job in jobs if job.launched and job.state != AppState.SUCCEEDED]
        for name in failed:
            last = follower.tail(name)
            if last:
                self._show(f"{name} | failed; the last lines of {follower.log_files(name)[-1]}:")
                for line in last:
                    self._show(f"{name} |   {line}")
        if failed and not self._stopping:
            self._stopping = True
            raise PipelineFailed(f"task(s) {failed} failed; their dependents were not started")


def _log_location(executor) -> tuple[str, bool]:
    """(directory of the task's log files, whether it is on another machine: a SLURM cluster reached over SSH)."""
    if isinstance(executor, run.SlurmExecutor) and isinstance(executor.tunnel, run.SSHTunnel):
        return f"{executor.tunnel.user}@{executor.tunnel.host}:{executor.tunnel.job_dir}", True
    return executor.job_dir, False


def _single(executor):
    """The executor for a one-process task (data prep, evaluation, report)."""
    e = executor.clone()
    e.launcher = None
    e.ntasks_per_node = 1
    if isinstance(e, run.SlurmExecutor):
        _set_cpus_per_task(e, e.cpus_per_task)
        e.signal = None  # the pre-timeout signal is for training tasks, which checkpoint on it; it would kill this one
        e.nodes = 1
        e.torchrun_nproc_per_node = None
        if e.gpus_per_node:
            e.gpus_per_node = 1
    return e


def _distributed(executor, recipe: PipelineRecipe):
    e = executor.clone()
    e.launcher = "torchrun"
    e.ntasks_per_node = recipe.ranks_per_node
    if isinstance(e, run.SlurmExecutor):
        e.nodes = recipe.nodes
        e.torchrun_nproc_per_node = recipe.ranks_per_node
        if e.gpus_per_node:
            e.gpus_per_node = recipe.ranks_per_node
        if e.cpus_per_task:  # per rank in a recipe's executor; torchrun's one task per node holds every rank of the node
            _set_cpus_per_task(e, e.cpus_per_task * recipe.ranks_per_node)
    return e


def _set_cpus_per_task(e: run.SlurmExecutor, cpus: int | None) -> None:
    if cpus:
        e.cpus_per_task = cpus
        # srun (SLURM >= 22.05) does not inherit sbatch's --cpus-per-task: without this its task gets one CPU
        e.env_vars = {**e.env_vars, "SRUN_CPUS_PER_TASK": str(cpus)}


def build_tasks(recipe: PipelineRecipe) -> list[tuple[str, run.Partial, str]]:
    """(name, task, kind) in order; kind 'single' or 'distributed'."""
    r = resolve(recipe)
    out = Path(r.output_dir).resolve()
    start_hf = r.stage2.model_dir if r.skip_stage1 else str(out / "stage1" / "hf")
    before, after = str(out / "eval" / "before"), str(out / "eval" / "after")
    trained = [] if r.skip_stage1 else [r.stage1.output_dir]
    labels = [] if r.skip_stage1 else ["stage one"]
    needs_data = r.data.synthetic or not r.skip_stage1  # RL-only on real questions reads them where they are
    return [
        *([("data", run.Partial(tasks.prepare_data, task=r.data), "single")] if needs_data else []),
        *([] if r.skip_stage1 else [("stage1", run.Partial(tasks.pretrain, cfg=r.stage1), "distributed")]),
        ("eval_before", run.Partial(tasks.evaluate, cfg=eval_config(r, start_hf, before)), "single"),
        ("stage2", run.Partial(tasks.rl, cfg=r.stage2), "distributed"),
        ("eval_after", run.Partial(tasks.evaluate, cfg=eval_config(r, str(out / "stage2" / "hf"), after)), "single"),
        ("report", run.Partial(tasks.report, run_dirs=[*trained, r.stage2.output_dir],
                               labels=[*labels, r.rl_steps_report_label],
                               evals=[f"{before}/results.json", f"{after}/results.json"],
                               eval_labels=["before stage two", "after stage two"],
                               out=str(out / "report.md")), "single"),
    ]


def run_pipeline(recipe: PipelineRecipe, executor, *, name: str = "llama3b_math_then_drgrpo",
                 dryrun: bool = False) -> dict:
    """Launch the tasks in order; returns {task: state}. Raises PipelineFailed if any task did not succeed."""
    built = build_tasks(recipe)
    with StopOnFailureExperiment(name, executor=executor, log_level="WARN") as exp:
        previous = None
        for task_name, partial, kind in built:
            task_executor = _single(executor) if kind == "single" else _distributed(executor, recipe)
            previous = exp.add(partial, executor=task_executor, name=task_name,
                               dependencies=[previous] if previous else [])
        if dryrun:
            exp.dryrun()
            return {}
        try:
            exp.run(sequential=False)
        except PipelineFailed:
            pass
    states = {job.id: str(job.state) for job in exp.jobs}
    failed = {k: v for k, v in states.items() if v != str(AppState.SUCCEEDED)}
    if failed:
        raise PipelineFailed(f"pipeline did not complete: {failed}; logs under {exp._exp_dir}")
    return states
