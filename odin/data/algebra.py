"""Algebra problems with integer answers, deterministic from a seed.

Three kinds, each its own ``task`` label; ``difficulty`` is the level (1-5; levels 4-5 are
meant for the held-out "harder" split).

``linear`` — solve for x; the prompt ends with ``?``, the answer is ``x=<integer>``::

    3x+5=20?         -> x=5           (level 1: a 1..9, x 0..9, b 0..9)
    -4x+7=-5?        -> x=3           (level 2: signed, |a| <= 9, |x| <= 9)
    5x+3=2x+12?      -> x=3           (level 3+: x on both sides half the time, bigger numbers)

``system`` — two equations in x and y separated by ``;`` with a unique integer solution;
the answer is ``x=<integer>,y=<integer>``::

    2x+3y=12;x-y=1?  -> x=3,y=2

``simplify`` — collect a linear expression in x; the prompt ends with ``=``, the answer is
the canonical form ``<a>x<+|-><b>``::

    3x+2-x+4=        -> 2x+6
    3-2(x-4)+5x=     -> 3x+11         (level 3+: groups k(ax+b))

Canonical writing of ``a*x + b`` (used in prompts and answers): the x term first, a
coefficient of 1 or -1 is written ``x`` / ``-x``, zero parts are left out, ``0`` when
everything is zero (``x-x+3=`` -> ``3``, ``2x-2x=`` -> ``0``). No spaces anywhere.

Scratchpad (``scratchpad=True``; see :mod:`odin.data.scratchpad`), final result after ``#``::

    linear:   3x+5=20?        -> 3x=20-5;3x=15;x=15/3#x=5
              5x+3=2x+12?     -> 5x-2x=12-3;3x=9;x=9/3#x=3
              -x-4=-6?        -> -x=-6+4;-x=-2;x=-2/(-1)#x=2
    system:   Cramer's rule, negative factors after the first in parentheses:
              2x+3y=12;x-y=1? -> D=2*(-1)-1*3=-5;Dx=12*(-1)-1*3=-15;Dy=2*1-1*12=-10;
                                 x=-15/(-5)=3;y=-10/(-5)=2#x=3,y=2   (one line)
    simplify: expand, collect -> 3-2x+8+5x;x:-2+5=3;c:3+8=11#3x+11

``reverse_answer=True`` writes every digit run of the (final) answer least-significant digit
first, exactly like arithmetic: ``x=12`` -> ``x=21``, ``x=-30,y=4`` -> ``x=-03,y=4``.

All randomness comes from a private ``random.Random``; global random state is never used.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from odin.data.arithmetic import reverse_answer_digits
from odin.data.examples import Example
from odin.data.scratchpad import join_steps

ALGEBRA_KINDS: tuple[str, ...] = ("linear", "system", "simplify")
MIN_LEVEL, MAX_LEVEL = 1, 5


@dataclass(frozen=True)
class AlgebraConfig:
    kinds: tuple[str, ...] = ALGEBRA_KINDS
    min_level: int = 1
    max_level: int = 3
    reverse_answer: bool = False
    scratchpad: bool = False

    def __post_init__(self) -> None:
        kinds = (self.kinds,) if isinstance(self.kinds, str) else tuple(self.kinds)
        object.__setattr__(self, "kinds", kinds)
        if not kinds or any(kind not in ALGEBRA_KINDS for kind in kinds) or len(set(kinds)) != len(kinds):
            raise ValueError(f"algebra kinds must be distinct names from {list(ALGEBRA_KINDS)}, got {list(kinds)}")
        for name in ("min_level", "max_level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not MIN_LEVEL <= value <= MAX_LEVEL:
                raise ValueError(f"algebra {name} must be an integer in [{MIN_LEVEL}, {MAX_LEVEL}], got {value!r}")
        if self.min_level > self.max_level:
            raise ValueError(f"algebra min_level ({self.min_level}) must be <= max_level ({self.max_level})")
        for name in ("reverse_answer", "scratchpad"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"algebra {name} must be true or false, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return {"kinds": list(self.kinds), "max_level": self.max_level, "min_level": self.min_level,
                "reverse_answer": self.reverse_answer, "scratchpad": self.scratchpad}


# ------------------------------------------------------------------ formatting
def format_linear(a: int, b: int) -> str:
    """Canonical ``a*x + b``: ``2x+6``, ``-x``, ``3``, ``0``."""
    parts = ""
    if a:
        parts = "x" if a == 1 else "-x" if a == -1 else f"{a}x"
    if b:
        parts += f"{b:+d}" if parts else str(b)
    return parts or "0"


def _x_term(coef: int, var: str, first: bool) -> str:
    if coef == 0:
        return ""
    body = var if abs(coef) == 1 else f"{abs(coef)}{var}"
    sign = "-" if coef < 0 else ("" if first else "+")
    return sign + body


def _const(value: int, first: bool) -> str:
    return str(value) if first else f"{value:+d}"


def _factor(value: int) -> str:
    """A factor after the first one in a product or quotient: negatives in parentheses."""
    return f"({value})" if value < 0 else str(value)


def _signed_list(values: list[int]) -> str:
    return "".join(str(v) if i == 0 else f"{v:+d}" for i, v in enumerate(values))


# ------------------------------------------------------------------ linear equations
_LINEAR_RANGES = {  # level: (|a| max, |x| max, |b| max, both-sides probability, |c| max)
    1: (9, 9, 9, 0.0, 0),
    2: (9, 9, 9, 0.0, 0),
    3: (19, 19, 49, 0.5, 9),
    4: (99, 99, 999, 1.0, 99),
    5: (999, 999, 9999, 1.0, 999),
}


def _nonzero(rng: random.Random, limit: int, signed: bool) -> int:
    value = rng.randint(1, limit)
    return -value if signed and rng.random() < 0.5 else value


def linear_example(rng: random.Random, level: int, *, reverse_answer: bool = False,
                   scratchpad: bool = False) -> Example:
    a_max, x_max, b_max, both, c_max = _LINEAR_RANGES[level]
    signed = level >= 2
    while True:
        a = _nonzero(rng, a_max, signed)
        x = rng.randint(-x_max if signed else 0, x_max)
        c = _nonzero(rng, c_max, True) if both and rng.random() < both else 0
        if c == a:
            continue  # no unique solution
        if c:  # a*x + b = c*x + d: pick d, then b keeps the solution x
            d = rng.randint(-b_max, b_max)
            b = (c - a) * x + d
        else:
            b = rng.randint(-b_max if signed else 0, b_max)
            if a == 1 and b == 0:
                continue  # "x=5?" would state its own answer
            d = a * x + b
        break
    left = _x_term(a, "x", True) + (_const(b, False) if b else "")
    right = (_x_term(c, "x", True) + (_const(d, False) if d else "")) if c else str(d)
    prompt = f"{left}={right}?"
    final = f"x={x}"
    if reverse_answer:
        final = reverse_answer_digits(final)
    if not scratchpad:
        return Example(prompt, final, "linear", level)
    steps = []
    A, D = a - c, d - b
    moved_left = _x_term(a, "x", True) + (_x_term(-c, "x", False) if c else "")
    moved_right = str(d) + (_const(-b, False) if b else "")
    if c or b:
        steps.append(f"{moved_left}={moved_right}")
    collected = f"{_x_term(A, 'x', True)}={D}"
    if not steps or steps[-1] != collected:
        steps.append(collected)
    if A != 1:
        steps.append(f"x={D}/{_factor(A)}")
    return Example(prompt, join_steps(steps, final), "linear", level)


# ------------------------------------------------------------------ 2x2 systems
_SYSTEM_RANGES = {  # level: (|coefficient| max, |solution| max, signed)
    1: (5, 9, False),
    2: (9, 9, True),
    3: (15, 20, True),
    4: (30, 99, True),
    5: (99, 999, True),
}


def _equation(a: int, b: int, c: int) -> str:
    left = _x_term(a, "x", True)
    left += _x_term(b, "y", not left)
    return f"{left}={c}"


def system_example(rng: random.Random, level: int, *, reverse_answer: bool = False,
                   scratchpad: bool = False) -> Example:
    coef_max, sol_max, signed = _SYSTEM_RANGES[level]
    low = -coef_max if signed else 1
    while True:
        a1, b1, a2, b2 = (rng.randint(low, coef_max) for _ in range(4))
        det = a1 * b2 - a2 * b1
        if det != 0:
            break
    x = rng.randint(-sol_max if signed else 0, sol_max)
    y = rng.randint(-sol_max if signed else 0, sol_max)
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    prompt = f"{_equation(a1, b1, c1)};{_equation(a2, b2, c2)}?"
    final = f"x={x},y={y}"
    if reverse_answer:
        final = reverse_answer_digits(final)
    if not scratchpad:
        return Example(prompt, final, "system", level)
    dx = c1 * b2 - c2 * b1
    dy = a1 * c2 - a2 * c1
    steps = [
        f"D={a1}*{_factor(b2)}-{_factor(a2)}*{_factor(b1)}={det}",
        f"Dx={c1}*{_factor(b2)}-{_factor(c2)}*{_factor(b1)}={dx}",
        f"Dy={a1}*{_factor(c2)}-{_factor(a2)}*{_factor(c1)}={dy}",
        f"x={dx}/{_factor(det)}={x}",
        f"y={dy}/{_factor(det)}={y}",
    ]
    return Example(prompt, join_steps(steps, final), "system", level)


# ------------------------------------------------------------------ simplification
_SIMPLIFY_SHAPES = {  # level: (terms, groups, |coefficient| max, minus signs allowed)
    1: (3, 0, 9, False),
    2: (4, 0, 9, True),
    3: (4, 1, 9, True),
    4: (6, 2, 19, True),
    5: (8, 3, 49, True),
}


def simplify_example(rng: random.Random, level: int, *, reverse_answer: bool = False,
                     scratchpad: bool = False) -> Example:
    n_terms, n_groups, coef_max, minus = _SIMPLIFY_SHAPES[level]
    # A term is ("x", k) for k*x, ("c", k) for a constant, ("g", k, a, b) for k(ax+b).
    terms: list[tuple] = [("x", rng.randint(1, coef_max)), ("c", rng.randint(1, coef_max))]
    for _ in range(n_groups):
        terms.append(("g", rng.randint(2, 9), _nonzero(rng, 9, True), _nonzero(rng, 9, True)))
    while len(terms) < n_terms:
        terms.append((rng.choice("xc"), rng.randint(1, coef_max)))
    rng.shuffle(terms)
    signed_terms = []
    for index, term in enumerate(terms):
        sign = -1 if minus and index > 0 and rng.random() < 0.5 else 1
        if minus and index == 0 and rng.random() < 0.25:
            sign = -1
        signed_terms.append((term[0], sign * term[1], *term[2:]))
    text = ""
    expanded: list[tuple[str, int]] = []
    for index, term in enumerate(signed_terms):
        first = index == 0
        if term[0] == "x":
            text += _x_term(term[1], "x", first)
            expanded.append(("x", term[1]))
        elif term[0] == "c":
            text += _const(term[1], first)
            expanded.append(("c", term[1]))
        else:
            k, a, b = term[1], term[2], term[3]
            inner = format_linear(a, b)
            text += (f"{k}" if first else f"{k:+d}") + f"({inner})"
            expanded.extend([("x", k * a), ("c", k * b)])
    a_total = sum(v for kind, v in expanded if kind == "x")
    b_total = sum(v for kind, v in expanded if kind == "c")
    prompt = f"{text}="
    final = format_linear(a_total, b_total)
    if reverse_answer:
        final = reverse_answer_digits(final)
    if not scratchpad:
        return Example(prompt, final, "simplify", level)
    steps = []
    if n_groups:
        steps.append("".join(
            (_x_term(v, "x", i == 0) if kind == "x" else _const(v, i == 0)) for i, (kind, v) in enumerate(expanded)
        ))
    xs = [v for kind, v in expanded if kind == "x"]
    cs = [v for kind, v in expanded if kind == "c"]
    steps.append(f"x:{_signed_list(xs)}={a_total}" if xs else "x:0")
    steps.append(f"c:{_signed_list(cs)}={b_total}" if cs else "c:0")
    return Example(prompt, join_steps(steps, final), "simplify", level)


_MAKERS: dict[str, Callable[..., Example]] = {
    "linear": linear_example, "system": system_example, "simplify": simplify_example,
}


def sample_example(config: AlgebraConfig, rng: random.Random) -> Example:
    """Kind uniform over ``config.kinds``, level uniform over ``[min_level, max_level]``."""
    kind = config.kinds[rng.randrange(len(config.kinds))]
    level = rng.randint(config.min_level, config.max_level)
    return _MAKERS[kind](rng, level, reverse_answer=config.reverse_answer, scratchpad=config.scratchpad)


def sample_unique_examples(config: AlgebraConfig, n: int, seed: int | str,
                           exclude: set[str] | frozenset[str] = frozenset()) -> list[Example]:
    """``n`` examples with pairwise different prompts (none in ``exclude``), deterministic.

    Raises ``RuntimeError`` if the levels cannot supply that many distinct problems.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(f"odin.algebra:{seed}")
    seen: set[str] = set()
    examples: list[Example] = []
    draws, max_draws = 0, 50 * n + 10_000
    while len(examples) < n:
        draws += 1
        if draws > max_draws:
            raise RuntimeError(f"found only {len(examples)} distinct algebra problems of {n} after {max_draws} "
                               f"draws; widen the levels or request fewer examples")
        example = sample_example(config, rng)
        if example.prompt in seen or example.prompt in exclude:
            continue
        seen.add(example.prompt)
        examples.append(example)
    return examples
