"""Answer extraction shared by gold answers (MATH, GSM8K) and model responses (reward, evaluation).

Pure string scanning: nothing here evaluates or parses model text as code.
"""

from __future__ import annotations

import re

_BOXED_OPENERS = ("\\boxed", "\\fbox")


def last_boxed_content(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces, else None.

    ``\\boxed 5`` (no braces, as some MATH solutions write it) yields ``5``. An unclosed last box yields
    None rather than a truncated answer.
    """
    start = max(text.rfind(opener) for opener in _BOXED_OPENERS)
    if start < 0:
        return None
    i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
    if text.startswith(" ", i):
        match = re.match(r" +([^\s$]+)", text[i:])
        return match.group(1) if match else None
    if not text.startswith("{", i):
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def last_answer_tag_content(text: str) -> str | None:
    """Text after the last ``<answer>``, up to ``</answer>`` when present (R1 template), else None."""
    start = text.rfind("<answer>")
    if start < 0:
        return None
    body = text[start + len("<answer>") :]
    end = body.find("</answer>")
    return (body if end < 0 else body[:end]).strip()


_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.MULTILINE)


def gsm8k_gold_answer(solution: str) -> str | None:
    """The ``#### n`` final answer of a GSM8K solution, thousands separators removed."""
    matches = _GSM8K_FINAL.findall(solution)
    if not matches:
        return None
    return matches[-1].replace(",", "").strip()
