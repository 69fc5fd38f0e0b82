"""Seeded generators of worked arithmetic / algebra problems at five difficulty levels (the tiny default's math).

Each generator draws one ``Problem``: the question text (exactly what an RL prompt shows under template ``none``),
worked steps, and the integer answer. A pretraining document is ``question + "\\n" + steps + ending`` where the
ending is `` The answer is \\boxed{N}.``; the model's response to a question is therefore short (about 10-40 tokens
with the tiny tokenizer) and ends in a box, then EOS.

Levels: 1 one-digit + / -; 2 two-digit +/- one-digit; 3 two-step expressions with a product; 4 two-step word
problems; 5 solving ``a x + b = c``. Every step is a one-digit fact, a times-table fact or a two-digit +/- one-digit
sum, so the few skills the levels share are learnable by a ~5M-parameter model in minutes of CPU pretraining;
difficulty grows with the number of steps and how they combine. Questions come in a few phrasings, tagged ``textbook`` or ``forum``: the synthetic corpus
boxes forum-style answers only some of the time (see ``SyntheticConfig.forum_boxed_rate``), like web text, which
leaves the base model a format gap that RL closes, as the paper finds for base models.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

LEVELS = (1, 2, 3, 4, 5)
STYLES = ("textbook", "forum")


@dataclass(frozen=True)
class Problem:
    question: str
    steps: str
    """Worked solution before the final answer sentence, e.g. ``3 * 4 = 12. 12 + 5 = 17.``"""
    answer: int
    level: int
    style: str
    """``textbook`` or ``forum`` (which phrasing family the question uses)."""

    def solution(self, boxed: bool) -> str:
        final = f"\\boxed{{{self.answer}}}" if boxed else str(self.answer)
        return f"{self.steps} The answer is {final}."

    def document(self, boxed: bool) -> str:
        return f"{self.question}\n{self.solution(boxed)}"


# Phrasings of "evaluate EXPR" (levels 1-3): (template, style).
_EXPRESSION_PHRASINGS = (
    ("What is {e}?", "textbook"),
    ("Compute {e}.", "textbook"),
    ("Calculate {e}.", "textbook"),
    ("what's {e}?", "forum"),
    ("quick one: {e} = ?", "forum"),
)
_NAMES = ("Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jill", "Kai", "Lena", "Max", "Nora",
          "Omar", "Pia", "Sam", "Tom", "Uma", "Zoe")
_ITEMS = ("apples", "books", "coins", "pens", "cards", "stamps", "shells", "marbles", "stickers", "cookies")
_CONTAINERS = ("bags", "boxes", "packs", "jars", "baskets")


def _phrase(rng: random.Random, expression: str) -> tuple[str, str]:
    template, style = rng.choice(_EXPRESSION_PHRASINGS)
    return template.format(e=expression), style


def level1(rng: random.Random) -> Problem:
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    if rng.random() < 0.5:
        expr, result = f"{a} + {b}", a + b
    else:
        a, b = max(a, b), min(a, b)
        expr, result = f"{a} - {b}", a - b
    question, style = _phrase(rng, expr)
    return Problem(question, f"{expr} = {result}.", result, 1, style)


def level2(rng: random.Random) -> Problem:
    a, b = rng.randint(10, 99), rng.randint(1, 9)
    expr, result = (f"{a} + {b}", a + b) if rng.random() < 0.5 else (f"{a} - {b}", a - b)
    question, style = _phrase(rng, expr)
    return Problem(question, f"{expr} = {result}.", result, 2, style)


def level3(rng: random.Random) -> Problem:
    a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 9)
    p = a * b
    form = rng.randrange(3)
    if form == 0:
        expr, last, result = f"{a} * {b} + {c}", f"{p} + {c}", p + c
    elif form == 1:
        expr, last, result = f"{c} + {a} * {b}", f"{c} + {p}", c + p
    else:
        c = min(c, p)
        expr, last, result = f"{a} * {b} - {c}", f"{p} - {c}", p - c
    question, style = _phrase(rng, expr)
    return Problem(question, f"{a} * {b} = {p}. {last} = {result}.", result, 3, style)


def level4(rng: random.Random) -> Problem:
    name, item, box = rng.choice(_NAMES), rng.choice(_ITEMS), rng.choice(_CONTAINERS)
    n_boxes, per_box = rng.randint(2, 9), rng.randint(2, 9)
    p = n_boxes * per_box
    style = rng.choice(STYLES)
    if rng.random() < 0.5:
        start = rng.randint(1, 9)
        if style == "textbook":
            question = (f"{name} has {start} {item}. {name} buys {n_boxes} {box} with {per_box} {item} in each. "
                        f"How many {item} does {name} have now?")
        else:
            question = f"{name} had {start} {item} and got {n_boxes} {box} of {per_box} more. how many {item} now?"
        return Problem(question, f"{n_boxes} * {per_box} = {p}. {start} + {p} = {start + p}.", start + p, 4, style)
    given = rng.randint(1, min(9, p))
    if style == "textbook":
        question = (f"{name} has {n_boxes} {box} with {per_box} {item} in each and gives away {given} {item}. "
                    f"How many {item} are left?")
    else:
        question = f"{name} had {n_boxes} {box} of {per_box} {item}, gave away {given}. how many left?"
    return Problem(question, f"{n_boxes} * {per_box} = {p}. {p} - {given} = {p - given}.", p - given, 4, style)


def level5(rng: random.Random) -> Problem:
    a, x, b = rng.randint(2, 9), rng.randint(1, 9), rng.randint(1, 9)
    if rng.random() < 0.5 or b > a * x:
        c = a * x + b
        equation, isolate = f"{a}x + {b} = {c}", f"{a}x = {c} - {b} = {a * x}."
    else:
        c = a * x - b
        equation, isolate = f"{a}x - {b} = {c}", f"{a}x = {c} + {b} = {a * x}."
    style = rng.choice(STYLES)
    question = f"Solve for x: {equation}." if style == "textbook" else f"{equation}, what is x?"
    return Problem(question, f"{isolate} x = {a * x} / {a} = {x}.", x, 5, style)


GENERATORS: dict[int, Callable[[random.Random], Problem]] = {1: level1, 2: level2, 3: level3, 4: level4, 5: level5}
