"""Recipes: every variant builds and validates on CPU without launching; the nemo-run command works from any
directory; a failing task makes the command exit non-zero and its dependents never start."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from slurm_cluster import slurm_cluster  # noqa: F401  (session fixture)

RECIPE = REPO / "recipes" / "llama3b_math_then_drgrpo.py"


@pytest.mark.parametrize("variant", ["tiny_cpu", "llama32_3b_a100", "llama32_3b_a100_oat_zero_data"])
def test_every_variant_builds_and_validates(variant, tmp_path):
    from recipes.experiment import build_tasks
    from recipes.pipeline_recipe import RECIPES

    recipe = RECIPES[variant]()
    recipe.output_dir = str(tmp_path / "out")
    if variant != "tiny_cpu":
        recipe.stage1.model.hf_dir = recipe.data.tokenizer_dir = "/models/Llama-3.2-3B"
        recipe.stage2.train_questions = "math:/data/math_12k"
    tasks = build_tasks(recipe)
    assert [name for name, _, _ in tasks] == ["data", "stage1", "eval_before", "stage2", "eval_after", "report"]
    stage1 = dict((n, p) for n, p, _ in tasks)["stage1"].cfg
    stage2 = dict((n, p) for n, p, _ in tasks)["stage2"].cfg
    assert stage2.model_dir == str(tmp_path / "out" / "stage1" / "hf")  # outputs pass by path
    assert stage1.output_dir == str(tmp_path / "out" / "stage1")
    if variant != "tiny_cpu":  # the authors' settings (examples/llama3.2-3b-numinaqa.sh of understand-r1-zero)
        assert (stage2.lr, stage2.group_size, stage2.questions_per_step, stage2.max_new_tokens) == (1e-6, 8, 128, 3000)
        assert (stage2.temperature, stage2.aggregation, stage2.std_normalize, stage2.kl_coef) == (1.0, "dr_grpo", False, 0.0)
        assert stage2.minibatches_per_step == 8  # train_batch_size 128 of 128 x 8 rollouts
        assert (stage2.max_prompt_tokens, stage2.verifier, stage2.eval_every, stage2.recompute) == (1024, "fast", 16, "full")
    if variant == "llama32_3b_a100":  # the paper's Llama run: r1 template, MATH-12k of all levels
        assert stage2.template == "r1" and stage2.train_levels == ()
    if variant == "llama32_3b_a100_oat_zero_data":  # the named deviation: Oat-Zero's template and levels
        assert stage2.template == "qwen_math" and stage2.train_levels == (3, 4, 5)


def test_a100_recipe_without_model_path_fails_with_the_fix(tmp_path):
    from recipes.experiment import build_tasks
    from recipes.pipeline_recipe import llama32_3b_a100

    recipe = llama32_3b_a100()
    recipe.output_dir = str(tmp_path)
    recipe.stage2.train_questions = "math:/data/MATH"
    with pytest.raises(ValueError, match="hf_dir is empty.*Llama-3.2-3B"):
        build_tasks(recipe)


def test_bad_layout_is_refused_before_launch(tmp_path):
    from recipes.experiment import build_tasks
    from recipes.pipeline_recipe import llama32_3b_a100

    recipe = llama32_3b_a100("/models/Llama-3.2-3B", "/data/MATH")
    recipe.output_dir = str(tmp_path)
    recipe.stage1.parallel.tp, recipe.ranks_per_node = 3, 6
    with pytest.raises(ValueError, match=r"recipe.stage1: .*tensor_parallel=3 does not divide num_key_value_heads=8"):
        build_tasks(recipe)


def test_cli_overrides_edit_the_chosen_recipe():
    """`recipe.FIELD=...` starts from the tiny_cpu default (or from `recipe=NAME`), not from PipelineRecipe()'s
    class defaults: those would turn the tiny run into 3000-token generations."""
    import fiddle as fdl
    import nemo_run as run

    from recipes import llama3b_math_then_drgrpo as cli
    from recipes.pipeline_recipe import llama32_3b_a100, tiny_cpu

    def parse(*args: str):
        ctx = run.cli.RunContext(name="test", factory=cli._defaults)  # what `nemo-run RECIPE ARGS` builds
        return fdl.build(ctx.parse_fn(cli.llama3b_math_then_drgrpo, list(args)).recipe)

    expected = tiny_cpu()
    expected.output_dir, expected.eval.backend = "/tmp/out", "torch"
    assert parse("recipe.output_dir=/tmp/out", "recipe.eval.backend=torch") == expected
    expected = llama32_3b_a100()
    expected.stage1.model.hf_dir, expected.stage2.lr = "/models/Llama-3.2-3B", 2e-6
    assert parse("recipe=llama32_3b_a100", "recipe.stage1.model.hf_dir=/models/Llama-3.2-3B",
                 "recipe.stage2.lr=2e-6") == expected


def test_slurm_cpus_per_task_count_per_rank_and_reach_srun():
    """torchrun runs a node's ranks in one SLURM task, and srun does not inherit sbatch's --cpus-per-task."""
    import fiddle as fdl

    from recipes import llama3b_math_then_drgrpo as cli
    from recipes.experiment import _distributed, _single
    from recipes.pipeline_recipe import llama32_3b_a100

    executor = fdl.build(cli.slurm(account="acct", cpus_per_task=16))
    recipe = llama32_3b_a100()
    train, one = _distributed(executor, recipe), _single(executor)
    assert (train.cpus_per_task, train.env_vars["SRUN_CPUS_PER_TASK"]) == (16 * 8, "128")
    assert (one.cpus_per_task, one.env_vars["SRUN_CPUS_PER_TASK"], one.gpus_per_node) == (16, "16", 1)
    assert "SRUN_CPUS_PER_TASK" not in _distributed(fdl.build(cli.slurm(account="acct")), recipe).env_vars


def _nemo_run(*args, cwd, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([str(Path(sys.executable).parent / "nemo-run"), str(RECIPE), *args, "--yes"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_dryrun_from_another_directory(tmp_path):
    proc = _nemo_run("--dryrun", "recipe.output_dir=" + str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "stage1" in output and "eval_after" in output
    assert not (tmp_path / "out" / "stage1").exists()


def test_failing_task_exits_nonzero_and_stops_dependents(tmp_path):
    # a tokenizer directory that does not exist: the data task fails after generating the synthetic data
    proc = _nemo_run(f"recipe.output_dir={tmp_path / 'out'}", "recipe.data.tokenizer_dir=/nonexistent",
                     "recipe.data.num_pretrain_docs=200", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAILED" in proc.stderr and "data" in proc.stderr
    assert not (tmp_path / "out" / "stage1").exists()  # stage one never ran


FAST = ("recipe.data.num_pretrain_docs=2000", "recipe.data.num_train_questions=64", "recipe.data.num_test_questions=16",
        "recipe.stage1.schedule.train_iters=12", "recipe.stage1.schedule.eval_interval=6",
        "recipe.stage1.optim.warmup_iters=2", "recipe.stage2.steps=2", "recipe.stage2.questions_per_step=4",
        "recipe.stage2.group_size=4", "recipe.stage2.micro_batch_size=8", "recipe.stage2.eval_max_questions=8",
        "recipe.stage2.generator=torch", "recipe.eval.backend=torch", "recipe.eval.max_questions=8")


@pytest.mark.slurm
@pytest.mark.slow
def test_recipe_through_slurm_executor_completes(slurm_cluster, tmp_path):
    env = dict(slurm_cluster, HF_HUB_OFFLINE="1")
    out = tmp_path / "out"
    proc = subprocess.run([str(Path(sys.executable).parent / "nemo-run"), str(RECIPE), "--yes",
                           f"recipe.output_dir={out}", *FAST, "run.executor=slurm", "run.executor.gpus_per_node=0",
                           "run.executor.ntasks_per_node=2", "run.executor.cpus_per_task=1",
                           "run.executor.time=00:20:00"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for done in ("stage1/DONE", "stage2/DONE", "eval/before/results.json", "eval/after/results.json", "report.md"):
        assert (out / done).exists(), done
    sacct = subprocess.run(["sacct", "-n", "-P", "-o", "JobID,JobName,AllocCPUS,State", "-S", "now-1hour"], env=env,
                           capture_output=True, text=True).stdout
    rows = [line.split("|") for line in sacct.splitlines()]
    jobs = {job_id: name for job_id, name, _, _ in rows if "." not in job_id}
    stage1 = [job_id for job_id, name in jobs.items() if name.endswith("stage1")][-1]
    eval_before = [job_id for job_id, name in jobs.items() if name.endswith("eval_before")][-1]
    cpus = {job_id: int(n) for job_id, _, n, state in rows if state == "COMPLETED"}
    # torchrun's one task holds both ranks: cpus_per_task=1 (per rank) gives it 2 CPUs, in the job and in its srun step
    assert cpus[stage1] == 2 and cpus[f"{stage1}.0"] == 2, sacct
    assert cpus[eval_before] == 1, sacct
