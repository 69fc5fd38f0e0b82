"""The authors' two verifiers ("fast", "math_verify") against a table of cases whose expected scores come from
reading their grader, and the project's own grader under its name ("lenient").

Reference: sail-sg/understand-r1-zero @ dfca49dd46, ``understand_r1_zero/math_grader.py`` (``mg.py:LINE``) and
``train_zero_math.py`` (``tz.py:LINE``). Each case names the function / line whose rule decides it:
  mg.py:889  last_boxed_only_string   (the last "\\boxed", "\\fbox" only if there is no "\\boxed" at all)
  mg.py:917  remove_boxed             (the box must read exactly "\\boxed{...}")
  mg.py:984  extract_answer           (no "\\boxed" in the response: no answer)
  mg.py:1026 answer_tag_reward_fn     (r1: needs "</think> <answer>" and "</answer>")
  mg.py:37   mathd_normalize_answer / mg.py:190 _strip_string (grade_answer_mathd, mg.py:974)
  mg.py:760  _normalize / mg.py:934 grade_answer_sympy (mg.py:959 unreduced fractions, mg.py:963 int vs non-int,
             mg.py:950 brackets, mg.py:840 should_allow_eval)
  mg.py:601  is_latex_equal (math-verify; only verifier_version="math_verify", mg.py:996)
  tz.py:84   MATHOracle: r1 -> answer_tag_reward_fn, other templates -> boxed_reward_fn
"""

import time
from typing import NamedTuple

import pytest
import sympy

from pipeline.rl import authors_expr, authors_grader, authors_normalize, grading
from pipeline.rl.reward import GraderConfig, RewardGrader, math_reward


class Case(NamedTuple):
    response: str
    gold: str
    template: str
    fast: float
    math_verify: float
    rule: str


def _b(answer: str) -> str:
    return f"Let me compute. ... So the final answer is \\boxed{{{answer}}}."


def _r1(answer: str) -> str:
    return f" I add the numbers and check. </think> <answer> {answer} </answer>"


CASES = [
    # ---- fractions
    Case(_b(r"\frac12"), r"\frac{1}{2}", "qwen_math", 1, 1, r"mg.py:191 _fix_fracs: \frac12 -> \frac{1}{2}"),
    Case(_b(r"\dfrac{1}{2}"), r"\frac{1}{2}", "qwen_math", 1, 1, "mg.py:278 dfrac -> frac"),
    Case(_b("0.5"), r"\frac{1}{2}", "qwen_math", 1, 1, r"mg.py:344 '0.5' -> \frac{1}{2}"),
    Case(_b(".5"), r"\frac{1}{2}", "qwen_math", 1, 1, "mg.py:326 leading '.' -> '0.', then mg.py:344"),
    Case(_b("1/2"), r"\frac{1}{2}", "qwen_math", 1, 1, r"mg.py:222 _fix_a_slash_b: 1/2 -> \frac{1}{2}"),
    Case(_b("2/4"), r"\frac{1}{2}", "qwen_math", 0, 1, "mg.py:959 unreduced fractions compared as strings; "
         "math-verify (mg.py:624) says 1/2"),
    Case(_b(r"\frac{2}{4}"), r"\frac{1}{2}", "qwen_math", 0, 1, "mg.py:959 (after latex2text: 2/4 vs 1/2); mg.py:624"),
    Case(_b("0.50"), r"\frac{1}{2}", "qwen_math", 1, 1, "mg.py:967 sympy: (1/2)-(0.50) == 0"),
    Case(_b("0.3333"), r"\frac{1}{3}", "qwen_math", 0, 0, "mg.py:967 sympy difference != 0; math-verify rounds to 6"),
    Case(_b(r"-\frac{1}{2}"), "-0.5", "qwen_math", 1, 1, "mg.py:967 sympy: (-0.5)-(-1/2) == 0"),
    Case(_b(r"\frac{1}{x+1}"), r"\frac{1}{1+x}", "qwen_math", 0, 1,
         "mg.py:692 latex2text writes 1/x+1 (no parentheses), so sympy sees 1/x+1 vs 1/1+x; mg.py:624"),
    # ---- decimals
    Case(_b("3.00"), "3", "qwen_math", 1, 1, "mg.py:806 _normalize: a float that is an int -> '3'"),
    Case(_b("3.5"), r"\frac{7}{2}", "qwen_math", 1, 1, "mg.py:967 sympy: (7/2)-(3.5) == 0"),
    Case(_b("2.5"), "2.50", "qwen_math", 1, 1, "mg.py:967 sympy: (2.50)-(2.5) == 0"),
    Case(_b("1,000"), "1000", "qwen_math", 1, 1, "mg.py:827 _str_is_int strips the thousands comma"),
    Case(_b("3.14"), r"\pi", "qwen_math", 0, 0, "mg.py:967 sympy: pi-3.14 != 0; math-verify compares 6 digits"),
    # ---- units and text
    Case(_b(r"5 \text{ cm}"), "5", "qwen_math", 1, 1, r"mg.py:292 trailing \text{...} removed"),
    Case(_b(r"5\text{ dollars}"), "5", "qwen_math", 1, 1, r"mg.py:292 trailing \text{...} removed"),
    Case(_b("5 dollars"), "5", "qwen_math", 0, 0, "mg.py:298 'dollars' is no unit_text; mg.py:963 int vs '5dollars'"),
    Case(_b("5 cm"), "5", "qwen_math", 1, 1, "mg.py:302 unit_texts removes the word 'cm'"),
    Case(_b(r"30^\circ"), "30", "qwen_math", 1, 1, r"mg.py:308 ^\circ removed"),
    Case(_b(r"30^{\circ}"), "30", "qwen_math", 1, 1, r"mg.py:307 ^{\circ} removed"),
    Case(_b(r"\$18.90"), "18.90", "qwen_math", 1, 1, r"mg.py:311 \$ removed"),
    Case(_b(r"\text{(B)}"), "B", "qwen_math", 1, 1, "mg.py:877 split_tuple('(b)') = ['b']; one element: no "
         "bracket check (mg.py:950); sympy b-b == 0"),
    Case(_b(r"\text{odd}"), "odd", "qwen_math", 1, 1, r"mg.py:43 enclosing \text{} removed"),
    Case(_b("Odd"), "odd", "qwen_math", 1, 1, "mg.py:825 _normalize lower-cases (mathd does not)"),
    Case(_b(r"\text{even}"), "odd", "qwen_math", 0, 0, "mg.py:974 / mg.py:934 different words"),
    # ---- percentages
    Case(_b(r"50\%"), "50", "qwen_math", 1, 1, r"mg.py:317 \% removed"),
    Case(_b("50"), r"50\%", "qwen_math", 1, 1, r"mg.py:317 \% removed from the gold"),
    Case(_b(r"50\%"), "0.5", "qwen_math", 0, 1, "mg.py:963 int 50 vs 0.5; math-verify (mg.py:624) reads 50\\% "
         "as 0.5"),
    # ---- scientific notation
    Case(_b("10^{6}"), "1000000", "qwen_math", 0, 1, "mg.py:963 int gold vs non-int '10^6'; math-verify 10^6"),
    Case(_b("1000000"), "10^6", "qwen_math", 0, 1, "mg.py:963 non-int gold vs int; math-verify"),
    Case(_b("10^6"), "10^{6}", "qwen_math", 1, 1, "mg.py:821 _normalize drops braces: 10^6 == 10^6"),
    Case(_b(r"1.5 \times 10^{3}"), "1500", "qwen_math", 0, 1, "mg.py:963 int vs non-int; math-verify 1500"),
    # ---- negative numbers
    Case(_b("-3"), "-3", "qwen_math", 1, 1, "mg.py:974 identical"),
    Case(_b("- 3"), "-3", "qwen_math", 1, 1, "mg.py:338 spaces removed"),
    Case(_b("3"), "-3", "qwen_math", 0, 0, "mg.py:967 sympy: -3-3 != 0"),
    # ---- pi
    Case(_b(r"\frac{\pi}{2}"), r"\frac{\pi}{2}", "qwen_math", 1, 1, "mg.py:974 identical"),
    Case(_b(r"\pi/2"), r"\frac{\pi}{2}", "qwen_math", 1, 1, "mg.py:692 latex2text: both pi/2"),
    Case(_b(r"0.5\pi"), r"\frac{\pi}{2}", "qwen_math", 1, 1, "mg.py:862 simplify(pi/2 - 0.5*pi) == 0"),
    Case(_b(r"2\pi"), r"\pi", "qwen_math", 0, 0, "mg.py:862 simplify(pi - 2*pi) != 0"),
    # ---- square roots
    Case(_b(r"2\sqrt{2}"), r"\sqrt{8}", "qwen_math", 1, 1, "mg.py:862 sympy: sqrt(8)-2*sqrt(2) == 0"),
    Case(_b(r"\sqrt2"), r"\sqrt{2}", "qwen_math", 1, 1, r"mg.py:245 _fix_sqrt: \sqrt2 -> \sqrt{2}"),
    Case(_b(r"\frac{\sqrt{3}}{2}"), r"\frac{1}{2}\sqrt{3}", "qwen_math", 1, 1, "mg.py:862 sympy: sqrt(3)/2 both"),
    Case(_b(r"2\sqrt{3}"), r"\sqrt{8}", "qwen_math", 0, 0, "mg.py:862 sympy difference != 0"),
    # ---- equations and expressions
    Case(_b("x = 3"), "3", "qwen_math", 1, 1, "mg.py:330 'x =' prefix (<= 2 chars) dropped"),
    Case(_b("y = 2x + 1"), "2x+1", "qwen_math", 1, 1, "mg.py:330 'y =' prefix dropped"),
    Case(_b("x = 3"), "x=3", "qwen_math", 1, 1, "mg.py:330 both sides lose 'x='"),
    Case(_b("x^2+2x+1"), "(x+1)^2", "qwen_math", 1, 1, "mg.py:862 sympy expands; '^2' passes mg.py:840"),
    Case(_b("x^{2}+1"), "x^2+1", "qwen_math", 1, 1, "mg.py:821 _normalize drops braces: equal strings"),
    # ---- sets and lists
    Case(_b(r"\{1,2\}"), r"\{1,2\}", "qwen_math", 1, 1, "mg.py:974 identical"),
    Case(_b(r"\{2,1\}"), r"\{1,2\}", "qwen_math", 0, 1, "mg.py:967 '(1,2)-(2,1)' is a tuple difference: error "
         "-> False; math-verify compares sets"),
    Case(_b("1, 2"), "1,2", "qwen_math", 1, 1, "mg.py:338 spaces removed"),
    Case(_b("2, 1"), "1, 2", "qwen_math", 0, 1, "mg.py:967 as above; math-verify reads both as sets"),
    # ---- intervals and tuples
    Case(_b("(1,2]"), "(1,2]", "qwen_math", 1, 1, "mg.py:974 identical"),
    Case(_b(r"\left( 1, 2 \right]"), "(1,2]", "qwen_math", 1, 1, r"mg.py:288 \left \right dropped"),
    Case(_b("[1,2)"), "(1,2]", "qwen_math", 0, 0, "mg.py:950 brackets differ; math-verify intervals differ"),
    Case(_b("(2,1)"), "(1,2)", "qwen_math", 0, 0, "mg.py:958 element-wise in order; math-verify tuples ordered"),
    Case(_b(r"(-\infty, 3) \cup (4, \infty)"), r"(-\infty,3)\cup(4,\infty)", "qwen_math", 1, 1,
         "mg.py:338 spaces removed"),
    Case(_b(r"(4,\infty) \cup (-\infty,3)"), r"(-\infty,3)\cup(4,\infty)", "qwen_math", 0, 1,
         "mg.py:840 more than two letters (i, n, f, u): no sympy; math-verify unions are unordered"),
    # ---- matrices
    Case(_b(r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"), r"\begin{pmatrix}1\\2\end{pmatrix}", "qwen_math", 1, 1,
         "mg.py:268 \\\\ -> \\, mg.py:338 spaces removed"),
    Case(_b(r"\begin{bmatrix}1\\2\end{bmatrix}"), r"\begin{pmatrix}1\\2\end{pmatrix}", "qwen_math", 1, 1,
         "mg.py:274 bmatrix -> pmatrix"),
    Case(_b(r"\begin{pmatrix} 0.5 \\ 2 \end{pmatrix}"), r"\begin{pmatrix}\frac{1}{2}\\2\end{pmatrix}", "qwen_math",
         0, 1, "mg.py:692 latex2text renders [ 1/2; 2 ], which sympy cannot parse; math-verify compares matrices"),
    Case(_b(r"\begin{pmatrix} 2 \\ 1 \end{pmatrix}"), r"\begin{pmatrix}1\\2\end{pmatrix}", "qwen_math", 0, 0,
         "different matrices"),
    # ---- which box: \fbox, bare \boxed 7, two boxes, unclosed
    Case(r"So the answer is \fbox{7}.", "7", "qwen_math", 0, 0, r"mg.py:985 no '\boxed' in the response: no answer"),
    Case(r"The answer is \boxed 7.", "7", "qwen_math", 0, 0, r"mg.py:917 remove_boxed needs '\boxed{'"),
    Case(r"First \boxed{3}, then \fbox{4}.", "4", "qwen_math", 0, 0, r"mg.py:890 rfind('\boxed') wins over \fbox"),
    Case(r"First \boxed{3}, then \fbox{4}.", "3", "qwen_math", 1, 1, r"mg.py:890 the \boxed one is graded"),
    Case(r"First \boxed{3}, finally \boxed{4}.", "4", "qwen_math", 1, 1, r"mg.py:890 the last \boxed"),
    Case(r"First \boxed{3}, finally \boxed{4}.", "3", "qwen_math", 0, 0, r"mg.py:890 the last \boxed"),
    Case(r"So \boxed{\frac{1}{2}", r"\frac{1}{2}", "qwen_math", 0, 0, "mg.py:909 unclosed box: None"),
    Case("No box here, the answer is 7.", "7", "none", 0, 0, r"mg.py:985 no '\boxed': no answer"),
    Case(r"The answer is \boxed{7}.", "7", "none", 1, 1, "tz.py:87 the 'no' template uses boxed_reward_fn"),
    Case(_b("5"), r"so it is $\boxed{5}$.", "qwen_math", 1, 1, r"mg.py:991 a gold with \boxed is unboxed"),
    Case(_b("5"), r"\boxed 5", "qwen_math", 0, 0, "mg.py:991 -> mg.py:917: an unreadable gold box is None"),
    # ---- r1 answer tags
    Case(_r1("7"), "7", "r1", 1, 1, "mg.py:1028 format met; mg.py:1029 text after the last <answer>"),
    Case(" thinking </think><answer> 7 </answer>", "7", "r1", 0, 0, "mg.py:1028 needs '</think> <answer>'"),
    Case(" thinking </think> <answer> 7", "7", "r1", 0, 0, "mg.py:1028 needs '</answer>'"),
    Case(" thinking </think> <answer></answer>", "7", "r1", 0, 0, "mg.py:1029 empty answer grades as ''"),
    Case(_r1(r"\boxed{7}"), "7", "r1", 1, 1, r"mg.py:1030 a \boxed inside the tag is extracted"),
    Case(_r1(r"\boxed 7"), "7", "r1", 0, 0, "mg.py:1032 an unreadable box in the tag scores 0"),
    Case(_r1(r"\fbox{7}"), "7", "r1", 1, 1, r"mg.py:1030 no '\boxed': the raw '\fbox{7}' is graded; "
         r"mg.py:810 latex2text drops the unknown \fbox, leaving 7"),
    Case(r" maybe \boxed{5} ... no. </think> <answer> 3 </answer>", "3", "r1", 1, 1, "tz.py:85 r1 reads the tag"),
    Case(r" maybe \boxed{5} ... no. </think> <answer> 3 </answer>", "5", "r1", 0, 0, "tz.py:85 r1 reads the tag"),
    Case(r" maybe \boxed{5} ... no. </think> <answer> 3 </answer>", "5", "qwen_math", 1, 1,
         r"tz.py:87 other templates read the last \boxed"),
    Case(" a </think> <answer> 1 </answer> b </think> <answer> 9 </answer>", "9", "r1", 1, 1,
         "mg.py:1029 split('<answer>')[-1]: the last tag"),
    Case(" a </think> <answer> 7 </answer> and then 8", "7", "r1", 0, 0,
         "mg.py:1029 the text after </answer> stays in the answer"),
    # ---- empty
    Case("", "3", "qwen_math", 0, 0, "mg.py:1009 no answer"),
    Case("", "3", "r1", 0, 0, "mg.py:1050 unformatted"),
    Case(_b(""), "3", "qwen_math", 0, 0, "mg.py:944 empty answer"),
]


def test_table_is_large_and_covers_the_issue():
    assert len(CASES) >= 60
    assert len({(c.response, c.gold, c.template) for c in CASES}) == len(CASES)
    assert {c.template for c in CASES} == {"qwen_math", "r1", "none"}
    assert sum(c.fast != c.math_verify for c in CASES) >= 8  # the table tells the two verifiers apart


def _direct(case: Case, verifier: str) -> float:
    """The verifier's functions called in this process (no workers): extraction, gold, then the full check."""
    v = grading.get_verifier(verifier)
    answer, gold = v.extract(case.response, case.template), v.gold(case.gold)
    if answer is None or gold is None:
        return 0.0
    return float(v.string_equal(answer, gold) or v.equal(answer, gold, ())[0])


@pytest.mark.parametrize("verifier", ["fast", "math_verify"])
def test_authors_verifiers_match_the_table_directly(verifier):
    wrong = [(c.response, c.gold, c.template, getattr(c, verifier), c.rule) for c in CASES
             if _direct(c, verifier) != getattr(c, verifier)]
    assert not wrong, f"{verifier} disagrees with the authors' grader on: {wrong}"


@pytest.fixture(scope="module", params=["fast", "math_verify"])
def authors_pool(request):
    with RewardGrader(num_workers=2, timeout_s=5.0, verifier=request.param) as pool:  # generous: a busy CI
        yield request.param, pool


@pytest.mark.workers
def test_authors_verifiers_match_the_table_through_the_worker_pool(authors_pool):
    verifier, pool = authors_pool
    for template in ("qwen_math", "r1", "none"):
        cases = [c for c in CASES if c.template == template]
        rewards, stats = pool.grade_batch([c.response for c in cases], [c.gold for c in cases], template)
        wrong = [(c.response, c.gold, getattr(c, verifier), c.rule) for c, r in zip(cases, rewards)
                 if r != getattr(c, verifier)]
        assert not wrong, f"{verifier} ({template}) disagrees with the authors' grader on: {wrong}"
        assert stats["grading_failures"] == stats["grading_timeouts"] == 0


LENIENT_DIFFERS = [  # (response, gold, template, lenient): the issue's examples where ours is more lenient
    (r"So the answer is \fbox{7}.", "7", "qwen_math", 1),
    (r"The answer is \boxed 7.", "7", "qwen_math", 1),
    (_b("5 dollars"), "5", "qwen_math", 1),
    (r"First \boxed{3}, then \fbox{4}.", "4", "qwen_math", 1),
    (_b("2/4"), r"\frac{1}{2}", "qwen_math", 1),
    (_b(r"\{2,1\}"), r"\{1,2\}", "qwen_math", 1),
    (_b("2, 1"), "1, 2", "qwen_math", 1),
    (_b("10^{6}"), "1000000", "qwen_math", 1),
    (" a </think> <answer> 7 </answer> and then 8", "7", "r1", 1),
]


@pytest.mark.workers
def test_lenient_verifier_keeps_its_own_rules():
    with RewardGrader(num_workers=1, verifier="lenient") as pool:
        for response, gold, template, expected in LENIENT_DIFFERS:
            assert pool.grade_batch([response], [gold], template)[0] == [expected], (response, gold)
    for response, gold, template, _ in LENIENT_DIFFERS:  # and the authors' "fast" scores each 0
        assert _direct(Case(response, gold, template, 0, 0, ""), "fast") == 0.0, (response, gold)


PATHOLOGICAL = _b("(x+y+1)^9(x-y+2)^9(x+2y-3)^9(2x+y+5)^9")  # sympy.simplify runs ~20 s on this one, every verifier


@pytest.mark.workers
@pytest.mark.parametrize("verifier", ["fast", "math_verify", "lenient"])
def test_time_limit_kills_a_pathological_answer_under_each_verifier(verifier):
    with RewardGrader(num_workers=1, timeout_s=1.0, verifier=verifier) as pool:
        start = time.monotonic()
        rewards, stats = pool.grade_batch([PATHOLOGICAL, _b("4")], ["x+y", "4"], "qwen_math")
        assert time.monotonic() - start < 6.0
        assert rewards == [0.0, 1.0]
        assert stats["grading_timeouts"] == 1 and stats["worker_restarts"] >= 1
        assert pool.grade_batch([_b(r"\frac{6}{4}")], ["1.5"], "qwen_math")[0] == [1.0]  # the replacement serves


def test_unknown_verifier_is_refused_with_the_valid_names():
    for call in (lambda: math_reward(_b("4"), "4", "qwen_math", verifier="strict"),
                 lambda: GraderConfig(verifier="strict"), lambda: RewardGrader(verifier="strict"),
                 lambda: grading.get_verifier("strict")):
        with pytest.raises(ValueError, match=r"valid names: \['fast', 'lenient', 'math_verify'\]"):
            call()


@pytest.mark.workers
def test_math_reward_takes_the_verifier_and_keeps_the_truncation_rule():
    assert grading.DEFAULT_VERIFIER == "fast" and GraderConfig().verifier == "fast"
    assert math_reward(_b("2/4"), r"\frac{1}{2}", "qwen_math") == 0.0  # default "fast"
    assert math_reward(_b("2/4"), r"\frac{1}{2}", "qwen_math", verifier="math_verify") == 1.0
    assert math_reward(_b("2/4"), r"\frac{1}{2}", "qwen_math", verifier="lenient") == 1.0
    for verifier in grading.VERIFIERS:
        assert math_reward(_b("4"), "4", "qwen_math", truncated=True, verifier=verifier) == 0.0


# ---- the pieces that replace what the authors' code delegates (pylatexenc, sympy's parse_expr)

LATEX2TEXT = [  # (input, pylatexenc 2.10 LatexNodes2Text().latex_to_text(input)), recorded with pylatexenc 2.10
    (r"\frac{1}{2}", "1/2"), (r"\frac12", "1/2"), (r"7 \frac{3}{4}", "7 3/4"), (r"\frac{1}{x+1}", "1/x+1"),
    (r"\sqrt{2}", "√(2)"), (r"2\sqrt2", "2√(2)"), (r"\sqrt[3]{8}", "√(8)"), (r"\frac{\pi}{2}", "π/2"),
    (r"(-\infty, 3) \cup (4, \infty)", "(-∞, 3) ∪(4, ∞)"), (r"\left( 1, 2 \right]", "( 1, 2 ]"),
    (r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", "[ 1 2; 3 4 ]"),
    (r"\{1,2\}", "{1,2}"), (r"x \in [1,2]", "x ∈[1,2]"), (r"\alpha", "α"),
    (r"5\text{ cm}", "5 cm"), (r"\boxed{5}", "5"), (r"a\cdot b", "a·b"), (r"2\times 3", "2×3"), (r"3\pm 1", "3±1"),
    (r"1,\!000", "1,000"), (r"10^{6}", "10^6"), (r"\mathrm{cm}", "cm"), (r"\overline{AB}", "AB"),
    (r"\tfrac{1}{2}", "12"),
    (r"\cos x", "cosx"), (r"a \quad b", "a   b"), (r"\frac{a}{b}c", "a/bc"), (r"\unknownmacro{5}", "5"),
    (r"\left\{1\right\}", "{1}"), (r"\mbox{ft}", ""), (r"1~2", "1\xa02"), (r"2--3", "2–3"), (r"\(x\)", "x"),
    (r"\[x\]", "\n    x\n"), (r"\textbf{A}", "A"), (r"\|x\|", "x"), (r"\binom{5}{2}", "52"), (r"\ne", ""),
    (r"\neq", "≠"), (r"\operatorname{lcm}", "lcm"), ("a}b", "ab"), (r"\frac{1}{2", "1/2"), (r"\le", "≤"),
    (r"\lfloor x \rfloor", "⌊x ⌋"),
]


@pytest.mark.parametrize("latex,text", LATEX2TEXT)
def test_latex2text_reproduction_matches_recorded_pylatexenc_output(latex, text):
    assert authors_normalize._LatexToText(latex).convert() == text


def test_latex2text_reproduction_stays_opaque_outside_its_subset():
    for latex in (r"\hat{x}", r"\mathbf{v}", r"\not=", r"\begin{equation}x\end{equation}", r"\cyra", r"\'e"):
        with pytest.raises(authors_normalize._Opaque):
            authors_normalize._LatexToText(latex).convert()
    # an answer with such LaTeX equals only an identical one in the sympy step (DEVIATION 1)
    assert authors_grader.authors_sympy_equal(r"\hat{x}+1", r"\hat{x}+1")
    assert not authors_grader.authors_sympy_equal(r"\hat{x}+1", r"1+\hat{x}")


PYTHON_EXPRESSIONS = [  # fixed strings (not model text): parse_expr's value is the reference
    "(1/2)-(0.5)", "(2x)-(x2)", "(5!)-(120)", "(2j)-(2*i)", "(007)-(0)", "(pi2)-(2pi)", "(sqrt(2)sqrt(3))-(sqrt(6))",
    "(x(2))-(2x)", "(.5)-(1/2)", "(1.)-(1)", "(xi)-(x*i)", "(40_9)-(409)", "(-2**2)-(4)", "(2**-1)-(0.5)",
    "(x**2y)-(y*x**2)", "(1/2x)-(x/2)", "(7+3/4)-(31/4)", "(3!!)-(3)", "(ln(2)2)-(2ln(2))", "(1e3)-(1000)",
    "(7//2)-(3)", "(2(3)(4))-(24)", "(pi/2)-(0.5pi)", "(mu)-(m*u)", "(sqrt(8))-(2sqrt(2))",
]


@pytest.mark.parametrize("text", PYTHON_EXPRESSIONS)
def test_safe_parser_builds_what_parse_expr_evaluates(text):
    from sympy.parsing.sympy_parser import implicit_multiplication_application, parse_expr, standard_transformations

    expected = parse_expr(text, transformations=standard_transformations + (implicit_multiplication_application,))
    assert authors_expr.authors_parse_python(text) == expected


def test_safe_parser_refuses_code_and_what_it_does_not_reproduce():
    for text in ("__import__('os')", "(1,2)-(2,1)", "[1]-[1]", "x.real", "lambda: 1", "x<1", "re(2)", "9**9**9",
                 "(" * 100 + "1" + ")" * 100, "2 if 1 else 3", "a=1"):
        with pytest.raises(authors_expr.NotReproduced):
            authors_expr.authors_parse_python(text)
    assert authors_expr.authors_parse_python("x**2") == sympy.Symbol("x") ** 2
