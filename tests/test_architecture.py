"""The import rules of docs/architecture.md: which project package may import which."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cli", "megatron_ext", "data_prep", "pipeline", "recipes", "bench")
FORBIDDEN = {
    "cli": {"megatron_ext", "data_prep", "pipeline", "recipes", "bench"},
    "megatron_ext": {"data_prep", "pipeline", "recipes", "bench"},
    "data_prep": {"megatron_ext", "pipeline", "recipes", "bench"},
    "pipeline": {"recipes", "bench"},
    "recipes": {"bench"},
}
ALLOWED = {("data_prep/real_assets.py", "pipeline.rl.grading")}  # the repo's own grader decides what is gradable


def project_imports(path: Path) -> list[str]:
    """Every module of a project package that the file imports, at any depth (function-level imports too)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [name for name in names if name.split(".")[0] in PACKAGES]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_the_architecture_allows(package):
    bad = [f"{path.relative_to(REPO)} imports {name}" for path in sorted((REPO / package).rglob("*.py"))
           for name in project_imports(path)
           if name.split(".")[0] in FORBIDDEN[package] and (str(path.relative_to(REPO)), name) not in ALLOWED]
    assert bad == [], "see docs/architecture.md:\n" + "\n".join(bad)


def test_the_rule_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from pipeline.rl import loss\n    import recipes.tasks\n")
    assert project_imports(source) == ["pipeline.rl", "recipes.tasks"]
