"""The typed configuration layer (cli/config.py) that stage one, stage two and their CLIs build their configs with:
command-line text read by the field's type, file values checked against it, ranges declared on the field, unknown
names refused with the closest valid one. Each command's own cases are in its test module."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest

from cli.config import apply_overrides, at_least, build, check, load_file


@dataclass
class Section:
    name: str = ""
    workers: int = field(default=1, metadata=at_least(1, "one worker at least"))


@dataclass
class Example:
    steps: int = field(default=10, metadata=at_least(1))
    lr: float = 1e-6
    flag: bool = True
    maybe: bool | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    levels: tuple[int, ...] = ()
    blend: list = field(default_factory=list)
    options: dict = field(default_factory=dict)
    section: Section = field(default_factory=Section)


def _from_cli(*overrides: str, values: dict | None = None) -> Example:
    return build(Example, apply_overrides(dict(values or {}), list(overrides)))


def test_command_line_text_is_read_by_the_fields_type():
    cfg = _from_cli("steps=7", "lr=2e-5", "flag=0", "maybe=true", "betas=[0.8, 0.9]", "levels=[3,4,5]",
                    'blend=["a", "b"]', "options.fused=false", "options.chunk=64", "section.name=123",
                    "section.workers=+4")
    assert cfg == Example(steps=7, lr=2e-5, flag=False, maybe=True, betas=(0.8, 0.9), levels=(3, 4, 5),
                          blend=["a", "b"], options={"fused": False, "chunk": 64}, section=Section("123", 4))
    assert _from_cli("maybe=null").maybe is None and _from_cli("flag=TRUE").flag is True


@pytest.mark.parametrize("override,message", [
    ("flag=yes", "flag='yes' must be true or false"),  # only true/false/1/0
    ("flag=", "flag='' must be true or false"),
    ("steps=2.5", "steps='2.5' must be a whole number"),
    ("steps=ten", "steps='ten' must be a whole number"),
    ("lr=fast", "lr='fast' must be a number"),
    ("betas=[0.9]", "betas=[0.9] must have 2 items"),
    ("levels=[1, \"x\"]", "levels[1]='x' must be a whole number"),
    ("levels=3-5", "levels='3-5' must be JSON here"),
    ("options=[1]", "options=[1] must be an object"),
    ("section.workrs=2", "unknown config field(s) ['section.workrs'] (did you mean 'workers'?)"),
    ("stpes=2", "unknown config field(s) ['stpes'] (did you mean 'steps'?)"),
    ("steps.x=1", "override 'steps.x': 'steps' is not a config section"),
    ("steps", "override 'steps' is not name=value"),
])
def test_bad_command_line_values_name_the_field(override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _from_cli(override, values={"steps": 3})


@pytest.mark.parametrize("values,message", [
    ({"flag": "false"}, "flag='false' must be true or false"),  # a JSON string is not a boolean
    ({"steps": True}, "steps=True must be a whole number"),
    ({"lr": "1e-5"}, "lr='1e-5' must be a number"),
    ({"section": {"name": 5}}, "section.name=5 must be a string"),
    ({"section": "big"}, "config section section must be an object"),
])
def test_file_values_must_already_have_the_fields_type(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build(Example, values)


def test_ranges_are_declared_on_the_field_and_checked_with_the_reason():
    check(Example())
    with pytest.raises(ValueError, match=re.escape("steps=0 must be >= 1")):
        check(_from_cli("steps=0"))
    with pytest.raises(ValueError, match=re.escape("section.workers=0 must be >= 1 (one worker at least)")):
        check(Example(section=Section(workers=0)))
    with pytest.raises(ValueError, match=re.escape("lr='abc' must be a number")):  # configs built in code too
        check(Example(lr="abc"))


def test_config_files_json_and_yaml_with_the_line_of_a_syntax_error(tmp_path):
    (tmp_path / "a.json").write_text('{"steps": 4, "section": {"workers": 2}}')
    (tmp_path / "a.yaml").write_text("steps: 4\nsection:\n  workers: 2\n")
    assert build(Example, load_file(tmp_path / "a.json")) == build(Example, load_file(tmp_path / "a.yaml"))
    (tmp_path / "bad.json").write_text('{\n  "steps": 4,\n  "lr": ,\n}')
    with pytest.raises(ValueError, match=re.escape(f"config file {tmp_path / 'bad.json'} line 3 column 9 is not valid JSON")):
        load_file(tmp_path / "bad.json")
    (tmp_path / "bad.yaml").write_text("steps: 4\nsection: [\n")
    with pytest.raises(ValueError, match=re.escape(f"config file {tmp_path / 'bad.yaml'} line 3 is not valid YAML")):
        load_file(tmp_path / "bad.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold an object of config fields, not list"):
        load_file(tmp_path / "list.json")
    with pytest.raises(ValueError, match="does not exist"):
        load_file(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="is not a file"):
        load_file(tmp_path)
