"""scripts/gpu_check.sh's CPU-side checks (arguments, the wheel folder, CUDA) and bench.gpu_check's argument handling.

The GPU run itself needs the device machine (README "GPU clusters"); everything here runs on a CPU in seconds, and every
refusal must come before anything is installed."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.cli

SCRIPT = REPO / "scripts" / "gpu_check.sh"
HEADER = "# file\tname\tversion\tbytes\tsha256\n"


def make_wheel_folder(root: Path, wheels: dict[str, bytes] | None = None) -> Path:
    """A wheel folder as scripts/gpu_wheels.sh writes it: small stand-in wheels and their MANIFEST.txt."""
    folder = root / "wheels"
    folder.mkdir()
    wheels = wheels if wheels is not None else {"demo_pkg-1.0-py3-none-any.whl": b"not really a zip",
                                                "other-2.0-py3-none-any.whl": b"x" * 1000}
    lines = ["# written by a test\n", "# assumed-present: torch\n", HEADER]
    for name, data in wheels.items():
        (folder / name).write_bytes(data)
        dist, version = name.split("-")[:2]
        lines.append(f"{name}\t{dist}\t{version}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n")
    (folder / "MANIFEST.txt").write_text("".join(lines))
    return folder


def run_script(*args: str, tmp_path: Path, python: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=python or sys.executable, GPU_CHECK_VENV=str(tmp_path / "venv"))
    env.pop("GPU_CHECK_SMOKE", None)
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("gpu_check: error: "), lines[0]
    return lines[0]


def assert_nothing_installed(tmp_path: Path, proc: subprocess.CompletedProcess) -> None:
    assert not (tmp_path / "venv").exists(), "a refusal must come before the venv is made"
    assert "installed" not in proc.stdout


# ---- arguments ------------------------------------------------------------------------------------------------


def test_unknown_argument_exits_2_naming_it(tmp_path):
    proc = run_script("--wheel", "x", tmp_path=tmp_path)
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "unknown argument '--wheel'" in line and "usage: bash scripts/gpu_check.sh" in line
    assert_nothing_installed(tmp_path, proc)


@pytest.mark.parametrize("args", [("--wheels",), ("--out",), ("--wheels", "--skip-install"), ("--out=",)])
def test_flag_without_value_exits_2(tmp_path, args):
    proc = run_script(*args, tmp_path=tmp_path)
    assert proc.returncode == 2
    assert "needs a value" in one_line_error(proc)


def test_help_prints_usage_and_exits_0(tmp_path):
    proc = run_script("--help", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--wheels DIR" in proc.stdout and "--skip-install" in proc.stdout and "gpu_wheels.sh" in proc.stdout


# ---- the wheel folder -----------------------------------------------------------------------------------------


def test_missing_wheel_folder_names_flag_folder_and_fix(tmp_path):
    proc = run_script("--wheels", str(tmp_path / "nowhere"), tmp_path=tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "nowhere" in line and "--wheels" in line and "does not exist" in line
    assert "bash scripts/gpu_wheels.sh" in line
    assert_nothing_installed(tmp_path, proc)


def test_missing_manifest(tmp_path):
    folder = make_wheel_folder(tmp_path)
    (folder / "MANIFEST.txt").unlink()
    proc = run_script("--wheels", str(folder), tmp_path=tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "MANIFEST.txt" in line and "is missing" in line and "gpu_wheels.sh" in line


def test_wheel_listed_but_missing(tmp_path):
    folder = make_wheel_folder(tmp_path)
    (folder / "other-2.0-py3-none-any.whl").unlink()
    proc = run_script("--wheels", str(folder), tmp_path=tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "'other-2.0-py3-none-any.whl'" in line and "missing" in line and "gpu_wheels.sh" in line
    assert_nothing_installed(tmp_path, proc)


def test_wheel_with_wrong_sha256(tmp_path):
    folder = make_wheel_folder(tmp_path)
    (folder / "demo_pkg-1.0-py3-none-any.whl").write_bytes(b"not really a zip, tampered")
    proc = run_script(f"--wheels={folder}", tmp_path=tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "demo_pkg-1.0-py3-none-any.whl" in line and "sha256" in line and "corrupt or replaced" in line
    assert_nothing_installed(tmp_path, proc)


def test_manifest_listing_no_wheels(tmp_path):
    folder = make_wheel_folder(tmp_path, wheels={})
    proc = run_script("--wheels", str(folder), tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "lists no wheels" in one_line_error(proc)


def test_folder_over_64_mib(tmp_path):
    folder = make_wheel_folder(tmp_path)
    with open(folder / "huge-1.0-py3-none-any.whl", "wb") as f:  # a real 65 MiB file (sparse: no disk used)
        f.truncate(65 * 2**20)
    proc = run_script("--wheels", str(folder), tmp_path=tmp_path)
    assert proc.returncode == 1
    line = one_line_error(proc)
    assert "over the 64 MiB" in line and str(folder) in line
    assert_nothing_installed(tmp_path, proc)


def test_folder_just_under_64_mib_passes_the_size_check(tmp_path):
    folder = make_wheel_folder(tmp_path)
    with open(folder / "big-1.0-py3-none-any.whl", "wb") as f:
        f.truncate(63 * 2**20)
    proc = run_script("--wheels", str(folder), tmp_path=tmp_path)
    assert "over the 64 MiB" not in proc.stderr
    assert "2 wheels" in proc.stdout and "sha256 verified" in proc.stdout


# ---- CUDA -----------------------------------------------------------------------------------------------------


def test_no_cuda_is_refused_before_installing_anything(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    folder = make_wheel_folder(tmp_path)
    proc = run_script("--wheels", str(folder), tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "sha256 verified" in proc.stdout  # the wheel folder was fine: CUDA is what stopped it
    line = one_line_error(proc)
    assert "CUDA is not available" in line and "torch.cuda.is_available()" in line and "GPU machine" in line
    assert_nothing_installed(tmp_path, proc)


def test_python_without_torch_is_refused(tmp_path):
    fake = tmp_path / "python-without-torch"
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = run_script("--wheels", str(make_wheel_folder(tmp_path)), tmp_path=tmp_path, python=str(fake))
    assert proc.returncode == 1
    assert "cannot import torch" in one_line_error(proc)
    assert_nothing_installed(tmp_path, proc)


def test_skip_install_does_not_need_the_wheel_folder(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_script("--skip-install", "--wheels", str(tmp_path / "nowhere"), tmp_path=tmp_path)
    assert proc.returncode == 1
    assert "CUDA is not available" in one_line_error(proc)  # got past the (skipped) wheel check


# ---- bench.gpu_check ------------------------------------------------------------------------------------------


def test_gpu_check_help_imports_without_cuda():
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--parts" in proc.stdout and "throughput" in proc.stdout and "--budget-s" in proc.stdout


def test_gpu_check_argument_parsing():
    from bench.gpu_check import PARTS, default_out, parse_args

    args = parse_args([])
    assert args.parts == list(PARTS) and args.out == default_out() and args.out.endswith(".json")
    assert Path(args.out).name.startswith("gpu-") and args.seq == 4096 and args.mbs == 2
    args = parse_args(["--parts", "rl,memory", "--out", "x.json", "--budget-s", "100", "--memory-layers", "4"])
    assert args.parts == ["rl", "memory"] and args.out == "x.json" and args.budget_s == 100 and args.memory_layers == 4
    smoke = parse_args(["--smoke"])
    assert smoke.seq <= 128 and smoke.rl_steps <= 2 and smoke.memory_layers <= 4


@pytest.mark.parametrize("argv", [["--parts", "bogus"], ["--parts", ""], ["--steps", "0"], ["--budget-s", "-1"],
                                  ["--mbs", "two"], ["--no-such-flag"]])
def test_gpu_check_bad_arguments_exit_2(argv, capsys):
    from bench.gpu_check import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_gpu_check_refuses_without_cuda(tmp_path, capsys):
    import torch

    from bench.gpu_check import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["--out", str(tmp_path / "gpu.json")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "gpu.json").exists()


def test_gpu_check_reads_the_gpu_tests_result(tmp_path):
    from bench.gpu_check import TORCH_ENGINE_TEST, _pytest_parts, parse_args

    junit = tmp_path / "pytest.xml"
    junit.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_gpu" name="test_transformer_engine_model_matches_transformers" time="0.01">'
        '<skipped message="transformer-engine is not installed"/></testcase>'
        f'<testcase classname="tests.test_gpu" name="{TORCH_ENGINE_TEST}" time="21.5"/>'
        '</testsuite></testsuites>')
    tests, engine = _pytest_parts(parse_args(["--pytest-exit", "0", "--pytest-junit", str(junit)]))
    assert tests["status"] == "ok" and tests["tests"][TORCH_ENGINE_TEST]["seconds"] == 21.5
    assert tests["tests"]["test_transformer_engine_model_matches_transformers"]["outcome"] == "skipped"
    assert engine["status"] == "ok" and engine["outcome"] == "passed"

    junit.write_text(f'<testsuite><testcase name="{TORCH_ENGINE_TEST}"><failure message="max diff 0.2"/></testcase>'
                     '</testsuite>')
    tests, engine = _pytest_parts(parse_args(["--pytest-exit", "1", "--pytest-junit", str(junit)]))
    assert tests["status"] == "failed" and engine["status"] == "failed" and "0.2" in engine["message"]
    tests, engine = _pytest_parts(parse_args(["--pytest-exit", "124", "--pytest-timed-out"]))
    assert tests["status"] == "timeout" and engine["status"] == "timeout"
    tests, engine = _pytest_parts(parse_args([]))
    assert tests["status"] == engine["status"] == "not_run"
    json.dumps([tests, engine])


def test_memory_plan_step_body_runs_on_real_tensors_as_predicted():
    """bench.memory_plan._step is one body for the fake prediction and the real measurement gpu_check compares it with;
    on a CPU both are MemTracker counts and must agree exactly (stage one's loss and stage two's)."""
    code = """
import json, torch
from bench.memory_plan import Shape, _step
from megatron_ext.distributed import init_distributed
from pipeline.model_presets import build_preset
from pipeline.rl.config import RLConfig
init_distributed()
hf = build_preset("tiny")
rl = RLConfig(max_prompt_tokens=16, max_new_tokens=16, logprob_chunk_tokens=24)
out = {}
for name, shape in {"lm": Shape(hf, 2, 64, torch.float32, "none", "lm"),
                    "policy": Shape(hf, 2, 32, torch.float32, "full", "policy", rl_config=rl)}.items():
    out[name] = [_step(shape, 2, fake=fake) for fake in (True, False)]
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, (fake, real) in json.loads(proc.stdout.strip().splitlines()[-1]).items():
        assert fake == real, name
        assert fake["total_bytes"] > fake["param_bytes"] > 0
