"""The authors' sympy step parses answers as Python expressions with sympy's ``parse_expr`` (an ``eval`` of model
text); ``authors_parse_python`` parses the same expressions and builds the same sympy objects without evaluating any
text (DEVIATION 1 of the port in ``pipeline.rl.authors_grader``; NotReproduced outside the reproduced subset).
"""

from __future__ import annotations

import re

import sympy


class NotReproduced(ValueError):
    """The expression is outside the reproduced subset of Python + sympy names: the sympy step says not equal."""


MAX_NESTING = 60
"""Deeper nesting is NotReproduced (Python's own parser would stop somewhere too)."""

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
NotReproduced: Python would compute it, for seconds or forever; a grade past the worker's time limit scores 0."""
MAX_AUTHORS_FACTORIAL = 1000


def _py_namespace() -> dict:
    """What parse_expr's names resolve to (``from sympy import *`` plus builtin functions, ``max``/``min`` as
    ``Max``/``Min``); only the entries below are reproduced, the others are NotReproduced (DEVIATION 2)."""
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
            raise NotReproduced(f"{text[i]!r} is outside the reproduced Python subset")
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
            raise NotReproduced("function not followed by '(' (implicit application) is not reproduced")
    return tokens


def _py_name_tokens(name: str) -> list[tuple[str, object]]:
    """auto_symbol + split_symbols for one name."""
    import keyword

    if keyword.iskeyword(name) or name in ("True", "False", "None"):
        raise NotReproduced(f"Python keyword {name!r}")
    ns = _PY_NS
    if name in ns["functions"]:
        return [("func", ns["functions"][name])]
    if name in ns["values"]:
        return [("atom", ns["values"][name])]
    if name in ns["names"]:
        raise NotReproduced(f"sympy name {name!r} is not reproduced")
    if "_" in name or _greek_name(name) or len(name) <= 1:  # _token_splittable is False
        if not name.isidentifier():
            raise NotReproduced(f"{name!r} is not a Python name")
        return [("atom", sympy.Symbol(name))]
    out: list[tuple[str, object]] = []
    k = 0
    while k < len(name):  # split_symbols: one symbol per character, runs of digits as numbers
        char = name[k]
        if char in ns["names"] or char in ns["values"] or char in ns["functions"]:
            raise NotReproduced(f"sympy name {char!r} inside a split name is not reproduced")
        if char.isdigit():
            end = k
            while end < len(name) and name[end].isdigit():
                end += 1
            if not name[k:end].isascii():
                raise NotReproduced("non-ASCII digits")
            out.append(("atom", sympy.Integer(name[k:end])))
            k = end
            continue
        if not char.isidentifier():
            raise NotReproduced(f"{char!r} is not a Python name")
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
            raise NotReproduced("unexpected end of expression")
        self.pos += 1
        return tok

    def parse(self):
        value = self.sum()
        if self.peek()[0] != "end":
            raise NotReproduced(f"unexpected {self.peek()[1]!r}")
        return value

    def sum(self):
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise NotReproduced("expression nested too deeply")
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
            if self.depth > MAX_NESTING:
                raise NotReproduced("expression nested too deeply")
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
            raise NotReproduced("exponent too large to evaluate")
        return base**exponent

    def postfix(self):
        value = self.atom()
        bangs = 0
        while self.peek()[0] == "bang":
            self.take()
            bangs += 1
        if bangs:
            if bangs > 2:
                raise NotReproduced("more than two '!'")
            if value.is_number and not (value.is_finite and abs(value) <= MAX_AUTHORS_FACTORIAL):
                raise NotReproduced("factorial too large to evaluate")
            value = sympy.factorial(value) if bangs == 1 else sympy.factorial2(value)
        return value

    def atom(self):
        kind, value = self.take()
        if kind == "atom":
            return value
        if kind == "func":
            if self.take() != ("op", "("):
                raise NotReproduced("function without '('")
            argument = self.sum()
            if self.take() != ("op", ")"):
                raise NotReproduced("a call with other than one argument")
            return value(argument)
        if (kind, value) == ("op", "("):
            inner = self.sum()
            if self.take() != ("op", ")"):
                raise NotReproduced("a tuple or unbalanced parentheses")
            return inner
        raise NotReproduced(f"unexpected {value!r}")


def authors_parse_python(text: str) -> sympy.Expr:
    """The sympy object ``parse_expr(text, transformations=standard + implicit_multiplication_application)``
    evaluates to, for the reproduced subset; NotReproduced otherwise. Nothing is evaluated as code."""
    return _PyParser(_py_tokens(text)).parse()


