"""The paper authors' two graders, ported: sail-sg/understand-r1-zero @ dfca49dd46 (2025-08-27),
``understand_r1_zero/math_grader.py`` (cited below as ``mg.py:LINE``) and ``train_zero_math.py``.

``grade(model_answer, gt_answer, fast)`` (mg.py:990) is ``grade_answer_mathd`` (Hendrycks' string normaliser)
OR ``grade_answer_sympy`` (their ``_normalize`` + element-wise sympy); with ``fast=False`` (their
``verifier_version="math_verify"``) also OR ``is_latex_equal`` (math-verify). The answer comes from
``boxed_reward_fn`` (mg.py:1006: the last ``\\boxed{...}``) or, for the r1 template, ``answer_tag_reward_fn``
(mg.py:1026: strict ``</think> <answer>`` format). This is our own code following those functions; where it
must differ for safety it says so (search "DEVIATION"). Their ``_normalize`` is in ``pipeline.rl.authors_normalize``;
their ``parse_expr`` is replaced by ``pipeline.rl.authors_expr``. ``pipeline.rl.grading.VERIFIERS`` names them.
"""

from __future__ import annotations

import re

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from pipeline.rl.authors_expr import NotReproduced, authors_parse_python
from pipeline.rl.authors_normalize import (_MATHD_WHOLE_TEXT, _OPAQUE, _authors_str_is_int, _authors_strip_commas,
                                           authors_normalize)


AUTHORS_REVISION = "sail-sg/understand-r1-zero@dfca49dd460ee7cc8e4a5a162c876a7fd6993b87"

_BRACES = re.compile(r"[{}]")


def authors_last_boxed_only_string(text: str) -> str | None:
    """mg.py:889 ``last_boxed_only_string``: from the last ``\\boxed`` (``\\fbox`` only when there is no
    ``\\boxed`` at all) up to the ``}`` that first brings the brace depth back to 0, else None."""
    start = text.rfind("\\boxed")
    if start < 0:
        start = text.rfind("\\fbox")
        if start < 0:
            return None
    depth = 0
    for match in _BRACES.finditer(text, start):
        depth += 1 if match.group() == "{" else -1
        if depth == 0 and match.group() == "}":
            return text[start : match.end()]
    return None


def authors_extract_boxed(passage: str) -> str | None:
    """mg.py:984 ``extract_answer`` -> mg.py:927 ``extract_boxed_answer`` -> mg.py:917 ``remove_boxed``.

    Only a passage containing ``\\boxed`` has an answer, so ``\\fbox{7}`` alone gives None; the box must read
    exactly ``\\boxed{...}``, so bare ``\\boxed 7`` gives None; of ``\\boxed{3} ... \\fbox{4}`` it takes 3."""
    if "\\boxed" not in passage:
        return None
    box = authors_last_boxed_only_string(passage)
    if box is None or not (box.startswith("\\boxed{") and box.endswith("}")):
        return None
    return box[len("\\boxed{") : -1]


def authors_answer_tag(response: str) -> str | None:
    """mg.py:1026 ``answer_tag_reward_fn`` (the r1 template): the response must contain ``</think> <answer>``
    and ``</answer>``; the answer is everything after the last ``<answer>`` with every ``</answer>`` removed (not
    stripped); if that holds ``\\boxed``, its box (None when the box cannot be read)."""
    if "</think> <answer>" not in response or "</answer>" not in response:
        return None
    answer = response.rpartition("<answer>")[2].replace("</answer>", "")
    if "\\boxed" in answer:
        return authors_extract_boxed(answer)
    return answer


def authors_response_answer(response: str, template: str) -> str | None:
    """train_zero_math.py:84 ``MATHOracle``: ``answer_tag_reward_fn`` for the r1 template, ``boxed_reward_fn``
    (mg.py:1006) for every other one (their ``qwen_math`` and ``no``, our ``qwen_math`` and ``none``)."""
    return authors_answer_tag(response) if template == "r1" else authors_extract_boxed(response)


def authors_gold(gold: str) -> str | None:
    """mg.py:991 (in ``grade``): a gold answer containing ``\\boxed`` is replaced by its box (None if unreadable)."""
    return authors_extract_boxed(gold) if "\\boxed" in gold else gold


# ---- grade_answer_mathd: Hendrycks' MATH normaliser (mg.py:36 mathd_normalize_answer, mg.py:190 _strip_string)

_MATHD_UNITS = [  # mg.py:52 unit_texts ("units mainly from MathQA"); regex fragments, as in their code
    "east", "degree", "mph", "kmph", "ft", "m sqaure", " m east", "sq m", "deg", "mile", "q .", "monkey", "prime",
    "ratio", "profit of rs", "rd", "o", "gm", "p . m", "lb", "tile", "per", "dm", "lt", "gain", "ab", "way", "west",
    "a .", "b .", "c .", "d .", "e .", "f .", "g .", "h .", "t", "a", "h", "no change", "men", "soldier", "pie", "bc",
    "excess", "st", "inches", "noon", "percent", "by", "gal", "kmh", "c", "acre", "rise", "a . m", "th", "π r 2", "sq",
    "mark", "l", "toy", "coin", "sq . m", "gallon", "° f", "profit", "minw", "yr", "women", "feet", "am", "pm", "hr",
    "cu cm", "square", "v â € ™", "are", "rupee", "rounds", "cubic", "cc", "mtr", "s", "ohm", "number", "kmph", "day",
    "hour", "minute", "min", "second", "man", "woman", "sec", "cube", "mt", "sq inch", "mp", "∏ cm ³", "hectare",
    "more", "sec", "unit", "cu . m", "cm 2", "rs .", "rs", "kg", "g", "month", "km", "m", "cm", "mm", "apple", "liter",
    "loss", "yard", "pure", "year", "increase", "decrease", "d", "less", "Surface", "litre", "pi sq m", "s .", "metre",
    "meter", "inch",
]
_MATHD_UNITS += [unit + "s" for unit in _MATHD_UNITS]  # mg.py:187
_MATHD_UNIT_PATTERNS = [re.compile(r"(^|\W)" + unit + r"($|\W)") for unit in _MATHD_UNITS]
_MATHD_ARRAY_BEGIN = re.compile(r"\\begin\{array\}\{.*?\}")
_MATHD_TRAILING_TEXT = re.compile(r"\\text{.*?}$")


def _mathd_fix_fracs(string: str) -> str:
    """mg.py:191 ``_fix_fracs``: ``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{7}`` -> ``\\frac{1}{7}``. Raises
    IndexError when ``\\frac`` ends the string (their caller then keeps the answer as it was)."""
    parts = string.split("\\frac")
    out = parts[0]
    for part in parts[1:]:
        out += "\\frac"
        if part[0] == "{":
            out += part
        elif len(part) < 2:
            return string
        elif part[1] != "{":
            out += "{" + part[0] + "}{" + part[1] + "}" + part[2:]
        else:
            out += "{" + part[0] + "}" + part[1] + part[2:]
    return out


def _mathd_fix_a_slash_b(string: str) -> str:
    """mg.py:222: ``3/4`` -> ``\\frac{3}{4}`` when both sides are integers written canonically."""
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}" if string == f"{a}/{b}" else string


def _mathd_fix_sqrt(string: str) -> str:
    """mg.py:245: ``\\sqrt3`` -> ``\\sqrt{3}``. Raises IndexError when ``\\sqrt`` ends the string."""
    if "\\sqrt" not in string:
        return string
    parts = string.split("\\sqrt")
    out = parts[0]
    for part in parts[1:]:
        out += "\\sqrt" + (part if part[0] == "{" else "{" + part[0] + "}" + part[1:])
    return out


class _MathdError(Exception):
    pass


def _mathd_strip_string(string: str) -> str:
    """mg.py:190 ``_strip_string``, step by step."""
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = _MATHD_ARRAY_BEGIN.sub(r"\\begin{pmatrix}", string)
    string = string.replace("\\end{array}", "\\end{pmatrix}").replace("bmatrix", "pmatrix")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\neq", "\\ne").replace("\\leq", "\\le").replace("\\geq", "\\ge")
    string = string.replace("\\left", "").replace("\\right", "")
    without_unit = _MATHD_TRAILING_TEXT.sub("", string).strip()
    if without_unit != "" and without_unit != string:
        string = without_unit
    for _ in range(2):
        for pattern in _MATHD_UNIT_PATTERNS:
            without_unit = pattern.sub(r"\1\2", string)
            if without_unit != "":
                string = without_unit
    string = string.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "")
    if "\\text{ " in string:  # _remove_right_units
        parts = string.split("\\text{ ")
        if len(parts) != 2:
            raise _MathdError("their assert")
        string = parts[0]
    string = string.replace("\\%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = _mathd_fix_sqrt(string)
    string = string.replace(" ", "")
    string = _mathd_fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _mathd_fix_a_slash_b(string)


def authors_mathd_normalize(answer: str | None) -> str | None:
    """mg.py:37 ``mathd_normalize_answer``: strip, unwrap a whole ``\\text{...}``, ``_strip_string``; on any
    error inside, the answer as it was at that point."""
    if answer is None:
        return None
    answer = answer.strip()
    try:
        whole = _MATHD_WHOLE_TEXT.search(answer)
        if whole is not None:
            answer = whole.group("text").strip()
        return _mathd_strip_string(answer)
    except (IndexError, _MathdError):
        return answer


def authors_mathd_equal(pred: str | None, gold: str | None) -> bool:
    """mg.py:974 ``grade_answer_mathd``. Pure string work: safe to run outside the worker processes."""
    return authors_mathd_normalize(gold) == authors_mathd_normalize(pred)


# ---- grade_answer_sympy (mg.py:934) and its helpers

_AUTHORS_BAD_SUBSTRINGS = ("^{", "^(")  # mg.py:670 "sympy might hang"
_AUTHORS_BAD_REGEXES = (re.compile(r"\^[0-9]+\^"), re.compile(r"\^[0-9][0-9]+"))
_AUTHORS_FRACTION = re.compile(r"^-?[0-9]+.?/0*[1-9][0-9]*.?$")  # mg.py:720 _is_frac


def _authors_should_allow_eval(expr: str) -> bool:
    """mg.py:840: at most two distinct letters (after removing "sqrt" and "frac"), no ``^{``, ``^(``, ``^12``."""
    letters = {c for c in expr.replace("sqrt", "").replace("frac", "") if c.isalpha()}
    if len(letters) > 2 or any(bad in expr for bad in _AUTHORS_BAD_SUBSTRINGS):
        return False
    return not any(pattern.search(expr) for pattern in _AUTHORS_BAD_REGEXES)


def _authors_equal_under_sympy(gold: str, pred: str) -> bool:
    """mg.py:856 ``are_equal_under_sympy``: ``simplify(parse(f"({gold})-({pred})")) == 0``; any failure is False.

    DEVIATION 2 (safety): their ``_sympy_parse`` hands the text to sympy's ``parse_expr``, which runs ``eval``;
    here ``authors_parse_python`` builds the same sympy objects for numbers, names, ``+ - * / // % **``,
    parentheses, implicit multiplication, ``sqrt(...)``, ``ln(...)``, ``pi``, ``oo``, ``!``. Outside that (other
    sympy functions such as ``re``, ``im``, ``li``, ``csc``; tuples, lists, comparisons, attribute access, repeated
    decimals ``0.[3]``) the step says False where ``eval`` might have said True."""
    expr = f"({gold})-({pred})"
    if not _authors_should_allow_eval(expr):
        return False
    try:
        return sympy.simplify(authors_parse_python(expr.replace("^", "**"))) == 0
    except NotReproduced:
        return False
    except Exception:  # their bare except: sympy raises many types on odd input
        return False


def _authors_split_tuple(expr: str) -> list[str]:
    """mg.py:870 ``split_tuple``: the elements of ``(a,b)`` / ``[a,b)`` / ..., else the whole answer."""
    expr = _authors_strip_commas(expr)
    if len(expr) == 0:
        return []
    if len(expr) > 2 and expr[0] in "()[]" and expr[-1] in "()[]" and not any(c in expr[1:-1] for c in "()[]"):
        return [elem.strip() for elem in expr[1:-1].split(",")]
    return [expr]


def authors_sympy_equal(pred: str, gold: str | None) -> bool:
    """mg.py:934 ``grade_answer_sympy``: ``_normalize`` both; equal strings; else the same tuple shape with equal
    brackets and, element by element, unreduced fractions compared as strings, integer vs non-integer never
    equal, the rest by sympy (in order: ``(1,2)`` vs ``(2,1)`` is not equal).

    DEVIATION 1 (fidelity limit, not safety): their ``_normalize`` converts LaTeX with pylatexenc's latex2text,
    reproduced here for the LaTeX math answers use (``_LatexToText``). An answer using anything else (accents like
    ``\\hat``, ``\\mathbf``, equation environments, ``\\not``) equals only an identical answer in this step, where
    their converter might have made two different spellings equal."""
    gold_n, pred_n = authors_normalize(gold), authors_normalize(pred)
    if gold_n is None:
        return False
    if gold_n == pred_n:
        return True
    if len(pred_n) == 0 or gold_n.startswith(_OPAQUE) or pred_n.startswith(_OPAQUE):
        return False
    gold_elems, pred_elems = _authors_split_tuple(gold_n), _authors_split_tuple(pred_n)
    if len(gold_elems) > 1 and (gold_n[0] != pred_n[0] or gold_n[-1] != pred_n[-1]):
        return False
    if len(gold_elems) != len(pred_elems):
        return False
    for gold_elem, pred_elem in zip(gold_elems, pred_elems):
        if _AUTHORS_FRACTION.search(gold_elem) and _AUTHORS_FRACTION.search(pred_elem):
            equal = gold_elem == pred_elem  # "if fractions aren't reduced, then shouldn't be marked as correct"
        elif _authors_str_is_int(gold_elem) != _authors_str_is_int(pred_elem):
            equal = False
        else:
            equal = _authors_equal_under_sympy(gold_elem, pred_elem)
        if not equal:
            return False
    return True


# ---- is_latex_equal (mg.py:601): their math-verify step, only with verifier_version="math_verify"

def authors_repetitive(text: str) -> bool:
    """mg.py:450 ``repeatness``: the sum of the longest common prefixes of adjacent sorted suffixes, over
    n(n+1)/2, above 0.2 (a degenerate, looping answer)."""
    n = len(text)
    if n <= 1:
        return False
    order = sorted(range(n), key=lambda i: text[i:])
    rank = [0] * n
    for r, i in enumerate(order):
        rank[i] = r
    total, k = 0, 0
    for i in range(n):  # Kasai's LCP
        if rank[i] == n - 1:
            k = 0
            continue
        j = order[rank[i] + 1]
        while i + k < n and j + k < n and text[i + k] == text[j + k]:
            k += 1
        total += k
        k = max(k - 1, 0)
    return total * 2 / (n * (n + 1)) > 0.2


_AUTHORS_MATH_VERIFY_TARGETS = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def _authors_math_verify_parse(text: str) -> list:
    # They pass extraction_mode=["first_match"] (a list); math-verify compares it with == "first_match", so it
    # runs as its default "any_match". parsing_timeout=None: the worker is killed at the deadline instead of
    # their 1 s signal.alarm.
    return parse(text, extraction_config=_AUTHORS_MATH_VERIFY_TARGETS, fallback_mode="no_fallback",
                 extraction_mode="any_match", parsing_timeout=None)


def authors_latex_equal(pred: str, gold: str | None) -> bool:
    """mg.py:601 ``is_latex_equal``: False for a long repetitive answer; ``_normalize`` equality; else
    math-verify on the answers wrapped in ``$...$`` unless they hold a ``$`` (gold first). Errors are False."""
    if gold is None:
        return False
    try:
        if (len(pred) > 128 and authors_repetitive(pred)) or (len(gold) > 128 and authors_repetitive(gold)):
            return False
        gold_n, pred_n = authors_normalize(gold), authors_normalize(pred)
        if gold_n == pred_n:
            return True
        pred_text = pred if "$" in pred else f"${pred}$"
        gold_text = gold if "$" in gold else f"${gold}$"
        return bool(verify(_authors_math_verify_parse(gold_text), _authors_math_verify_parse(pred_text),
                           timeout_seconds=None))
    except Exception:
        return False


def authors_grade(pred: str, gold: str | None, fast: bool) -> bool:
    """mg.py:990 ``grade`` on an extracted answer and an extracted gold answer."""
    if pred is None or gold is None:
        return False
    if authors_mathd_equal(pred, gold) or authors_sympy_equal(pred, gold):
        return True
    return not fast and authors_latex_equal(pred, gold)


