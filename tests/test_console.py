"""The recipe console's log following (recipes/console.py): which lines of a task's raw log reach the user, at
what rate, from which files. The end-to-end view (a real pipeline's console) is in test_recipes.py."""

from __future__ import annotations

import codecs

from recipes.console import LineFilter, TaskLogFollower

# what torchrun's combined log of a 2-rank stage two looks like: rank prefixes, warnings, tqdm's \r redraws
RAW = (
    "I1204 16:32:45.163000 6637 torch/distributed/run.py:747] Using nproc_per_node=2.\n"
    "[default0]:/x/megatron/core/optimizer/__init__.py:24: UserWarning: Apex is not installed.\n"
    "[default1]:[rl] model: 2 layers; layout tp=1 pp=1 dp=2\n"
    "[default0]:Loading weights: 100%|██████████| 272/272 [00:00<00:00, 16547.26it/s]\n"
    "[default0]:Dr. GRPO:   0%|          | 0/4 [00:00<?, ?it/s][default0]:\r"
    "[default0]:Dr. GRPO:  25%|██▌       | 1/4 [00:45<02:15, 45.60s/it, len=29, reward=0.344]\r"
    "[default0]:Dr. GRPO:  50%|█████     | 2/4 [01:15<01:15, 36.35s/it, len=30, reward=0.422]\r"
    "[default0]:Dr. GRPO:  75%|███████▌  | 3/4 [01:43<00:32, 32.65s/it, len=32, reward=0.438]\r"
    "[default0]:Dr. GRPO: 100%|██████████| 4/4 [02:02<00:00, 27.28s/it, len=23, reward=0.453]\r"
    "[default0]:Dr. GRPO: 100%|██████████| 4/4 [02:02<00:00, 27.28s/it, len=23, reward=0.453]\n"
    "[default0]:error: rl.questions: /data/q.jsonl line 3 has no answer\n"
    "[default0]:[rl] done: 4 steps; metrics /out/metrics.jsonl\n"
)
SHOWN = [
    "[rl] model: 2 layers; layout tp=1 pp=1 dp=2",
    "Dr. GRPO: 0% 0/4 [00:00<?, ?it/s]",
    "Dr. GRPO: 50% 2/4 [01:15<01:15, 36.35s/it, len=30, reward=0.422]",
    "Dr. GRPO: 100% 4/4 [02:02<00:00, 27.28s/it, len=23, reward=0.453]",
    "error: rl.questions: /data/q.jsonl line 3 has no answer",
    "[rl] done: 4 steps; metrics /out/metrics.jsonl",
]


class _Clock:
    """One tick per bar drawn: the bars of RAW come 20 s apart."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 20.0
        return self.now


def test_only_tagged_lines_errors_and_a_bar_every_interval_are_shown():
    shown = LineFilter(progress_every_s=30, clock=_Clock()).feed(RAW, final=True)
    assert shown == SHOWN


def test_the_lines_are_the_same_however_the_log_grows():
    for cut in (1, 7, 64, 200):  # the log read in pieces that split lines, prefixes and UTF-8 bar characters
        line_filter = LineFilter(progress_every_s=30, clock=_Clock())
        data = RAW.encode()
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        shown = []
        for start in range(0, len(data), cut):
            shown += line_filter.feed(decoder.decode(data[start:start + cut]))
        shown += line_filter.feed(decoder.decode(b"", final=True), final=True)
        assert shown == SHOWN, cut


def test_follower_names_each_log_file_once_and_prefixes_lines_with_the_task(tmp_path):
    job_dir = tmp_path / "stage2"
    local_log = job_dir / "nemo_run" / "stage2-abc" / "stage2" / "0" / "combined.log"
    local_log.parent.mkdir(parents=True)
    lines = []
    follower = TaskLogFollower(lines.append, progress_every_s=0)
    follower.follow("stage2", job_dir)
    follower.poll()
    assert lines == []  # no log yet: the task has not started
    local_log.write_text("[default0]:[rl] model: 2 layers\n[default0]:[rl] st")
    follower.poll()
    with open(local_log, "a") as f:
        f.write("ep 1\n")
    follower.poll()
    requeued = job_dir / "log--.stage2_61_0.out"  # SLURM's file of the task, e.g. after a requeue
    requeued.write_text("[default0]:[rl] resuming from the checkpoint of step 1\n")
    follower.poll(final=True)
    assert lines == [f"stage2 | log: {local_log}", "stage2 | [rl] model: 2 layers", "stage2 | [rl] step 1",
                     f"stage2 | log: {requeued}", "stage2 | [rl] resuming from the checkpoint of step 1"]
    assert follower.tail("stage2", lines=1) == ["[default0]:[rl] resuming from the checkpoint of step 1"]


def test_a_remote_task_is_announced_with_where_its_logs_are():
    lines = []
    follower = TaskLogFollower(lines.append)
    follower.follow("stage1", "me@login:/lustre/me/nemo_run", remote=True)
    follower.poll()
    follower.poll()
    assert lines == ["stage1 | logs on the cluster under me@login:/lustre/me/nemo_run"]
    assert follower.tail("stage1") == []


def test_the_background_thread_shows_lines_written_while_it_runs(tmp_path):
    log = tmp_path / "data" / "nemo_run" / "data-x" / "data" / "0" / "combined.log"
    log.parent.mkdir(parents=True)
    lines = []
    follower = TaskLogFollower(lines.append, poll_s=0.01)
    follower.follow("data", tmp_path / "data")
    log.write_text("[data] synthetic: 200 documents, 9000 tokens -> /out/tokens/synthetic.bin/.idx\n")
    follower.stop()  # shows what the log gained since the last poll, whether or not the thread saw it
    assert lines == [f"data | log: {log}",
                     "data | [data] synthetic: 200 documents, 9000 tokens -> /out/tokens/synthetic.bin/.idx"]
