"""Recipes: every variant builds and validates on CPU without launching; the nemo-run command works from any
directory; a failing task makes the command exit non-zero and its dependents never start."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from slurm_cluster import sacct_records

pytestmark = pytest.mark.cli

RECIPE = REPO / "recipes" / "llama3b_math_then_drgrpo.py"


QWEN_RECIPES = ["qwen25_math_7b_oat_zero", "qwen25_math_1p5b"]


@pytest.mark.parametrize("variant", ["tiny_cpu", "smollm2_cpu", "llama32_3b_a100", "llama32_3b_a100_oat_zero_data",
                                     *QWEN_RECIPES])
def test_every_variant_builds_and_validates(variant, tmp_path):
    from recipes.experiment import build_tasks
    from recipes.pipeline_recipe import RECIPES

    recipe = RECIPES[variant]()
    recipe.output_dir = str(tmp_path / "out")
    if variant.startswith("llama"):
        recipe.stage1.model.hf_dir = recipe.data.tokenizer_dir = "/models/Llama-3.2-3B"
    if variant in QWEN_RECIPES:
        recipe.stage2.model_dir = "/models/Qwen2.5-Math"
    if variant not in ("tiny_cpu", "smollm2_cpu"):
        recipe.stage2.train_questions = "math:/data/math_12k"
    tasks = dict((n, p) for n, p, _ in build_tasks(recipe))
    stage2 = tasks["stage2"].cfg
    if variant in QWEN_RECIPES:  # RL only, from the base model; real questions are read where they are
        assert list(tasks) == ["eval_before", "stage2", "eval_after", "report"]
        assert stage2.model_dir == tasks["eval_before"].cfg.model == "/models/Qwen2.5-Math"
        assert tasks["report"].run_dirs == [str(tmp_path / "out" / "stage2")]
    else:
        assert list(tasks) == ["data", "stage1", "eval_before", "stage2", "eval_after", "report"]
        assert stage2.model_dir == str(tmp_path / "out" / "stage1" / "hf")  # outputs pass by path
        assert tasks["stage1"].cfg.output_dir == str(tmp_path / "out" / "stage1")
    if variant in QWEN_RECIPES:  # the authors' examples/qwen2.5-math-{7b,1.5b}.sh, qwen_math template
        assert (stage2.template, stage2.max_new_tokens, stage2.lr, stage2.minibatches_per_step) == ("qwen_math", 3000, 1e-6, 8)
        assert tasks["eval_before"].cfg.template == "qwen_math"
    if variant == "qwen25_math_7b_oat_zero":  # Oat-Zero-7B: MATH levels 3-5, math_verify
        assert (stage2.train_levels, stage2.verifier, stage2.grad_reduce_in_fp32) == ((3, 4, 5), "math_verify", False)
    if variant == "qwen25_math_1p5b":  # MATH-12k of all levels, the fast verifier
        assert (stage2.train_levels, stage2.verifier, stage2.grad_reduce_in_fp32) == ((), "fast", True)
    if variant == "smollm2_cpu":  # the real model, built by the data task, its chat template; stage one from it
        model = Path(recipe.data.real_assets_dir) / "smollm2-135m-instruct"
        assert tasks["stage1"].cfg.model.hf_dir == tasks["data"].task.tokenizer_dir == str(model)
        assert tasks["stage1"].cfg.data.blend == [[1.0, str(tmp_path / "out" / "data" / "tokens" / "synthetic")],
                                                  [1.0, str(tmp_path / "out" / "data" / "tokens" / "jsonl")]]
        assert (stage2.template, tasks["eval_before"].cfg.template) == ("chat", "chat")
        assert stage2.system_prompt == tasks["eval_before"].cfg.system_prompt != ""
    if variant not in ("tiny_cpu", "smollm2_cpu"):  # the authors' settings (understand-r1-zero examples/*.sh)
        assert (stage2.lr, stage2.group_size, stage2.questions_per_step, stage2.max_new_tokens) == (1e-6, 8, 128, 3000)
        assert (stage2.temperature, stage2.aggregation, stage2.std_normalize, stage2.kl_coef) == (1.0, "dr_grpo", False, 0.0)
        assert stage2.minibatches_per_step == 8  # train_batch_size 128 of 128 x 8 rollouts
        assert (stage2.max_prompt_tokens, stage2.eval_every, stage2.recompute) == (1024, 16, "full")
    if variant == "llama32_3b_a100":  # the paper's Llama run: r1 template, MATH-12k of all levels
        assert stage2.template == "r1" and stage2.train_levels == () and stage2.verifier == "fast"
    if variant == "llama32_3b_a100_oat_zero_data":  # the named deviation: Oat-Zero's template and levels
        assert stage2.template == "qwen_math" and stage2.train_levels == (3, 4, 5)


def test_rl_only_recipe_without_its_model_fails_with_the_fix(tmp_path):
    from recipes.experiment import build_tasks
    from recipes.pipeline_recipe import qwen25_math_7b_oat_zero, tiny_cpu

    recipe = qwen25_math_7b_oat_zero(math_train="/data/MATH")
    recipe.output_dir = str(tmp_path)
    with pytest.raises(ValueError, match=r"recipe.skip_stage1 is set but recipe.stage2.model_dir is empty"):
        build_tasks(recipe)
    recipe = tiny_cpu()
    recipe.output_dir, recipe.skip_stage1 = str(tmp_path), True
    recipe.stage2.model_dir = str(tmp_path / "gemma")
    from transformers import GemmaConfig

    GemmaConfig(num_hidden_layers=2).save_pretrained(tmp_path / "gemma")
    with pytest.raises(ValueError, match=r"recipe.stage2: model_type 'gemma' is not a supported model family; "
                                         r"supported: 'llama'.*'qwen2'.*'qwen3'"):
        build_tasks(recipe)


def test_real_model_recipe_refuses_a_directory_that_is_not_real_assets_before_launch(tmp_path):
    from recipes.experiment import build_tasks
    from recipes.pipeline_recipe import smollm2_cpu

    stray = tmp_path / "assets"
    stray.mkdir()
    (stray / "notes.txt").write_text("not the assets")
    recipe = smollm2_cpu(str(stray))
    recipe.output_dir = str(tmp_path / "out")
    with pytest.raises(ValueError, match=r"recipe.data.real_assets_dir: .*assets exists but has no MANIFEST.json"):
        build_tasks(recipe)
    assert not (tmp_path / "out").exists()


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


@pytest.mark.parametrize("where,value,message", [
    (("stage2", "steps"), 0, "recipe.stage2.steps=0 must be >= 1"),
    (("stage1", "schedule", "train_iters"), "600", "recipe.stage1.schedule.train_iters='600' must be a whole number"),
    (("data", "num_pretrain_docs"), 0, "recipe.data.num_pretrain_docs=0 must be >= 1"),
    (("eval", "max_new_tokens"), 2.5, "recipe.eval.max_new_tokens=2.5 must be a whole number"),
    (("stage2", "wandb", "project"), 7, "recipe.stage2.wandb.project=7 must be a string"),
    (("nodes",), 0, "recipe.nodes=0 must be >= 1"),
])
def test_a_mistyped_or_out_of_range_recipe_field_is_refused_before_launch(tmp_path, where, value, message):
    from recipes.experiment import build_tasks
    from recipes.pipeline_recipe import tiny_cpu

    recipe = tiny_cpu()
    recipe.output_dir = str(tmp_path)
    node = recipe
    for name in where[:-1]:
        node = getattr(node, name)
    setattr(node, where[-1], value)
    with pytest.raises(ValueError, match=re.escape(message)):
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
    expected = tiny_cpu()  # a section's field, e.g. W&B for both stages
    expected.stage1.logging.wandb.project = expected.stage2.wandb.project = "math-rl"
    expected.stage2.wandb.mode = "offline"
    assert parse("recipe.stage1.logging.wandb.project=math-rl", "recipe.stage2.wandb.project=math-rl",
                 "recipe.stage2.wandb.mode=offline") == expected


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
    # the console names the failed task's log and shows its last lines, where the reason is
    log = re.search(r"^data \| failed; the last lines of (\S+):$", proc.stdout, re.M)
    assert log and Path(log[1]).exists(), proc.stdout[-3000:]
    assert re.search(r"^data \|   .*/nonexistent", proc.stdout, re.M), proc.stdout[-3000:]
    # bad input ends the task with one line, as it ends the commands (no traceback unless R1ZERO_DEBUG=1)
    assert "data | error: tokenizer directory '/nonexistent' does not exist" in proc.stdout
    assert "Traceback" not in proc.stdout
    assert not (tmp_path / "out" / "stage1").exists()  # stage one never ran


FAST = ("recipe.data.num_pretrain_docs=2000", "recipe.data.num_train_questions=64", "recipe.data.num_test_questions=16",
        "recipe.stage1.schedule.train_iters=12", "recipe.stage1.schedule.eval_interval=6",
        "recipe.stage1.optim.warmup_iters=2", "recipe.stage2.steps=2", "recipe.stage2.questions_per_step=4",
        "recipe.stage2.group_size=4", "recipe.stage2.micro_batch_size=8", "recipe.stage2.eval_max_questions=8",
        "recipe.stage2.engine=torch", "recipe.eval.backend=torch", "recipe.eval.max_questions=8")


@pytest.mark.multirank
def test_rl_only_pipeline_from_a_qwen_checkpoint_through_the_cli(tmp_path):
    """`recipe.skip_stage1=true recipe.stage2.model_dir=QWEN`: no stage one; the first evaluation and Dr. GRPO start
    from the given Qwen2 checkpoint, and the report covers stage two."""
    import json

    from tiny_models import save_char_tokenizer, save_random_model, tiny_qwen2_config

    # one family is enough here: every family's learner, engines and conversion are tested in test_model_families
    model = save_random_model(tmp_path / "qwen2", tiny_qwen2_config(), seed=3)
    save_char_tokenizer(model)
    out = tmp_path / "out"
    proc = _nemo_run(f"recipe.output_dir={out}", "recipe.skip_stage1=true", f"recipe.stage2.model_dir={model}",
                     *(a for a in FAST if "stage1" not in a), "recipe.data.num_pretrain_docs=200", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert not (out / "stage1").exists() and (out / "stage2" / "DONE").exists()
    assert json.loads((out / "stage2" / "hf" / "config.json").read_text())["model_type"] == "qwen2"
    before = json.loads((out / "eval" / "before" / "results.json").read_text())
    assert str(model) in json.dumps(before)  # the first evaluation is of the starting checkpoint
    steps = [json.loads(line) for line in (out / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert max(s.get("step", 0) for s in steps) == 2
    assert "stage one" not in (out / "report.md").read_text()
    assert "stage2/metrics.jsonl" in proc.stdout and "stage1/metrics.jsonl" not in proc.stdout
    # the console showed each task's log file and its progress as it ran
    for task in ("data", "eval_before", "stage2", "eval_after", "report"):
        log = re.search(rf"^{task} \| log: (\S+)$", proc.stdout, re.M)
        assert log and Path(log[1]).exists(), (task, proc.stdout[-4000:])
    assert re.search(r"^data \| \[data\] synthetic: \d+ documents", proc.stdout, re.M), proc.stdout[-4000:]
    assert re.search(r"^stage2 \| Dr\. GRPO: 100% 2/2 ", proc.stdout, re.M), proc.stdout[-4000:]
    assert "stage2 | [rl] done: 2 steps" in proc.stdout
    for task in ("eval_before", "eval_after"):
        assert re.search(rf"^{task} \| \[eval\] \w+: accuracy \d+\.\d% over 8 questions", proc.stdout, re.M)
    assert f"report | [report] {out / 'report.md'}" in proc.stdout


def _wait_for_rl_step(out: Path, step: int, job_name: str, env: dict, proc: subprocess.Popen,
                      timeout: float = 900) -> int:
    """The SLURM job id of the stage-two task once its metrics reach `step`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, "nemo-run ended before stage two got to be signalled"
        path = out / "metrics.jsonl"
        if path.exists() and any(json.loads(line).get("step", 0) >= step and "rollout/reward_mean" in line
                                 for line in path.read_text().splitlines() if line):
            queue = subprocess.run(["squeue", "-h", "-n", job_name, "-o", "%i"], env=env, capture_output=True,
                                   text=True, timeout=30).stdout.split()
            return int(queue[-1])
        time.sleep(0.2)
    raise AssertionError(f"stage two did not reach step {step} in {timeout} s")


@pytest.mark.slurm
@pytest.mark.multinode
def test_recipe_through_slurm_executor_runs_at_two_nodes(slurm_cluster, tmp_path):
    """`run.executor=slurm` on the local cluster's two namespace nodes (partition multi), one rank per node: the
    pipeline completes, the training tasks ran one rank on each node and asked for the pre-timeout signal and
    requeue, the one-process tasks asked for one node without the signal; stage two, given the pre-timeout USR1
    mid-run, checkpoints, requeues itself and resumes to its last step."""
    env = dict(slurm_cluster, HF_HUB_OFFLINE="1")
    out = tmp_path / "out"
    stage2_steps = 8  # long enough to be signalled mid-run
    cmd = [str(Path(sys.executable).parent / "nemo-run"), str(RECIPE), "--yes", f"recipe.output_dir={out}",
           *(a for a in FAST if not a.startswith("recipe.stage2.steps=")), f"recipe.stage2.steps={stage2_steps}",
           "recipe.stage2.checkpoint_every=2", "run.executor=slurm", "run.executor.gpus_per_node=0",
           "run.executor.partition=multi", "run.executor.nodes=2", "run.executor.ntasks_per_node=1",
           "run.executor.cpus_per_task=2", "run.executor.time=00:20:00"]
    with open(tmp_path / "nemo_run.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            # the pre-timeout signal as `--signal=USR1@300` sends it: to every process of the job's steps (not B:)
            stage2 = _wait_for_rl_step(out / "stage2", step=3, job_name="-.stage2", env=env, proc=proc)
            subprocess.run(["scancel", "--signal=USR1", str(stage2)], env=env, check=True, timeout=30)
            proc.wait(timeout=1500)
        finally:
            proc.kill()
    output = (tmp_path / "nemo_run.log").read_text()
    assert proc.returncode == 0, output[-6000:]
    for done in ("stage1/DONE", "stage2/DONE", "eval/before/results.json", "eval/after/results.json", "report.md"):
        assert (out / done).exists(), done
    # NeMo-Run's experiment directory (its sbatch scripts and task logs), as its status table names it
    experiment = Path(re.findall(r"Local Directory: (\S+)/report\s", output)[-1])
    for stage in ("stage1", "stage2"):
        log = "".join(p.read_text() for p in experiment.glob(f"{stage}/log*.out"))
        where = set(re.findall(rf"\[{stage}\] rank (\d) of 2 \(local rank 0 of 1\) on node (\w+) \(hostname (\w+)\)", log))
        assert where == {("0", "node1", "node1"), ("1", "node2", "node2")}, log[-3000:]
        header = (experiment / f"{stage}_sbatch.sh").read_text()
        for line in ("#SBATCH --nodes=2", "#SBATCH --signal=USR1@300", "#SBATCH --requeue"):
            assert line in header, (stage, line)
    # the console followed the SLURM tasks' logs too: their paths, the progress and the requeue as they happened
    for task in ("data", "stage1", "eval_before", "stage2", "eval_after", "report"):
        log = re.search(rf"^{task} \| log: (\S+)$", output, re.M)
        assert log and Path(log[1]).parent == experiment / task, (task, output[-4000:])
    assert re.search(r"^stage1 \| pretrain: 100% 12/12 ", output, re.M), output[-4000:]
    assert f"stage2 | [tasks] stopped early on the pre-timeout signal: requeueing job {stage2}" in output
    assert f"stage2 | [rl] done: {stage2_steps} steps" in output
    stage2_log = "".join(p.read_text() for p in experiment.glob("stage2/log*.out"))
    assert "[rl] exit requested: checkpoint at step" in stage2_log, stage2_log[-3000:]
    assert f"[tasks] stopped early on the pre-timeout signal: requeueing job {stage2}" in stage2_log
    assert "[rl] resuming from the checkpoint of step" in stage2_log
    assert [r["State"] for r in sacct_records(env, stage2)] == ["REQUEUED", "COMPLETED"]
    rows = [json.loads(line) for line in (out / "stage2" / "metrics.jsonl").read_text().splitlines() if line]
    steps = [row["step"] for row in rows if "rollout/reward_mean" in row]
    assert steps == list(range(1, stage2_steps + 1)), steps  # resumed: no step lost or repeated
    single = (experiment / "eval_before_sbatch.sh").read_text()
    assert "#SBATCH --nodes=1" in single and "--signal" not in single
    sacct = subprocess.run(["sacct", "-n", "-P", "-o", "JobID,JobName,AllocCPUS,State", "-S", "now-1hour"], env=env,
                           capture_output=True, text=True).stdout
    rows = [line.split("|") for line in sacct.splitlines()]
    jobs = {job_id: name for job_id, name, _, _ in rows if "." not in job_id}
    stage1 = [job_id for job_id, name in jobs.items() if name.endswith("stage1")][-1]
    eval_before = [job_id for job_id, name in jobs.items() if name.endswith("eval_before")][-1]
    cpus = {job_id: int(n) for job_id, _, n, state in rows if state == "COMPLETED"}
    torchrun_step, = (job_id for job_id, name, _, _ in rows if job_id.startswith(f"{stage1}.") and name == "torchrun")
    # cpus_per_task=2 per rank: each node's torchrun task holds its one rank's 2 CPUs, in the job and its srun step
    assert cpus[stage1] == 4 and cpus[torchrun_step] == 4, sacct
    assert cpus[eval_before] == 2, sacct
