"""The authors' ``_normalize`` (``math_grader.py`` line 760) with a reproduction of pylatexenc 2.10's latex2text,
which their ``_parse_latex`` calls: the string their sympy step compares. Part of the port in
``pipeline.rl.authors_grader``.
"""

from __future__ import annotations

import re

_MATHD_WHOLE_TEXT = re.compile("^\\\\text\\{(?P<text>.+?)\\}$")  # mg.py:190 _strip_string's whole-\\text{} case (also authors_grader's)
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


