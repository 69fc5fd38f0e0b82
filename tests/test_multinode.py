"""Both stages across two real SLURM nodes: partition `multi` of tests/slurm/start_local_slurm.sh, nodes node1 and
node2, each its own network namespace, hostname and address on a bridge, so torchrun's rendezvous and gloo cross a
network. Every job here is compared with the same global layout on the single node `localhost`:

- stage two (slurm/rl.sh) at 2 nodes x 1 rank, preempted by `scontrol requeue` or stopped by the pre-timeout USR1,
  finishes with exactly the metrics of the uninterrupted single-node run (slurm_jobs.reference, 1 node x 2 ranks);
- 2 nodes x 2 ranks with TP = 2 inside a node and DP = 2 across the nodes: stage one's loss curve equals 1 node x 4
  ranks within float tolerance, stage two's metrics equal exactly;
- slurm/pipeline.sh chains stage one and stage two at 2 nodes;
- a node whose job step dies mid-run ends the job with a clear error, and its newest checkpoint resumes the run to the
  reference's metrics.
Each test reads which node every rank ran on from the job's output (`[rank<r> <node>]:`, set per node by the scripts).
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from slurm_cluster import MULTI_NODES, REPO, final_state, sacct_records, wait_for_job
from slurm_jobs import (JOB_TIMEOUT, LOCAL_NODE, RL_SETTINGS, TWO_NODES, checkpoint_step_on_exit, job_env, metrics,
                        submit, submit_rl, wait_for_step)

pytestmark = [pytest.mark.slurm, pytest.mark.multinode]

ONE_RANK_PER_NODE = {0: "node1", 1: "node2"}
TWO_RANKS_PER_NODE = {0: "node1", 1: "node1", 2: "node2", 3: "node2"}


def ranks_nodes(log_text: str) -> dict[int, str]:
    """Global rank -> the node it ran on, from torchrun's per-line prefixes; each namespace node's hostname checked."""
    for node, hostname in re.findall(r"\] node (\w+) \(hostname (\w+),", log_text):
        assert node == hostname or node not in MULTI_NODES, f"slurmd {node} ran its task on host {hostname}"
    return {int(rank): node for rank, node in re.findall(r"\[rank(\d+) (\w+)\]:", log_text)}


def loss_curve(out: Path) -> list[dict]:
    """Stage one's per-step losses, learning rate and gradient norm (not its timings)."""
    keep = ("train/loss", "val/loss", "train/lr", "train/grad_norm")
    return [{k: row[k] for k in ("step", *keep) if k in row} for row in metrics(out)]


def assert_curves_close(got: list[dict], want: list[dict]) -> None:
    assert [r.keys() for r in got] == [r.keys() for r in want], (got, want)
    for g, w in zip(got, want):
        for key in g:
            assert g[key] == pytest.approx(w[key], rel=1e-4, abs=1e-6), (g["step"], key, g[key], w[key])


def completed(env: dict, job: int, log: Path) -> str:
    state = wait_for_job(env, job, JOB_TIMEOUT, log)
    assert state == "COMPLETED", log.read_text()[-5000:]
    return log.read_text()


# ---- stage two: preemption and the time-limit signal across nodes --------------------------------------------------


@pytest.mark.parametrize("interruption", ["scontrol requeue", "USR1 before the time limit"])
def test_interrupted_two_node_rl_job_resumes_to_the_single_node_metrics(slurm_cluster, policy, reference, jobs,
                                                                          tmp_path, interruption):
    out = tmp_path / "rl"
    job, log = submit_rl(slurm_cluster, jobs, policy, out, *TWO_NODES, NPROC_PER_NODE="1")
    wait_for_step(out, job, slurm_cluster, log, step=3)  # after the step-2 checkpoint
    if interruption == "scontrol requeue":  # what preemption does: TERM to every node's step, then requeue
        subprocess.run(["scontrol", "requeue", str(job)], env=slurm_cluster, check=True, timeout=30)
    else:  # what `#SBATCH --signal=B:USR1@300` delivers: USR1 to the batch shell on the first node only
        subprocess.run(["scancel", "--batch", "--signal=USR1", str(job)], env=slurm_cluster, check=True, timeout=30)
    text = completed(slurm_cluster, job, log)
    assert ranks_nodes(text) == ONE_RANK_PER_NODE, text[-3000:]
    assert 3 <= checkpoint_step_on_exit(text) < RL_SETTINGS["steps"]  # every node's ranks checkpointed and stopped
    if interruption == "scontrol requeue":  # SLURM's TERM, then SLURM requeues
        assert "[rl.sh] TERM: waiting for the ranks to checkpoint and exit" in text
    else:  # the batch shell forwards USR1 to every node's ranks, they exit cleanly, the shell requeues
        assert "[rl.sh] USR1: asking the ranks to checkpoint and exit" in text
        assert "[rl.sh] srun exited with 0" in text and f"[rl.sh] requeueing job {job}" in text
    assert [r["State"] for r in sacct_records(slurm_cluster, job)] == ["REQUEUED", "COMPLETED"]
    assert f"[rl.sh] job {job} restart 1 on 2 node(s) x 1 ranks" in text
    assert reference[1] == "COMPLETED", reference[3].read_text()[-3000:]
    assert metrics(out) == metrics(reference[2])  # 2 nodes = 1 node, and resumed exactly


# ---- tensor parallelism inside a node, data parallelism across nodes -----------------------------------------------


@pytest.fixture(scope="module")
def pretrain_config(tmp_path_factory) -> Path:
    from dist.pretrain_fixtures import make_math_corpus, tiny_run_config

    root = tmp_path_factory.mktemp("pretrain_inputs")
    corpus = make_math_corpus(root / "corpus", num_docs=500)
    cfg = tiny_run_config(corpus, root / "unused", parallel={"tp": 2, "threads_per_rank": 1})
    del cfg["output_dir"]  # the scripts give each run its own
    (root / "pretrain.json").write_text(json.dumps(cfg))
    return root / "pretrain.json"


@pytest.mark.parametrize("script", ["pretrain.sh", "rl.sh"])
def test_tp_inside_nodes_dp_across_equals_one_node(slurm_cluster, policy, pretrain_config, jobs, tmp_path, script):
    config, extra = (pretrain_config, "") if script == "pretrain.sh" else (policy, "tp=2 steps=4")
    # both at once: the single node and the two nodes are different SLURM nodes
    one = submit(script, slurm_cluster, jobs, config, tmp_path / "one_node", *LOCAL_NODE, NPROC_PER_NODE="4",
                 EXTRA_ARGS=extra)
    two = submit(script, slurm_cluster, jobs, config, tmp_path / "two_nodes", *TWO_NODES, NPROC_PER_NODE="2",
                 EXTRA_ARGS=extra)
    one_text, two_text = completed(slurm_cluster, *one), completed(slurm_cluster, *two)
    assert ranks_nodes(two_text) == TWO_RANKS_PER_NODE, two_text[-3000:]
    assert set(ranks_nodes(one_text).values()) == {"localhost"}
    if script == "pretrain.sh":
        assert_curves_close(loss_curve(tmp_path / "two_nodes"), loss_curve(tmp_path / "one_node"))
    else:
        assert metrics(tmp_path / "two_nodes") == metrics(tmp_path / "one_node")
        assert [r["step"] for r in metrics(tmp_path / "two_nodes")] == [1, 2, 3, 4]


# ---- both stages chained -----------------------------------------------------------------------------------------


def test_pipeline_chains_both_stages_at_two_nodes(slurm_cluster, pretrain_config, policy, jobs, tmp_path):
    run_dir = tmp_path / "pipeline"
    rl_config = tmp_path / "rl.json"
    rl = json.loads(policy.read_text())
    del rl["model_dir"]  # stage two starts from stage one's export
    rl_config.write_text(json.dumps(dict(rl, steps=2)))
    env = job_env(slurm_cluster, RUN_DIR=str(run_dir), PRETRAIN_CONFIG=str(pretrain_config), RL_CONFIG=str(rl_config),
                  SBATCH_ARGS=" ".join(TWO_NODES), NPROC_PER_NODE="2")
    proc = subprocess.run(["bash", "slurm/pipeline.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    ids = dict(line.split("=", 1) for line in proc.stdout.split())
    stage1, stage2 = int(ids["PRETRAIN_JOB_ID"]), int(ids["RL_JOB_ID"])
    jobs += [stage1, stage2]
    stage2_text = completed(slurm_cluster, stage2, run_dir / "logs" / f"rl-{stage2}.log")
    assert final_state(slurm_cluster, stage1) == "COMPLETED"
    stage1_text = (run_dir / "logs" / f"pretrain-{stage1}.log").read_text()
    assert ranks_nodes(stage1_text) == TWO_RANKS_PER_NODE and ranks_nodes(stage2_text) == TWO_RANKS_PER_NODE
    assert json.loads((run_dir / "rl" / "rl_config.json").read_text())["model_dir"] == str(run_dir / "pretrain" / "hf")
    assert [r["step"] for r in metrics(run_dir / "rl")] == [1, 2] and (run_dir / "rl" / "DONE").exists()


# ---- a node that dies ----------------------------------------------------------------------------------------------


def _kill_job_step_on(node: str, job: int) -> list[int]:
    """SIGKILL every process of the job's steps in the node's namespace (not its slurmd): the node's torchrun and
    ranks die as they would with the machine."""
    pids = subprocess.run(["ip", "netns", "pids", f"slurm-{node}"], capture_output=True, text=True,
                          check=True).stdout.split()
    killed = []
    for pid in map(int, pids):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if f"SLURM_JOB_ID={job}".encode() in environ or f"[{job}.".encode() in cmdline:
            killed.append(pid)
    subprocess.run(["kill", "-9", *map(str, killed)], capture_output=True)
    return killed


def test_a_node_dying_mid_run_fails_the_job_clearly_and_leaves_a_checkpoint_that_resumes(
        slurm_cluster, policy, reference, jobs, tmp_path):
    out = tmp_path / "rl"
    job, log = submit_rl(slurm_cluster, jobs, policy, out, *TWO_NODES, NPROC_PER_NODE="1", REQUEUE_ON_USR1="0")
    wait_for_step(out, job, slurm_cluster, log, step=3)  # the step-2 checkpoint is complete
    assert _kill_job_step_on("node2", job), "no process of the job found on node2"
    state = wait_for_job(slurm_cluster, job, JOB_TIMEOUT, log)
    text = log.read_text()
    assert state == "FAILED", text[-5000:]
    assert "[rl.sh] FAILED: a rank or a node of the job failed" in text, text[-5000:]
    newest = int((out / "checkpoints" / "latest_checkpointed_iteration.txt").read_text())
    assert 2 <= newest < RL_SETTINGS["steps"], newest
    assert f"Newest complete checkpoint: iteration {newest} in {out / 'checkpoints'}" in text
    assert not (out / "DONE").exists()
    # resubmitted as the error says, the run resumes from that checkpoint and ends where the reference did
    job, log = submit_rl(slurm_cluster, jobs, policy, out, *TWO_NODES, NPROC_PER_NODE="1")
    text = completed(slurm_cluster, job, log)
    assert f"[rl] resuming from the checkpoint of step {newest}:" in text and ranks_nodes(text) == ONE_RANK_PER_NODE
    assert metrics(out) == metrics(reference[2])
