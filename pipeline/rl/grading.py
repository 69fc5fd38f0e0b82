"""Math answer verifiers: which answer a response gives, and whether it equals the gold answer.

``VERIFIERS`` (at the end) names three: ``"fast"`` and ``"math_verify"``, ports of the paper authors' two
graders (their ``verifier_version``, sail-sg/understand-r1-zero ``math_grader.py``), and ``"lenient"``, this
project's own grader, described first below. ``get_verifier(name)``; the default is ``DEFAULT_VERIFIER``.

The lenient grader: normalised string match, sympy equivalence, math-verify.
Everything here runs on *extracted* answers (the text of the last ``\\boxed{}`` or ``<answer>`` tag) and has no
time limit of its own: ``pipeline.rl.reward`` calls it inside worker processes that it kills at a deadline.
Nothing evaluates model text as code. The sympy stage parses with the small recursive-descent parser below
(numbers, ``+ - * / ^``, parentheses, single-letter symbols, ``sqrt``, ``pi``, ``oo``), which builds sympy
objects directly; math-verify parses LaTeX with its ANTLR grammar and plain expressions only after its own
regex has restricted them to digits and operators.

Normalisation follows the authors' grader (sail-sg/understand-r1-zero ``math_grader.py``, itself after
Hendrycks' MATH and Minerva): ``\\dfrac`` -> ``\\frac``, ``\\left``/``\\right`` dropped, trailing units and
``\\text{...}`` dropped, degrees / percent / dollar signs dropped, a short ``x =`` prefix dropped, ``\\sqrt3``
and ``\\frac12`` braced, ``a/b`` -> ``\\frac{a}{b}``, spaces removed, lower case.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from data_prep.answers import last_boxed_content
from data_prep.templates import get_template

logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every unparseable answer


class Unparseable(ValueError):
    """The sympy stage cannot read this answer; a non-match for that stage, not a grading failure."""


# ---------------------------------------------------------------------------------------------- normalisation

_REPLACEMENTS = (
    ("\n", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\:", ""), ("\\qquad", " "), ("\\quad", " "),
    ("\\ ", " "), ("~", " "), ("\\displaystyle", ""), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"),
    ("\\leq", "\\le"), ("\\geq", "\\ge"), ("\\neq", "\\ne"), ("\\mbox", "\\text"), ("\\textbf", "\\text"),
    ("\\textrm", "\\text"), ("\\mathrm", "\\text"), ("\\mathbf", "\\text"), ("^{\\circ}", ""), ("^\\circ", ""),
    ("\\circ", ""), ("\\degree", ""), ("°", ""), ("\\%", ""), ("%", ""), ("\\$", ""), ("$", ""), ("{,}", ""),
    ("bmatrix", "pmatrix"), ("\\dots", ""), ("\\ldots", ""),
)
_SIZED_DELIMITERS = re.compile(r"\\(?:left|right|[Bb]igg?[lr]?)(?![a-zA-Z])\.?")
_ARRAY_BEGIN = re.compile(r"\\begin\{array\}\{[^{}]*\}")
_WHOLE_TEXT = re.compile(r"^\\text\{([^{}]*)\}$")
_TRAILING_TEXT = re.compile(r"\\text\{[^{}]*\}$")
_TEXT = re.compile(r"\\text\{([^{}]*)\}")
_UNITS = (
    "cm|mm|km|kg|mph|ft|feet|foot|inch|inches|yards?|miles?|meters?|metres?|centimeters?|kilometers?|"
    "millimeters?|square|sq|units?|degrees?|dollars?|cents?|hours?|minutes?|seconds?|days?|weeks?|months?|"
    "years?|grams?|kilograms?|pounds?|ounces?|liters?|litres?|gallons?|people|students|ways|points"
)
_TRAILING_UNIT = re.compile(r"^(.*?[\d)}])\s*(?:(?:" + _UNITS + r")\b\s*)+(?:\^\{?[23]\}?)?\.?$", re.IGNORECASE)
_LHS_ASSIGNMENT = re.compile(r"^[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?\s*(?:=|\\in(?![a-zA-Z]))\s*(.+)$")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d|[a-zA-Z](?![a-zA-Z]))")
_FRAC_SHORT = (
    (re.compile(r"\\frac\s*(\d)\s*(\d)"), r"\\frac{\1}{\2}"),
    (re.compile(r"\\frac\s*(\d)\s*\{"), r"\\frac{\1}{"),
    (re.compile(r"\\frac\{([^{}]*)\}\s*(\d)"), r"\\frac{\1}{\2}"),
)
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SLASH_FRACTION = re.compile(r"^(-?)(\d+)/(\d+)$")
_DECIMAL = re.compile(r"^(-?)(\d*)(?:\.(\d*))?$")


def _strip_math_delimiters(s: str) -> str:
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left) : len(s) - len(right)].strip()
    return s


def _canonical_number(s: str) -> str:
    """``-0.50`` -> ``-0.5``, ``3.00`` -> ``3``, ``.5`` -> ``0.5``, ``007`` -> ``7``; other strings unchanged."""
    match = _DECIMAL.match(s)
    if match is None or not (match.group(2) or match.group(3)):
        return s
    sign, whole, frac = match.group(1), match.group(2).lstrip("0") or "0", (match.group(3) or "").rstrip("0")
    number = whole + ("." + frac if frac else "")
    return "0" if number == "0" else sign + number


def _unwrap_braces(s: str) -> str:
    """``{{x}}`` -> ``x``: drop outer brace pairs that enclose the whole string (one linear pass)."""
    closer_of: dict[int, int] = {}
    stack: list[int] = []
    for i, ch in enumerate(s):
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            closer_of[stack.pop()] = i
    levels = 0
    while levels < len(s) // 2 and closer_of.get(levels) == len(s) - 1 - levels:
        levels += 1
    return s[levels : len(s) - levels]


def normalize_answer(answer: str) -> str:
    """Canonical string of an answer, for exact comparison (linear-time string work only)."""
    s = _strip_math_delimiters(answer.strip())
    for old, new in _REPLACEMENTS:
        s = s.replace(old, new)
    s = _SIZED_DELIMITERS.sub("", s)
    s = _ARRAY_BEGIN.sub(r"\\begin{pmatrix}", s).replace("\\end{array}", "\\end{pmatrix}").strip()
    whole_text = _WHOLE_TEXT.match(s)
    if whole_text:
        s = whole_text.group(1).strip()
    without_unit = _TRAILING_TEXT.sub("", s).strip()
    if without_unit:
        s = without_unit
    s = _TEXT.sub(r"\1", s).strip()
    unit = _TRAILING_UNIT.match(s)
    if unit:
        s = unit.group(1).strip()
    assignment = _LHS_ASSIGNMENT.match(s)
    if assignment and "=" not in assignment.group(1):
        s = assignment.group(1)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    for pattern, replacement in _FRAC_SHORT:
        s = pattern.sub(replacement, s)
    s = "".join(s.split())
    s = _unwrap_braces(s)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    s = s[:-1] if s.endswith(".") else s
    s = _canonical_number(s)
    s = _SLASH_FRACTION.sub(r"\1\\frac{\2}{\3}", s)
    return s.lower()


# ------------------------------------------------------------------------------------------------ sympy stage

MAX_SYMPY_CHARS = 400
"""Longer normalised answers skip the sympy stage (math-verify still sees them)."""
MAX_EXPONENT = 1000
"""A numeric exponent above this makes the answer Unparseable: ``9^{9^9}`` must not be expanded."""
MAX_DEPTH = 60
MAX_TOKENS = 600
MAX_ELEMENTS = 32


def _brace_group(s: str, start: int, opener: str = "{", closer: str = "}") -> int:
    """Index just past the group opened at ``s[start]``; Unparseable if it is not an opener or never closes."""
    if start >= len(s) or s[start] != opener:
        raise Unparseable(f"expected {opener!r} at {start}")
    depth = 0
    for i in range(start, len(s)):
        depth += s[i] == opener
        depth -= s[i] == closer
        if depth == 0:
            return i + 1
    raise Unparseable("unbalanced braces")


def latex_to_plain(canon: str) -> str:
    """``\\frac{a}{b}`` -> ``((a)/(b))``, ``\\sqrt[n]{a}`` -> ``((a)^(1/(n)))``, braces -> parentheses, ..."""
    s = canon
    for command in ("\\frac", "\\sqrt"):
        while (at := s.find(command)) >= 0:
            i = at + len(command)
            if command == "\\frac":
                mid = _brace_group(s, i)
                end = _brace_group(s, mid)
                s = f"{s[:at]}(({s[i + 1 : mid - 1]})/({s[mid + 1 : end - 1]})){s[end:]}"
            elif s.startswith("[", i):
                mid = _brace_group(s, i, "[", "]")
                end = _brace_group(s, mid)
                s = f"{s[:at]}(({s[mid + 1 : end - 1]})^(1/({s[i + 1 : mid - 1]}))){s[end:]}"
            else:
                end = _brace_group(s, i)
                s = f"{s[:at]}sqrt({s[i + 1 : end - 1]}){s[end:]}"
    for old, new in (("\\pi", "pi"), ("\\infty", "oo"), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"),
                     ("{", "("), ("}", ")"), ("**", "^")):
        s = s.replace(old, new)
    if "\\" in s:
        raise Unparseable("LaTeX command the sympy stage does not read")
    return s


_TOKEN = re.compile(r"\s*(\d+\.?\d*|\.\d+|sqrt|pi|oo|[a-z]|[-+*/^()])")


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise Unparseable(f"character {text[pos]!r} outside the sympy stage's alphabet")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


class _Parser:
    """expr := term (+|- term)*; term := unary ((*|/)? unary)*; unary := (+|-) unary | power;
    power := atom (^ unary)?; atom := number | letter | pi | oo | sqrt atom | ( expr )."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise Unparseable("unexpected end of expression")
        self.pos += 1
        return token

    def parse(self) -> sympy.Expr:
        value = self.expr()
        if self.peek() is not None:
            raise Unparseable(f"unexpected {self.peek()!r}")
        return value

    def expr(self) -> sympy.Expr:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unparseable("expression nested too deeply")
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        self.depth -= 1
        return value

    def term(self) -> sympy.Expr:
        value = self.unary()
        while (token := self.peek()) is not None and token not in ("+", "-", ")", "^"):
            if token in ("*", "/"):
                self.take()
                value = value * self.unary() if token == "*" else value / self.unary()
            else:  # implicit multiplication: 2x, 2\sqrt{2}, (a)(b)
                value = value * self.unary()
        return value

    def unary(self) -> sympy.Expr:
        if self.peek() in ("+", "-"):
            return -self.unary() if self.take() == "-" else self.unary()
        return self.power()

    def power(self) -> sympy.Expr:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take()
        exponent = self.unary()
        if exponent.is_number and not (exponent.is_finite and abs(exponent) <= MAX_EXPONENT):
            raise Unparseable("exponent too large (or not finite) to compare symbolically")
        return base**exponent

    def atom(self) -> sympy.Expr:
        token = self.take()
        if token == "(":
            value = self.expr()
            if self.take() != ")":
                raise Unparseable("unbalanced parentheses")
            return value
        if token == "sqrt":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise Unparseable("expression nested too deeply")
            return sympy.sqrt(self.atom())
        if token == "pi":
            return sympy.pi
        if token == "oo":
            return sympy.oo
        if token[0].isdigit() or token[0] == ".":
            if len(token) > 60:
                raise Unparseable("number too long")
            return sympy.Rational(token)
        if token.isalpha():
            return sympy.Symbol(token)
        raise Unparseable(f"unexpected {token!r}")


def parse_plain(text: str) -> sympy.Expr:
    """Sympy expression of a plain-math string; Unparseable for anything outside the small grammar."""
    tokens = _tokenize(text)
    if len(tokens) > MAX_TOKENS:
        raise Unparseable("expression too long for the sympy stage")
    return _Parser(tokens).parse()


def _split_top_level(s: str, separator: str) -> list[str]:
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        ch = s[i]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(separator, i):
            parts.append(s[start:i])
            start = i + len(separator)
            i = start
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _structure(canon: str) -> tuple[str, list[str]]:
    """(kind, elements): a set ``\\{..\\}``, a tuple / interval (kind = its brackets), a union, a bare list,
    or a scalar."""
    if canon.startswith("\\{") and canon.endswith("\\}"):
        return "set", _split_top_level(canon[2:-2], ",")
    union = _split_top_level(canon, "\\cup")
    if len(union) > 1:
        return "union", union
    if len(canon) >= 2 and canon[0] in "([" and canon[-1] in ")]":
        inner = canon[1:-1]
        elements = _split_top_level(inner, ",")
        if len(elements) > 1 and inner.count("(") == inner.count(")") and inner.count("[") == inner.count("]"):
            return canon[0] + canon[-1], elements
    elements = _split_top_level(canon, ",")
    return ("list", elements) if len(elements) > 1 else ("scalar", [canon])


def _scalar_equal(pred: str, gold: str) -> bool:
    if pred == gold:
        return True
    a, b = parse_plain(latex_to_plain(pred)), parse_plain(latex_to_plain(gold))
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:  # exact numbers: already decided, skip simplify
        return False
    if a.has(sympy.oo, -sympy.oo, sympy.zoo) or b.has(sympy.oo, -sympy.oo, sympy.zoo):
        return False
    return sympy.simplify(a - b) == 0


def _safe_scalar_equal(pred: str, gold: str) -> bool:
    try:
        return _scalar_equal(pred, gold)
    except Unparseable:
        return False


def sympy_equal(pred: str, gold: str) -> bool:
    """Equivalence of two answers under sympy, element-wise for tuples / intervals, unordered for sets and lists."""
    pred_canon, gold_canon = normalize_answer(pred), normalize_answer(gold)
    if max(len(pred_canon), len(gold_canon)) > MAX_SYMPY_CHARS:
        raise Unparseable("answer too long for the sympy stage")
    pred_kind, pred_elems = _structure(pred_canon)
    gold_kind, gold_elems = _structure(gold_canon)
    if pred_kind != gold_kind or len(pred_elems) != len(gold_elems) or len(gold_elems) > MAX_ELEMENTS:
        return False
    if gold_kind in ("set", "list"):
        unmatched = list(pred_elems)
        for gold_elem in gold_elems:
            hit = next((i for i, p in enumerate(unmatched) if _safe_scalar_equal(p, gold_elem)), None)
            if hit is None:
                return False
            unmatched.pop(hit)
        return True
    if gold_kind == "scalar":
        return _scalar_equal(pred_elems[0], gold_elems[0])
    return all(_safe_scalar_equal(p, g) for p, g in zip(pred_elems, gold_elems))


# ------------------------------------------------------------------------------------------ math-verify stage

_MATH_VERIFY_TARGETS = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())


def _math_verify_parse(answer: str) -> list:
    text = answer if "$" in answer else f"${answer}$"
    # parsing_timeout=None: no signal.alarm; the worker process is killed at the deadline instead.
    return parse(text, extraction_config=_MATH_VERIFY_TARGETS, fallback_mode="no_fallback",
                 extraction_mode="first_match", parsing_timeout=None)


def math_verify_equal(pred: str, gold: str) -> bool:
    """math-verify's verdict on the raw extracted answers (gold first: its comparison is not symmetric)."""
    gold_parsed = _math_verify_parse(gold)
    if not gold_parsed:
        return False
    return bool(verify(gold_parsed, _math_verify_parse(pred), timeout_seconds=None))


# ---------------------------------------------------------------------------------------------------- grading

EQUIVALENCE_STAGES: dict[str, Callable[[str, str], bool]] = {
    "sympy": sympy_equal,
    "math_verify": math_verify_equal,
}
"""Checks tried, in order, after the normalised string match; the first that says equal wins."""


def check_stages(stages: tuple[str, ...]) -> None:
    unknown = [name for name in stages if name not in EQUIVALENCE_STAGES]
    if unknown:
        raise ValueError(f"unknown grading stage(s) {unknown}; valid names: {sorted(EQUIVALENCE_STAGES)}")


def is_equivalent(pred: str, gold: str, stages: tuple[str, ...] = tuple(EQUIVALENCE_STAGES)) -> tuple[bool, list[str]]:
    """(equal, errors): normalised string match, then each stage. ``errors`` names stages that raised
    something other than Unparseable; a caller counts those as grading failures when nothing matched."""
    pred_canon = normalize_answer(pred)
    if not pred_canon:
        return False, []
    if pred_canon == normalize_answer(gold):
        return True, []
    errors = []
    for name in stages:
        try:
            if EQUIVALENCE_STAGES[name](pred, gold):
                return True, errors
        except Unparseable:
            continue
        except Exception as error:  # sympy and math-verify raise many types on odd input
            errors.append(f"{name}: {type(error).__name__}: {str(error)[:200]}")
    return False, errors


# ================================================================================================================
# The authors' graders, ported: sail-sg/understand-r1-zero @ dfca49dd46 (2025-08-27),
# ``understand_r1_zero/math_grader.py`` (cited below as ``mg.py:LINE``) and ``train_zero_math.py``.
#
# ``grade(model_answer, gt_answer, fast)`` (mg.py:990) is ``grade_answer_mathd`` (Hendrycks' string normaliser)
# OR ``grade_answer_sympy`` (their ``_normalize`` + element-wise sympy); with ``fast=False`` (their
# ``verifier_version="math_verify"``) also OR ``is_latex_equal`` (math-verify). The answer comes from
# ``boxed_reward_fn`` (mg.py:1006: the last ``\boxed{...}``) or, for the r1 template, ``answer_tag_reward_fn``
# (mg.py:1026: strict ``</think> <answer>`` format). This is our own code following those functions; where it
# must differ for safety it says so (search "DEVIATION").
# ================================================================================================================

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
_MATHD_WHOLE_TEXT = re.compile("^\\\\text\\{(?P<text>.+?)\\}$")
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


# ---- their _normalize (mg.py:760), with a reproduction of pylatexenc 2.10's latex2text (their _parse_latex)

class _Opaque(Exception):
    """A LaTeX construct outside the part of pylatexenc 2.10's ``latex2text`` reproduced here."""


_L2T_SYMBOLS: dict[str, str] = dict(item.split("=", 1) for item in (
    # name=text exactly as pylatexenc 2.10's default latex2text specs give them (checked against pylatexenc).
    "alpha=α beta=β gamma=γ delta=δ epsilon=ϵ varepsilon=ε zeta=ζ eta=η theta=θ vartheta=ϑ iota=ι kappa=κ "
    "lambda=λ mu=μ nu=ν xi=ξ omicron=ο pi=π varpi=ϖ rho=ρ varrho=ϱ sigma=σ varsigma=ς tau=τ upsilon=υ phi=ϕ "
    "varphi=φ chi=χ psi=ψ omega=ω Gamma=Γ Delta=Δ Theta=Θ Lambda=Λ Xi=Ξ Pi=Π Sigma=Σ Upsilon=Υ Phi=Φ Psi=Ψ Omega=Ω "
    "infty=∞ pm=± mp=∓ times=× cdot=· div=÷ ast=∗ star=⋆ circ=∘ bullet=∙ le=≤ ge=≥ leq=≤ geq=≥ leqslant=⩽ "
    "geqslant=⩾ neq=≠ approx=≈ sim=∼ simeq=≃ cong=≅ equiv=≡ propto=∝ in=∈ notin=∉ ni=∋ subset=⊂ supset=⊃ "
    "subseteq=⊆ supseteq=⊇ subsetneq=⊊ cup=∪ cap=∩ setminus=∖ emptyset=∅ varnothing=∅ forall=∀ exists=∃ "
    "nexists=∄ partial=∂ nabla=∇ to=→ rightarrow=→ leftarrow=← Rightarrow=⇒ Leftarrow=⇐ leftrightarrow=↔ "
    "Leftrightarrow=⇔ mapsto=↦ uparrow=↑ downarrow=↓ ldots=… cdots=⋯ vdots=⋮ ddots=⋱ dots=… dotsc=… dotsb=… "
    "dotsm=… angle=∠ measuredangle=∡ square=□ perp=⊥ parallel=∥ mid=| nmid=∤ vert=| lvert=| rvert=| Vert=‖ "
    "lVert=‖ rVert=‖ lfloor=⌊ rfloor=⌋ lceil=⌈ rceil=⌉ langle=⟨ rangle=⟩ ll=≪ gg=≫ prime=' sin=sin cos=cos "
    "tan=tan arcsin=arcsin arccos=arccos arctan=arctan sinh=sinh cosh=cosh tanh=tanh ln=ln log=log exp=exp "
    "max=max min=min sup=sup inf=inf lim=lim sum=∑ prod=∏ coprod=∐ int=∫ iint=∬ iiint=∭ oint=∮ hbar=ħ ell=ℓ "
    "aleph=ℵ wp=℘ lnot=¬ wedge=∧ vee=∨ oplus=⊕ otimes=⊗ odot=⊙ vdash=⊢ top=⊤ flat=♭ sharp=♯ natural=♮ dagger=† "
    "textdegree=° textperthousand=‰"
).split())
_L2T_SYMBOLS.update({"quad": "  ", "qquad": "    ", "limsup": "lim sup", "liminf": "lim inf"})
_L2T_NOT_REPRODUCED = frozenset((
    # The other names pylatexenc 2.10 defines (besides ~175 Cyrillic letters \cyr..., \CYR...): kept opaque.
    "AA AE Alpha Angle Beta Bumpeq Cap Chi Citealp Citealt Citeauthor Citep Citet Colon Cref Cup DH DJ "
    "DeclareMathOperator Digamma DownArrowBar DownArrowUpArrow DownLeftRightVector DownLeftTeeVector "
    "DownLeftVectorBar DownRightTeeVector DownRightVectorBar Downarrow Epsilon Equal Eta H IJ Ident Iota Kappa Koppa "
    "L LeftDownTeeVector LeftDownVectorBar LeftRightVector LeftTeeVector LeftTriangleBar LeftUpDownVector "
    "LeftUpTeeVector LeftUpVectorBar LeftVectorBar Lleftarrow Longleftarrow Longleftrightarrow Longrightarrow Lsh Mu "
    "NG NestedGreaterGreater NestedLessLess Nu O OE Omicron RequirePackage ReverseUpEquilibrium Rho "
    "RightDownTeeVector RightDownVectorBar RightTeeVector RightTriangleBar RightUpDownVector RightUpTeeVector "
    "RightUpVectorBar RightVectorBar RoundImplies Rrightarrow Rsh RuleDelayed Sampi Stigma Subset Supset TH Tau "
    "UebungAttachedSolutionTitle UebungAttachedSolutionTitleFont UebungAttachedSolutionTitleTop UebungDueBy "
    "UebungDueByLabel UebungExTitleFont UebungHinweisFont UebungHinweisLabel UebungHinweiseLabel UebungLabel "
    "UebungLabelEnum UebungLabelEnumSub UebungLanguage UebungLecture UebungLecturer UebungLoesungFont UebungLogoFile "
    "UebungProf UebungSemester UebungSolEquationLabel UebungSolLabel UebungStyle UebungSubExTitleFont UebungSubLabel "
    "UebungTextAttachedSolution UebungTipsEquationLabel UebungTipsFont UebungTipsLabel UebungTitleCenterVSpacing "
    "UebungsblattNumber UebungsblattTitleFont UebungsblattTitleSeries UebungsblattTitleSolutions "
    "UebungsblattTitleTips UpArrowBar UpEquilibrium Uparrow Updownarrow VDash Vdash Vvdash Zeta aa acute addcounter "
    "addlength ae allequal amalg approxeq approxnotequal aquarius arccosh arcsinh arctanh aries arrowwaveleft "
    "arrowwaveright asymp author autoref b backepsilon backprime backsim backsimeq backslash bar barwedge because "
    "beth between bibliography bigcap bigcirc bigcup bigoplus bigotimes bigtriangledown bigtriangleup bigvee bigwedge "
    "blacklozenge blacksquare blacktriangle blacktriangledown blacktriangleleft blacktriangleright bowtie boxdot "
    "boxframe boxminus boxplus boxtimes bra braket breve bumpeq c cancer capricornus chapter check circeq "
    "circlearrowleft circlearrowright circledS circledast circledcirc circleddash cite citealp citealt citeauthor "
    "citefullauthor citenum citep citepalias citet citetalias citetext citeyear citeyearpar clockoint clwintegral "
    "color colorbox colorlet complement cref curlyeqprec curlyeqsucc curlyvee curlywedge curvearrowleft "
    "curvearrowright d dag daleth dashv date dblarrowupdown ddddot dddot ddot defcitealias definecolor dh diagup "
    "diamond digamma divideontimes dj documentclass dot doteq doteqdot dotplus dotsi dotso downdownarrows "
    "downharpoonleft downharpoonright downslopeellipsis eighthnote enskip eqcirc eqref eqslantgtr eqslantless "
    "estimates eth exenumfulllabel exercise fallingdotseq fcolorbox footnote forcesextra frown gemini geqq gimel "
    "gnapprox gneq gneqq gnsim grave greaterequivlnt gtrapprox gtrdot gtreqless gtreqqless gtrless gtrsim "
    "guillemotleft guillemotright guilsinglleft guilsinglright hat hermitconjmatrix hint hints hinweis hinweise "
    "homothetic hookleftarrow hookrightarrow href hslash hypersetup i id iddots ij image include includegraphics "
    "input intercal item j jupiter k ket ketbra keywords l lazysinv lbrace leftarrowtail leftharpoondown "
    "leftharpoonup leftleftarrows leftrightarrows leftrightharpoons leftrightsquigarrow leftthreetimes leo leqq "
    "lessapprox lessdot lesseqgtr lesseqqgtr lessequivlnt lessgtr lesssim libra llcorner lmoustache lnapprox lneq "
    "lneqq lnsim longleftarrow longleftrightarrow longmapsto longrightarrow looparrowleft looparrowright lozenge "
    "lrcorner ltimes maketitle male mathbb mathbf mathcal mathfrak mathit mathscr mathsf mathtt mercury mho multimap "
    "nLeftarrow nLeftrightarrow nRightarrow nVDash nVdash nearrow neptune newcommand newenvironment ng ngeq ngtr "
    "nleftarrow nleftrightarrow nleq nless nolinebreak nopagecolor not notgreaterless notlessgreater nparallel nprec "
    "nrightarrow nsubseteq nsucc nsupseteq ntriangleleft ntrianglelefteq ntriangleright ntrianglerighteq nvDash "
    "nvdash nwarrow o oe ominus openbracketleft openbracketright original oslash pagagraph pagecolor paragraph part "
    "pdfloesung pdfsolution perspcorrespond pisces pitchfork pluto prec precapprox preccurlyeq precedesnotsimilar "
    "preceq precnapprox precneqq precsim providecolor providecommand provideenvironment quarternote quotedblbase "
    "quotesinglbase r rbrace recorder ref renewcommand renewenvironment rightangle rightanglearc rightarrowtail "
    "rightharpoondown rightharpoonup rightleftarrows rightleftharpoons rightmoon rightrightarrows rightsquigarrow "
    "rightthreetimes risingdotseq rmoustache rowcolors rtimes sagittarius saturn scorpio searrow section "
    "selectlanguage setcounter setlength smallsetminus smile sphericalangle sqcap sqcup sqrint sqsubset sqsubseteq "
    "sqsupset sqsupseteq ss starequal subexercise subparagraph subsection subseteqq subsetneqq subsubsection "
    "subuebung succ succapprox succcurlyeq succeq succnapprox succneqq succnsim succsim supseteqq supsetneq "
    "supsetneqq surd surfintegral swarrow taurus texorpdfstring textTheta textacutedbl textasciiacute textasciibreve "
    "textasciicaron textasciicircum textasciidieresis textasciigrave textasciimacron textasciitilde "
    "textasteriskcentered textbackslash textbaht textbigcircle textblank textbrokenbar textbullet textcelsius "
    "textcent textcircledP textcolonmonetary textcolor textcompwordmark textcopyright textcurrency textdagger "
    "textdaggerdbl textdiscount textdiv textdollar textdong textdoublepipe textdownarrow textellipsis textemdash "
    "textendash textestimated texteuro textexclamdown textflorin textfrac textfractionsolidus textglotstop texthvlig "
    "textinterrobang textlangle textleftarrow textlira textlnot textmho textmp textmu textmusicalnote textnaira "
    "textnrleg textnumero textohm textonehalf textonequarter textonesuperior textopenbullet textordfeminine "
    "textordmasculine textparagraph textperiodcentered textpertenthousand textpeso textphi textpm textquestiondown "
    "textquotedblleft textquotedblright textquoteleft textquoteright textquotesingle textrangle textrecipe "
    "textreferencemark textregistered textrightarrow textschwa textsection textservicemark textsterling texttheta "
    "textthreequarters textthreesuperior texttildelow texttimes texttrademark textturnk texttwosuperior textuparrow "
    "textvartheta textvisiblespace textwon textyen th therefore tilde tildetrpl title today triangledown triangleleft "
    "trianglelefteq triangleq triangleright trianglerighteq truestate twoheadleftarrow twoheadrightarrow u udots "
    "uebung ulcorner updownarrow upharpoonleft upharpoonright uplus upslopeellipsis upuparrows uranus urcorner url "
    "usepackage v varkappa varperspcorrespond vartriangle vartriangleleft vartriangleright vec veebar venus verb "
    "verymuchgreater verymuchless virgo volintegral wr xleftarrow xrightarrow"
).split())
# Macros that take arguments: (pylatexenc walker argspec, latex2text rendering: "join" = the arguments' text,
# "drop" = nothing, else a %-format over the arguments).
_L2T_ARG_MACROS: dict[str, tuple[str, str]] = {
    "frac": ("{{", "%s/%s"), "nicefrac": ("{{", "%s/%s"), "sqrt": ("[{", "√(%(2)s)"),
    **{name: ("{", "join") for name in ("text", "textrm", "textit", "textbf", "textsc", "textsl", "emph", "mathrm")},
    **{name: ("{", "drop") for name in ("textmd", "textsf", "texttt", "textup", "mbox", "label", "ensuremath")},
    **{name: ("{", "%s") for name in (
        "overline underline widehat widetilde wideparen overleftarrow overrightarrow overleftrightarrow "
        "underleftarrow underrightarrow underleftrightarrow overbrace underbrace overgroup undergroup overbracket "
        "underbracket overlinesegment underlinesegment overleftharpoon overrightharpoon").split()},
    "hspace": ("*{", ""), "vspace": ("*{", "\n"), "hphantom": ("[{", "drop"), "vphantom": ("[{", "drop"),
    "\\": ("*[", "\n"),
}
_L2T_NONALPHA = {",": " ", ";": " ", ":": " ", " ": " ", "!": "", "&": "&", "$": "$", "{": "{", "}": "}", "#": "#",
                 "_": "_", "%": "%", "-": "\xad"}
_L2T_ACCENTS = frozenset("'`\"^~=.")  # accent macros: rendered with combining characters; not reproduced
_L2T_SPECIALS = (("---", "—"), ("--", "–"), ("``", "“"), ("''", "”"), ("!`", "¡"), ("?`", "¿"), ("&", "   "),
                 ("~", "\xa0"))
_L2T_MATRIX_ENVS = frozenset(("array", "pmatrix", "bmatrix", "smallmatrix", "psmallmatrix", "bsmallmatrix"))
_L2T_MAX_DEPTH = 50
_L2T_ENV_NAME = re.compile(r"\s*\{([\w* ._-]+)\}")


class _LatexToText:
    """pylatexenc 2.10 ``LatexNodes2Text().latex_to_text`` for the constructs math answers use; anything else
    raises _Opaque. Nodes: ("chars", text) ("macro", name, post_space, args) ("group", nodes) ("specials", text)
    ("math", display, nodes) ("env", name, nodes)."""

    def __init__(self, text: str):
        self.s, self.depth = text, 0

    def convert(self) -> str:
        nodes, _ = self.nodes(0, None)
        return self.render(nodes, math=False)

    # -- parsing
    def nodes(self, i: int, closer: str | None) -> tuple[list, int]:
        s, out, chars = self.s, [], []
        self.depth += 1
        if self.depth > _L2T_MAX_DEPTH:
            raise _Opaque("nested too deeply")

        def flush():
            if chars:
                out.append(("chars", "".join(chars)))
                chars.clear()

        while True:
            if i >= len(s):
                if closer not in (None, "}"):  # pylatexenc's tolerant parsing closes an open brace at the end
                    raise _Opaque(f"unclosed {closer!r}")
                flush()
                self.depth -= 1
                return out, i
            if closer is not None and s.startswith(closer, i):
                flush()
                self.depth -= 1
                return out, i + len(closer)
            ch = s[i]
            if ch == "\\":
                flush()
                node, i = self.macro(i, closer)
                out.append(node)
            elif ch == "{":
                flush()
                inner, i = self.nodes(i + 1, "}")
                out.append(("group", inner))
            elif ch == "}" and closer is None:  # tolerant parsing drops a stray closing brace
                flush()
                i += 1
            elif ch in "}%":
                raise _Opaque(f"unexpected {ch!r}")
            elif ch == "$":
                flush()
                display = s.startswith("$$", i)
                inner, i = self.nodes(i + (2 if display else 1), "$$" if display else "$")
                out.append(("math", display, inner))
            else:
                special = next((sp for sp in _L2T_SPECIALS if s.startswith(sp[0], i)), None)
                if special is not None:
                    flush()
                    out.append(("specials", special[0]))
                    i += len(special[0])
                else:
                    chars.append(ch)
                    i += 1

    def macro(self, i: int, closer: str | None) -> tuple[tuple, int]:
        s = self.s
        if i + 1 >= len(s):
            raise _Opaque("lone backslash")
        j = i + 2
        if s[i + 1].isalpha():
            while j < len(s) and s[j].isalpha():
                j += 1
        name = s[i + 1 : j]
        if name in ("(", "["):
            inner, j = self.nodes(j, "\\)" if name == "(" else "\\]")
            return ("math", name == "[", inner), j
        if name in ("begin", "end"):
            env = _L2T_ENV_NAME.match(s, j)
            if env is None or name == "end":
                raise _Opaque("\\end without \\begin")
            return self.environment(env.group(1), env.end())
        post = ""
        if name.isalpha():
            k = j
            while k < len(s) and s[k].isspace():
                k += 1
                if s[j:k].endswith("\n\n"):
                    k -= 2
                    break
            post, j = s[j:k], k
        if name in _L2T_ARG_MACROS:
            args, j = self.arguments(_L2T_ARG_MACROS[name][0], j, no_space=name == "\\")
            return ("macro", name, post, args), j
        if name in _L2T_NOT_REPRODUCED or name.lower().startswith("cyr") or name in _L2T_ACCENTS:
            raise _Opaque(f"\\{name} is outside the reproduced part of latex2text")
        return ("macro", name, post, None), j  # a symbol, or a name pylatexenc does not know: rendered as ""

    def arguments(self, spec: str, j: int, no_space: bool) -> tuple[list, int]:
        s, args = self.s, []
        for kind in spec:
            k = j
            if not (kind == "[" and no_space):
                while k < len(s) and s[k].isspace():
                    k += 1
            if kind == "*":
                star = s.startswith("*", k)
                args.append(("chars", "*") if star else None)
                j = k + 1 if star else j
            elif kind == "[":
                if s.startswith("[", k):
                    inner, j = self.nodes(k + 1, "]")
                    args.append(("group", inner))
                else:
                    args.append(None)
            elif k >= len(s) or s[k] in "}$%]":
                raise _Opaque("missing macro argument")
            elif s[k] == "{":
                inner, j = self.nodes(k + 1, "}")
                args.append(("group", inner))
            elif s[k] == "\\":
                node, j = self.macro(k, None)
                if node[0] != "macro" or node[3] is not None:
                    raise _Opaque("a macro with arguments as an argument")
                args.append(node)
            elif any(s.startswith(sp[0], k) for sp in _L2T_SPECIALS):
                raise _Opaque("a special as an argument")
            else:
                args.append(("chars", s[k]))
                j = k + 1
        return args, j

    def environment(self, name: str, j: int) -> tuple[tuple, int]:
        if name == "array":
            _, j = self.arguments("[{", j, no_space=False)
        elif not (name in _L2T_MATRIX_ENVS or name in ("center", "flushleft", "flushright")
                  or name in ("cases", "matrix", "vmatrix", "Vmatrix", "aligned", "gathered")):
            raise _Opaque(f"environment {name!r} is outside the reproduced part of latex2text")
        inner, j = self.nodes(j, "\\end{" + name + "}")
        return ("env", name, inner), j

    # -- rendering (LatexNodes2Text with its defaults: strict_latex_spaces="macros" outside math,
    #    "based-on-source" inside)
    def render(self, nodes: list, math: bool) -> str:
        out, prev = [], None
        for node in nodes:
            if math and node[0] == "chars" and prev is not None and prev[0] == "macro" and prev[3] is None:
                out.append(prev[2])  # a bare macro's following space, in math mode only
            out.append(self.node(node, math))
            prev = node
        return "".join(out)

    def arg(self, node, math: bool) -> str:
        if node is None:
            return ""
        return self.render(node[1], math) if node[0] == "group" else self.node(node, math)

    def node(self, node: tuple, math: bool) -> str:
        kind = node[0]
        if kind == "chars":
            return "" if math and not node[1].strip() else node[1]
        if kind == "group":
            return self.render(node[1], math)
        if kind == "specials":
            return dict(_L2T_SPECIALS)[node[1]]
        if kind == "math":
            content = self.render(node[2], True).strip()
            return "\n    " + content.replace("\n", "\n    ") + "\n" if node[1] else content
        if kind == "env":
            return self.environment_text(node[1], node[2], math)
        name, args = node[1], node[3]
        if args is None:
            if name in _L2T_SYMBOLS:
                return _L2T_SYMBOLS[name]
            return _L2T_NONALPHA.get(name, "")
        render = _L2T_ARG_MACROS[name][1]
        if render == "join":
            return "".join(self.arg(a, math) for a in args)
        if render == "drop":
            return ""
        if "%(" in render:
            return render % {str(k + 1): self.arg(a, math) for k, a in enumerate(args)}
        if "%s" in render:
            return render % tuple(self.arg(a, math) for a in args)
        return render

    def environment_text(self, name: str, nodes: list, math: bool) -> str:
        if name in ("center", "flushleft", "flushright"):
            return "\n" + self.render(nodes, math) + "\n"
        if name not in _L2T_MATRIX_ENVS:
            return self.render(nodes, math)
        rows, row, cell = [], [], []  # latex2text's fmt_matrix_environment_node

        def new_column():
            if cell:
                row.append(self.render(cell, math).strip())
            cell.clear()

        for node in nodes:
            if node == ("specials", "&"):
                new_column()
            elif node[0] == "macro" and node[1] == "\\":
                new_column()
                rows.append(row)
                row = []
            else:
                cell.append(node)
        new_column()
        rows.append(row)
        cells = [x for r in rows for x in r]
        if not cells:
            raise _Opaque("empty matrix")
        width = max(len(x) for x in cells)
        return "[ " + "; ".join(" ".join(x.rjust(width, " ") for x in r) for r in rows) + " ]"


def _authors_parse_latex(expr: str) -> str:
    """mg.py:687 ``_parse_latex``."""
    expr = expr.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac")
    expr = _LatexToText(expr).convert()
    for old, new in (("√", "sqrt"), ("π", "pi"), ("∞", "inf"), ("∪", "U"), ("·", "*"), ("×", "*")):
        expr = expr.replace(old, new)
    return expr.strip()


def _authors_is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _authors_is_int(x: float) -> bool:
    try:
        return abs(x - int(round(x))) <= 1e-7
    except (OverflowError, ValueError):
        return False


_PROPER_COMMAS = re.compile(r"(\d)(,)(\d\d\d)($|\D)")


def _authors_strip_commas(expr: str) -> str:
    """mg.py:749 ``_strip_properly_formatted_commas``: ``1,000`` -> ``1000``, tuple commas kept."""
    while True:
        stripped = _PROPER_COMMAS.sub("\\1\\3\\4", expr)
        if stripped == expr:
            return stripped
        expr = stripped


def _authors_str_is_int(text: str) -> bool:
    """mg.py:724 ``_str_is_int``."""
    try:
        x = float(_authors_strip_commas(text))
        return abs(x - int(round(x))) <= 1e-7
    except (ValueError, OverflowError):
        return False


_NORMALIZE_UNITS = ("degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week", "month",
                    "year", "foot", "feet", "inch", "yard")
_NORMALIZE_UNIT_PATTERNS = [re.compile(f"{unit}(es)?(s)? *(\\^[0-9]+)?") for unit in _NORMALIZE_UNITS]
_OPAQUE = "\x00"
"""Prefix of a normalised answer whose LaTeX the latex2text reproduction does not cover: such an answer equals
only an identical one and is never parsed (see DEVIATION 1 in ``authors_sympy_equal``)."""


def authors_normalize(expr: str | None) -> str | None:
    """mg.py:760 ``_normalize``, the sympy stage's normaliser."""
    if expr is None:
        return None
    whole = _MATHD_WHOLE_TEXT.search(expr)
    if whole is not None:
        expr = whole.group("text")
    expr = expr.replace("\\%", "%").replace("\\$", "$").replace("$", "").replace("%", "")
    expr = expr.replace(" or ", " , ").replace(" and ", " , ")
    expr = expr.replace("million", "*10^6").replace("billion", "*10^9").replace("trillion", "*10^12")
    for pattern in _NORMALIZE_UNIT_PATTERNS:
        expr = pattern.sub("", expr)
    expr = re.sub("\\^ *\\\\circ", "", expr)
    if len(expr) > 0 and expr[0] == "{" and expr[-1] == "}":
        expr = expr[1:-1]
    expr = re.sub(",\\\\! *", "", expr)
    if _authors_is_float(expr) and _authors_is_int(float(expr)):
        expr = str(int(round(float(expr))))
    if "\\" in expr:
        try:
            expr = _authors_parse_latex(expr)
        except _Opaque:
            return _OPAQUE + expr
    expr = re.sub("- *", "-", expr)
    expr = re.sub("([0-9]) +([0-9])", "\\1+\\2", expr)  # _inject_implicit_mixed_number: 7 3/4 -> 7+3/4
    expr = expr.replace(" ", "").replace("{", "").replace("}", "").lower()
    if _authors_str_is_int(expr):
        expr = str(int(float(expr.replace(",", ""))))
    return expr


# ---- their sympy step (mg.py:856 are_equal_under_sympy) without eval: a parser for the Python expressions
#      sympy's parse_expr accepts there (standard transformations + implicit_multiplication_application)

_D = r"[0-9](?:_?[0-9])*"
_PY_FLOAT = rf"(?:(?:{_D}\.(?:{_D})?|\.{_D})(?:[eE][-+]?{_D})?|{_D}[eE][-+]?{_D})"
_PY_NUMBER = re.compile(  # Python 3.11 tokenize's Number: imaginary, float, hex/binary/octal/decimal integer
    rf"{_D}[jJ]|{_PY_FLOAT}[jJ]|{_PY_FLOAT}|0[xX](?:_?[0-9a-fA-F])+|0[bB](?:_?[01])+|0[oO](?:_?[0-7])+"
    r"|0(?:_?0)*|[1-9](?:_?[0-9])*")
_PY_NAME = re.compile(r"\w+")
_PY_OPERATORS = ("**", "//", "==", "!=", "<=", ">=", "<<", ">>", "->", ":=", "+", "-", "*", "/", "%", "@", "&", "|",
                 "^", "~", "<", ">", "(", ")", "[", "]", "{", "}", ",", ":", ".", ";", "=")
_PY_SUPPORTED_OPERATORS = frozenset(("**", "//", "+", "-", "*", "/", "%", "(", ")"))
MAX_AUTHORS_EXPONENT = 10_000
"""A numeric exponent above this (or a factorial of more than MAX_AUTHORS_FACTORIAL) makes the sympy step
Unparseable: Python would compute it, for seconds or forever; a grade past the worker's time limit scores 0."""
MAX_AUTHORS_FACTORIAL = 1000


def _py_namespace() -> dict:
    """What parse_expr's names resolve to (``from sympy import *`` plus builtin functions, ``max``/``min`` as
    ``Max``/``Min``); only the entries below are reproduced, the others are Unparseable (DEVIATION 2)."""
    import builtins
    import types

    names = set(sympy.__all__) | {n for n, o in vars(builtins).items() if isinstance(o, types.BuiltinFunctionType)}
    return {"names": names, "values": {"pi": sympy.pi, "oo": sympy.oo, "zoo": sympy.zoo, "nan": sympy.nan,
                                       "I": sympy.I, "E": sympy.E},
            "functions": {"sqrt": sympy.sqrt, "ln": sympy.log}}


_PY_NS: dict | None = None


def _greek_name(name: str) -> bool:
    import unicodedata

    try:
        unicodedata.lookup("GREEK SMALL LETTER " + name)
        return True
    except KeyError:
        return False


def _py_tokens(text: str) -> list[tuple[str, object]]:
    """Tokens after parse_expr's token transformations: ("atom", sympy object), ("func", callable),
    ("op", text), ("bang", "!"), with the implicit multiplications inserted."""
    global _PY_NS
    if _PY_NS is None:
        _PY_NS = _py_namespace()
    raw: list[tuple[str, object]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\f\r\n":
            i += 1
            continue
        number = _PY_NUMBER.match(text, i) if (ch.isdigit() and ch.isascii()) or ch == "." else None
        if number is not None and number.group():  # auto_number: Integer / Float from the token's text
            tok = number.group()
            imaginary = tok[-1] in "jJ"
            tok = tok[:-1] if imaginary else tok
            is_float = "." in tok or (("e" in tok or "E" in tok) and not tok.startswith(("0x", "0X")))
            # auto_number: Float('<token>') from its text, Integer(<token>) from the Python literal
            raw.append(("atom", sympy.Float(tok) if is_float else sympy.Integer(int(tok, 0))))
            if imaginary:
                raw += [("op", "*"), ("atom", sympy.I)]
            i = number.end()
            continue
        if ch.isidentifier() or ch.isdigit():
            name = _PY_NAME.match(text, i).group()
            i += len(name)
            raw += _py_name_tokens(name)
            continue
        if ch == "!" and not text.startswith("!=", i):
            raw.append(("bang", "!"))
            i += 1
            continue
        op = next((o for o in _PY_OPERATORS if text.startswith(o, i)), None)
        if op is None or op not in _PY_SUPPORTED_OPERATORS:
            raise Unparseable(f"{text[i]!r} is outside the reproduced Python subset")
        raw.append(("op", op))
        i += len(op)
    tokens: list[tuple[str, object]] = []
    for tok, nxt in zip(raw, raw[1:] + [("end", None)]):
        tokens.append(tok)
        left = tok[0] in ("atom", "bang") or tok == ("op", ")")
        right = nxt[0] in ("atom", "func") or nxt == ("op", "(")
        if left and right:
            tokens.append(("op", "*"))
        elif tok[0] == "func" and nxt != ("op", "("):
            raise Unparseable("function not followed by '(' (implicit application) is not reproduced")
    return tokens


def _py_name_tokens(name: str) -> list[tuple[str, object]]:
    """auto_symbol + split_symbols for one name."""
    import keyword

    if keyword.iskeyword(name) or name in ("True", "False", "None"):
        raise Unparseable(f"Python keyword {name!r}")
    ns = _PY_NS
    if name in ns["functions"]:
        return [("func", ns["functions"][name])]
    if name in ns["values"]:
        return [("atom", ns["values"][name])]
    if name in ns["names"]:
        raise Unparseable(f"sympy name {name!r} is not reproduced")
    if "_" in name or _greek_name(name) or len(name) <= 1:  # _token_splittable is False
        if not name.isidentifier():
            raise Unparseable(f"{name!r} is not a Python name")
        return [("atom", sympy.Symbol(name))]
    out: list[tuple[str, object]] = []
    k = 0
    while k < len(name):  # split_symbols: one symbol per character, runs of digits as numbers
        char = name[k]
        if char in ns["names"] or char in ns["values"] or char in ns["functions"]:
            raise Unparseable(f"sympy name {char!r} inside a split name is not reproduced")
        if char.isdigit():
            end = k
            while end < len(name) and name[end].isdigit():
                end += 1
            if not name[k:end].isascii():
                raise Unparseable("non-ASCII digits")
            out.append(("atom", sympy.Integer(name[k:end])))
            k = end
            continue
        if not char.isidentifier():
            raise Unparseable(f"{char!r} is not a Python name")
        out.append(("atom", sympy.Symbol(char)))
        k += 1
    return out


class _PyParser:
    """Python's expression grammar over those tokens: sums, products (``*  /  //  %``), unary ``+ -``, ``**``
    (right-associative, binding tighter than a unary minus on its left), calls of sqrt / ln, ``(...)``, and
    postfix ``!`` / ``!!`` (factorial_notation). Python evaluates exactly these operations on the same sympy
    objects, in the same order."""

    def __init__(self, tokens):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", None)

    def take(self):
        tok = self.peek()
        if tok[0] == "end":
            raise Unparseable("unexpected end of expression")
        self.pos += 1
        return tok

    def parse(self):
        value = self.sum()
        if self.peek()[0] != "end":
            raise Unparseable(f"unexpected {self.peek()[1]!r}")
        return value

    def sum(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Unparseable("expression nested too deeply")
        value = self.product()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            right = self.product()
            value = value + right if op == "+" else value - right
        self.depth -= 1
        return value

    def product(self):
        value = self.unary()
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/", "//", "%"):
            op = self.take()[1]
            right = self.unary()
            if op == "*":
                value = value * right
            elif op == "/":
                value = value / right
            elif op == "//":
                value = value // right
            else:
                value = value % right
        return value

    def unary(self):
        if self.peek() in (("op", "+"), ("op", "-")):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise Unparseable("expression nested too deeply")
            op = self.take()[1]
            value = self.unary()
            self.depth -= 1
            return -value if op == "-" else +value
        return self.power()

    def power(self):
        base = self.postfix()
        if self.peek() != ("op", "**"):
            return base
        self.take()
        exponent = self.unary()
        if getattr(exponent, "is_number", False) and not (exponent.is_finite and abs(exponent) <= MAX_AUTHORS_EXPONENT):
            raise Unparseable("exponent too large to evaluate")
        return base**exponent

    def postfix(self):
        value = self.atom()
        bangs = 0
        while self.peek()[0] == "bang":
            self.take()
            bangs += 1
        if bangs:
            if bangs > 2:
                raise Unparseable("more than two '!'")
            if value.is_number and not (value.is_finite and abs(value) <= MAX_AUTHORS_FACTORIAL):
                raise Unparseable("factorial too large to evaluate")
            value = sympy.factorial(value) if bangs == 1 else sympy.factorial2(value)
        return value

    def atom(self):
        kind, value = self.take()
        if kind == "atom":
            return value
        if kind == "func":
            if self.take() != ("op", "("):
                raise Unparseable("function without '('")
            argument = self.sum()
            if self.take() != ("op", ")"):
                raise Unparseable("a call with other than one argument")
            return value(argument)
        if (kind, value) == ("op", "("):
            inner = self.sum()
            if self.take() != ("op", ")"):
                raise Unparseable("a tuple or unbalanced parentheses")
            return inner
        raise Unparseable(f"unexpected {value!r}")


def authors_parse_python(text: str) -> sympy.Expr:
    """The sympy object ``parse_expr(text, transformations=standard + implicit_multiplication_application)``
    evaluates to, for the reproduced subset; Unparseable otherwise. Nothing is evaluated as code."""
    return _PyParser(_py_tokens(text)).parse()


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
    except Unparseable:
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


# ================================================================================================================
# Verifiers: answer extraction + equivalence, by name. ``pipeline.rl.reward`` runs ``extract``, ``gold`` and
# ``string_equal`` (linear-time string work on capped answers) in the training process and ``equal`` in its worker
# processes under the hard time limit.
# ================================================================================================================

def lenient_gold(gold: str) -> str:
    """The gold answer as the lenient verifier compares it: the content of its last ``\\boxed{}`` / ``\\fbox{}``
    (or bare ``\\boxed 7``) when it has one, stripped."""
    boxed = last_boxed_content(gold) if "\\boxed" in gold or "\\fbox" in gold else None
    return (boxed if boxed is not None else gold).strip()


def _lenient_extract(response: str, template: str) -> str | None:
    return get_template(template).extract_answer(response)


def _lenient_string_equal(pred: str, gold: str) -> bool:
    canon = normalize_answer(pred)
    return bool(canon) and canon == normalize_answer(gold)


def _lenient_equal(pred: str, gold: str, stages: tuple[str, ...]) -> tuple[bool, list[str]]:
    return is_equivalent(pred, gold, stages)


AUTHORS_STRING_MATCH_MAX_CHARS = 200
"""The authors' verifiers run their string check (``grade_answer_mathd``) in the training process only for answers
up to this long: some of its regexes are quadratic. Longer ones go to a worker, which runs the same check first."""


def _authors_string_equal(pred: str, gold: str) -> bool:
    if pred.strip() == gold.strip():  # identical answers normalise identically: grade_answer_mathd says equal
        return True
    return max(len(pred), len(gold)) <= AUTHORS_STRING_MATCH_MAX_CHARS and authors_mathd_equal(pred, gold)


def _fast_equal(pred: str, gold: str, stages: tuple[str, ...]) -> tuple[bool, list[str]]:
    return authors_grade(pred, gold, fast=True), []


def _math_verify_equal(pred: str, gold: str, stages: tuple[str, ...]) -> tuple[bool, list[str]]:
    return authors_grade(pred, gold, fast=False), []


@dataclass(frozen=True)
class Verifier:
    """How a response is graded: which answer is read, and what counts as equal to the gold answer."""

    name: str
    extract: Callable[[str, str], str | None]
    """(response, template) -> the final answer, or None when the response gives none. String scanning only."""
    gold: Callable[[str], str | None]
    """The gold answer as compared (None: unreadable, scores 0)."""
    string_equal: Callable[[str, str], bool]
    """Cheap string check run in the training process; True settles the grade as correct."""
    equal: Callable[[str, str, tuple[str, ...]], tuple[bool, list[str]]]
    """(answer, gold, lenient stages) -> (equal, errors); runs in a grading worker under the time limit."""
    blank_scores_zero: bool
    """An empty answer scores 0 without grading (the authors grade it like any other string)."""


VERIFIERS: dict[str, Verifier] = {
    # The authors' verifier_version="fast" (their default; the Qwen2.5-Math-1.5B and Llama-3.2-3B scripts): the
    # last \boxed{} (r1: the strict answer tag), then grade_answer_mathd or grade_answer_sympy.
    "fast": Verifier("fast", authors_response_answer, authors_gold, _authors_string_equal, _fast_equal, False),
    # The authors' verifier_version="math_verify" (their Qwen2.5-Math-7B script, and evaluate_model.py's
    # fast=False): "fast", then is_latex_equal (math-verify).
    "math_verify": Verifier("math_verify", authors_response_answer, authors_gold, _authors_string_equal,
                            _math_verify_equal, False),
    # This project's own grader (the only one before the authors' were ported), more lenient than both: it also
    # reads \fbox{7} and bare \boxed 7 and grades the later of \boxed{3} ... \fbox{4} (the authors: 0, 0, 3); in
    # an r1 answer tag it stops at the first </answer>; its normaliser drops more units and words ("5 dollars" =
    # 5); its sympy stage accepts unreduced fractions (2/4 = 1/2), reordered sets and lists, 10^{6} = 1000000;
    # then math-verify (the authors' "fast" has no math-verify).
    "lenient": Verifier("lenient", _lenient_extract, lenient_gold, _lenient_string_equal, _lenient_equal, True),
}
DEFAULT_VERIFIER = "fast"
"""The library default: the authors' default ``verifier_version`` and the one their Llama-3.2-3B run (this
project's target) used. Recipes reproducing their Qwen2.5-Math-7B run should set "math_verify"."""


def get_verifier(name: str) -> Verifier:
    try:
        return VERIFIERS[name]
    except KeyError:
        raise ValueError(f"unknown verifier {name!r}; valid names: {sorted(VERIFIERS)}") from None
