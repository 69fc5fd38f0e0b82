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

from pipeline.rl.authors_grader import authors_gold, authors_grade, authors_mathd_equal, authors_response_answer

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
