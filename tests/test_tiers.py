"""The fast tier (`-m fast`: every test without a process marker) refuses a test that starts a process, naming the
markers; a marked test may start one."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROCESS_MARKERS

pytest_plugins = ["pytester"]

CASES = '''
import subprocess, sys
import pytest

def test_unmarked_starts_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

@pytest.mark.cli
def test_marked_starts_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)

@pytest.mark.workers
@pytest.mark.parametrize("verifier", ["fast", "gpu"])  # parameter ids are keywords, not markers
def test_marked_and_parametrized_with_a_marker_name_starts_a_process(verifier):
    subprocess.run([sys.executable, "-c", "pass"], check=True)

@pytest.mark.parametrize("kind", ["cli"])
def test_unmarked_with_a_process_marker_as_parameter_id_starts_a_process(kind):
    subprocess.run([sys.executable, "-c", "pass"], check=True)

def test_unmarked_computes():
    assert sum(range(4)) == 6
'''


@pytest.mark.cli  # it starts processes itself, checking that the refusal is undone
def test_an_unmarked_test_that_starts_a_process_fails_and_a_marked_one_passes(pytester):
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n" + "".join(f"  {m}: -\n" for m in ("fast", *PROCESS_MARKERS)))
    pytester.makepyfile(test_cases=CASES)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-o", "addopts=")
    result.assert_outcomes(passed=4, failed=2)
    result.stdout.fnmatch_lines(["*test_unmarked_starts_a_process starts a process (*python* -c pass) but carries "
                                 "none of the markers*"])
    result.stdout.fnmatch_lines(["*test_unmarked_with_a_process_marker_as_parameter_id_starts_a_process?cli? starts a "
                                 "process*"])
    assert subprocess.run([sys.executable, "-c", "pass"]).returncode == 0  # the real functions are back


def test_the_markers_pytest_accepts_are_the_fast_tier_and_the_ones_conftest_enforces():
    """pyproject.toml declares the markers (with what each means); conftest enforces PROCESS_MARKERS: a marker
    added to one and not the other would either be refused by pytest or escape the fast tier's check."""
    import tomllib

    declared = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert sorted(m.split(":")[0] for m in declared["markers"]) == sorted(("fast", *PROCESS_MARKERS))
