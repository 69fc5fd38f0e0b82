"""How bad input ends a command (cli/errors.py): one `error:` line and exit 2; `--debug` or R1ZERO_DEBUG=1 keeps the
traceback; a bug keeps its traceback always. The per-command bad-input cases are in each command's test module."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cli.errors import DEBUG_ENV, exit_on_bad_input, run_command
from conftest import REPO


def _bad_setting():
    raise ValueError("rl.steps: must be at least 1 (got 0)")


def test_bad_input_is_one_line_and_exit_code_2(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert run_command(_bad_setting, argv=[]) == 2
    assert capsys.readouterr().err == "error: rl.steps: must be at least 1 (got 0)\n"
    assert run_command(lambda: None, argv=[]) == 0 and run_command(lambda: 3, argv=[]) == 3
    assert run_command(lambda: "outputs/rl/hf", argv=[]) == 0  # what a stage returns is not an exit code


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_debug_shows_the_traceback_of_bad_input(monkeypatch, how):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    argv = ["steps=0", "--debug"] if how == "flag" else ["steps=0"]
    if how == "environment":
        monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="rl.steps"):
        run_command(_bad_setting, argv=argv)


def test_a_bug_keeps_its_traceback(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    def bug():
        return {}["missing"]

    with pytest.raises(KeyError):
        run_command(bug, argv=[])


def test_a_recipe_task_exits_2_on_bad_input_and_keeps_its_name(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    @exit_on_bad_input
    def prepare(path: str) -> str:
        """Prepare PATH."""
        if not path:
            raise FileNotFoundError("data.out_dir is empty: set recipe.output_dir")
        return path

    assert prepare("x") == "x"
    assert (prepare.__name__, prepare.__doc__) == ("prepare", "Prepare PATH.")  # NeMo-Run finds the task by name
    with pytest.raises(SystemExit) as stop:
        prepare("")
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: data.out_dir is empty: set recipe.output_dir\n"


@pytest.mark.cli
@pytest.mark.parametrize("command", [["pipeline.rl"], ["pipeline.pretrain"], ["pipeline.eval", "run"],
                                     ["megatron_ext.convert", "megatron-to-hf", "--out", "/tmp/unused"]])
def test_every_command_takes_debug_for_the_traceback(tmp_path, command):
    bad = {"pipeline.rl": ["--config", str(tmp_path / "missing.json")],
           "pipeline.pretrain": ["--config", str(tmp_path / "missing.json")],
           "pipeline.eval": ["--model", str(tmp_path / "missing_model"), "--benchmark", "math500=" + str(tmp_path / "q")],
           "megatron_ext.convert": ["--checkpoint", str(tmp_path / "missing_ckpt")]}[command[0]]
    plain = subprocess.run([sys.executable, "-m", *command, *bad], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    lines = [line for line in plain.stderr.splitlines() if line.startswith("error: ")]
    assert plain.returncode == 2 and len(lines) == 1 and "Traceback" not in plain.stderr, plain.stderr[-2000:]
    assert str(tmp_path) in lines[0]  # it names the path
    debug = subprocess.run([sys.executable, "-m", *command, *bad, "--debug"], cwd=REPO, capture_output=True,
                           text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr, debug.stderr[-2000:]
