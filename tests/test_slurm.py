"""slurm/*.sh on the local cluster's single node (CPU, 2 ranks per job): the RL job completes and leaves its
metrics (the reference of tests/test_multinode.py, where `scontrol requeue` and the pre-timeout USR1 resume 2-node
jobs to exactly these metrics), the pipeline runs stage one then stage two, a failing stage one cancels stage two,
and the scripts' launch flags and documented knobs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from slurm_cluster import REPO, final_state, sacct_records, sbatch, wait_for_job
from slurm_jobs import JOB_TIMEOUT, LOCAL_NODE, RL_SETTINGS, job_env, metrics, questions

pytestmark = pytest.mark.slurm


def test_rl_job_completes_and_leaves_metrics(reference, slurm_cluster):
    job, state, out, log = reference
    assert state == "COMPLETED", log.read_text()[-5000:]
    assert [r["State"] for r in sacct_records(slurm_cluster, job)] == ["COMPLETED"]
    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, RL_SETTINGS["steps"] + 1))
    for key in ("rollout/reward_mean", "rollout/accuracy", "train/loss", "train/grad_norm"):
        assert all(key in r for r in rows), key
    assert any(r["train/grad_norm"] > 0 for r in rows)  # the policy learned something: resumes must restore it
    assert (out / "DONE").read_text().strip() == str(RL_SETTINGS["steps"]) and (out / "hf" / "config.json").exists()
    text = log.read_text()
    assert f"[rl.sh] job {job} restart 0 on 1 node(s) x 2 ranks" in text and "[rl] done: 8 steps" in text
    # per-job log directory: torchrun's per-rank files for both ranks
    assert sorted(p.parent.name for p in (out / "logs" / str(job)).glob("*/attempt_0/*/stdout.log")) == ["0", "1"]


# ---- the chained pipeline ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipeline_inputs(tmp_path_factory):
    from dist.pretrain_fixtures import make_math_corpus, tiny_run_config

    root = tmp_path_factory.mktemp("pipeline_inputs")
    corpus = make_math_corpus(root / "corpus", num_docs=500)
    pretrain = tiny_run_config(corpus, root / "unused")
    del pretrain["output_dir"]  # pipeline.sh gives each stage its output directory
    pretrain["logging"]["progress_bar"] = False
    (root / "pretrain.json").write_text(json.dumps(pretrain))
    # no model_dir: stage two starts from stage one's export
    rl = dict(RL_SETTINGS, train_questions=str(questions(root)), steps=2)
    (root / "rl.json").write_text(json.dumps(rl))
    return root / "pretrain.json", root / "rl.json"


def _run_pipeline(env: dict, jobs: list, run_dir: Path, pretrain_config: Path, rl_config: Path, **knobs) -> dict:
    env = job_env(env, RUN_DIR=str(run_dir), PRETRAIN_CONFIG=str(pretrain_config), RL_CONFIG=str(rl_config),
                   SBATCH_ARGS=" ".join(LOCAL_NODE), **knobs)
    proc = subprocess.run(["bash", "slurm/pipeline.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ids = dict(line.split("=", 1) for line in proc.stdout.split())
    pretrain_job, rl_job = int(ids["PRETRAIN_JOB_ID"]), int(ids["RL_JOB_ID"])
    jobs += [pretrain_job, rl_job]
    return {"pretrain": pretrain_job, "rl": rl_job, "stderr": proc.stderr}


def test_pipeline_runs_stage_one_then_stage_two_from_its_export(slurm_cluster, pipeline_inputs, jobs, tmp_path):
    run_dir = tmp_path / "pipeline"
    ids = _run_pipeline(slurm_cluster, jobs, run_dir, *pipeline_inputs)
    rl_state = wait_for_job(slurm_cluster, ids["rl"], JOB_TIMEOUT, run_dir / "logs" / f"rl-{ids['rl']}.log")
    pretrain_state = final_state(slurm_cluster, ids["pretrain"])
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((run_dir / "logs").glob("*.log")))
    assert (pretrain_state, rl_state) == ("COMPLETED", "COMPLETED"), logs
    pretrain_record, = sacct_records(slurm_cluster, ids["pretrain"])
    rl_record, = sacct_records(slurm_cluster, ids["rl"])
    assert rl_record["Start"] >= pretrain_record["End"]  # ISO timestamps: stage two started after stage one ended
    assert (run_dir / "pretrain" / "DONE").exists()
    assert json.loads((run_dir / "rl" / "rl_config.json").read_text())["model_dir"] == str(run_dir / "pretrain" / "hf")
    assert [r["step"] for r in metrics(run_dir / "rl")] == [1, 2] and (run_dir / "rl" / "DONE").exists()


def test_failing_stage_one_cancels_stage_two(slurm_cluster, pipeline_inputs, jobs, tmp_path):
    run_dir = tmp_path / "pipeline_fail"
    ids = _run_pipeline(slurm_cluster, jobs, run_dir, *pipeline_inputs,
                        PRETRAIN_EXTRA_ARGS='data.blend=["/nonexistent/corpus"]')
    pretrain_log = run_dir / "logs" / f"pretrain-{ids['pretrain']}.log"
    assert wait_for_job(slurm_cluster, ids["pretrain"], JOB_TIMEOUT, pretrain_log) == "FAILED"
    assert "/nonexistent/corpus" in pretrain_log.read_text()  # it failed for the reason we gave it
    assert wait_for_job(slurm_cluster, ids["rl"], 60) == "CANCELLED"
    # never started: cancelled while pending. slurmctld leaves Start unset or stamps it with the cancel time
    # (then Start == End and nothing elapsed), so the proof is no elapsed time, no batch step, no output.
    rl_record, = sacct_records(slurm_cluster, ids["rl"], fields="JobID,State,Start,End,Elapsed")
    assert rl_record["Elapsed"] == "00:00:00", rl_record
    assert rl_record["Start"] in ("None", "Unknown", rl_record["End"]), rl_record
    steps = subprocess.run(["sacct", "-n", "-D", "-P", "-j", str(ids["rl"]), "-o", "JobID"], env=slurm_cluster,
                           capture_output=True, text=True, timeout=30).stdout.split()
    assert steps == [str(ids["rl"])], steps  # no `.batch` step: the script never ran
    assert not (run_dir / "rl").exists() and not list((run_dir / "logs").glob("rl-*.log"))


# ---- launch details that need no training run --------------------------------------------------------------


@pytest.mark.parametrize("script", ["rl.sh", "pretrain.sh"])
def test_dry_run_shows_the_container_and_rendezvous_flags(slurm_cluster, jobs, tmp_path, script):
    log = tmp_path / "dry.log"
    env = job_env(slurm_cluster, DRY_RUN="1", CONTAINER_IMAGE="nvcr.io/nvidia/pytorch:25.01-py3",
                   CONTAINER_MOUNTS="/data:/data", MASTER_PORT="23456", EXTRA_ARGS="steps=3 lr=1e-6",
                   OUTPUT_DIR=str(tmp_path / "out"))
    job = sbatch(env, *LOCAL_NODE, f"--output={log}", f"slurm/{script}")
    jobs.append(job)
    assert wait_for_job(slurm_cluster, job, 120, log) == "COMPLETED", log.read_text()
    command = next(line for line in log.read_text().splitlines() if " srun " in f" {line}")
    for flag in ("--container-image=nvcr.io/nvidia/pytorch:25.01-py3", "--container-mounts=/data:/data",
                 f"--container-workdir={REPO}", "--cpus-per-task=2", "--nproc-per-node=2",
                 "--rdzv-backend=c10d", "--rdzv-endpoint=localhost:23456", f"--rdzv-id={job}",
                 " python -m torch.distributed.run ", f"output_dir={tmp_path / 'out'}", " steps=3 lr=1e-6"):
        assert flag in command, (flag, command)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("script", ["rl.sh", "pretrain.sh", "pipeline.sh", "node_launch.sh"])
def test_every_knob_is_documented_in_the_header(script):
    text = (REPO / "slurm" / script).read_text()
    header = text.split("set -euo pipefail")[0]
    if "slurm/training_job.sh" in text:  # what it sources reads knobs too
        text += (REPO / "slurm" / "training_job.sh").read_text()
    knobs = {name for name in re.findall(r"\$\{([A-Z_]+):-", text) if not name.startswith("SLURM_")}
    assert knobs, script
    for knob in knobs:
        assert re.search(rf"^#\s+{knob}\s", header, re.M), f"{script}: {knob} is not documented in the header"
