"""Math problems whose worked solutions grow with the difficulty level.

Five families, each parametrised by the level (1 = a few steps, 10 = hundreds of steps):

- ``mul``: long multiplication (digits of the factors grow with the level);
- ``div``: exact division (quotient and divisor digits grow);
- ``frac``: a sum of fractions reduced to lowest terms (more and larger denominators);
- ``linear``: a linear equation with bracketed terms on both sides (more terms, larger coefficients);
- ``system``: two linear equations in x and y (larger coefficients and solutions).

The two teacher methods solve them differently: ``column`` (column multiplication, long division,
lcm from prime factors, expand-collect-isolate, elimination) and ``decompose`` (place-value
decomposition, chunked division, pairwise cross-multiplication, the value of both sides at x = 0
and x = 1, substitution). The answer is exact (an integer or a reduced fraction in ``\\boxed{}``).
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Any

from falcon_h1r.tasks.arithmetic import (Work, add_running, divide_exact, frac_tex, multiply, paren,
                                          prime_factors, reduce_fraction)

FAMILIES = ("mul", "div", "frac", "linear", "system")


def _rand_digits(rng: random.Random, n: int) -> int:
    return rng.randint(10 ** (n - 1), 10 ** n - 1) if n > 1 else rng.randint(2, 9)


def _lin(a: int, b: int, var: str = "x") -> str:
    """``a*var + b`` as written by hand: ``3x - 5``, ``-x + 2``, ``4x``."""
    head = {1: var, -1: f"-{var}"}.get(a, f"{a}{var}")
    if a == 0:
        return str(b)
    return head if b == 0 else f"{head} {'+' if b > 0 else '-'} {abs(b)}"


def _signed_terms(terms: list[str]) -> str:
    out = terms[0]
    for t in terms[1:]:
        out += f" - {t[1:]}" if t.startswith("-") else f" + {t}"
    return out


# ============================================================================== problem makers
def _mul(rng: random.Random, level: int) -> dict[str, Any]:
    na, nb = [(2, 1), (2, 2), (3, 2), (3, 3), (4, 3), (4, 4), (5, 4), (5, 5), (6, 5), (6, 6)][level - 1]
    a, b = _rand_digits(rng, na), _rand_digits(rng, nb)
    return {"question": f"Compute {a} * {b}.", "answer": str(a * b), "spec": {"family": "mul", "a": a, "b": b}}


def _div(rng: random.Random, level: int) -> dict[str, Any]:
    nq, nd = [(2, 1), (3, 1), (4, 1), (3, 2), (4, 2), (5, 2), (6, 2), (7, 2), (6, 3), (7, 3)][level - 1]
    q = _rand_digits(rng, nq)
    d = rng.randint(3, 9) if nd == 1 else _rand_digits(rng, nd)
    a = q * d
    return {"question": f"Compute {a} / {d} (the division is exact).", "answer": str(q),
            "spec": {"family": "div", "a": a, "d": d}}


def _frac(rng: random.Random, level: int) -> dict[str, Any]:
    n = 2 if level <= 4 else (3 if level <= 7 else 4)
    top = 4 + 2 * level
    while True:  # textbook-sized common denominators: the work grows with the level, not without bound
        dens = [rng.randint(2, top) for _ in range(n)]
        if math.lcm(*dens) <= 30 * level:
            break
    nums = [rng.randint(1, d + level) for d in dens]
    signs = [1] + [rng.choice([1, 1, -1]) for _ in range(n - 1)]
    total = sum(Fraction(s * a, d) for s, a, d in zip(signs, nums, dens))
    expr = f"{nums[0]}/{dens[0]}" + "".join(f" {'+' if s > 0 else '-'} {a}/{d}"
                                              for s, a, d in zip(signs[1:], nums[1:], dens[1:]))
    return {"question": f"Compute {expr} as a reduced fraction.", "answer": frac_tex(total),
            "spec": {"family": "frac", "nums": [s * a for s, a in zip(signs, nums)], "dens": dens}}


_LINEAR_SHAPE = [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (4, 3), (4, 4), (5, 4)]


def _nz(rng: random.Random, lo: int, hi: int) -> int:
    return rng.choice([-1, 1]) * rng.randint(lo, hi)


def _linear(rng: random.Random, level: int) -> dict[str, Any]:
    n_left, n_right = _LINEAR_SHAPE[level - 1]
    kmax, amax, bmax = 2 + level, 3 + level, 5 + 3 * level
    while True:
        x = _nz(rng, 1, 5 + 2 * level)
        if n_left == 0:  # level 1: ax + b = c
            left = [[1, _nz(rng, 2, amax), _nz(rng, 1, bmax)]]
        else:
            left = [[_nz(rng, 2, kmax), _nz(rng, 1, amax), _nz(rng, 1, bmax)] for _ in range(n_left)]
        right = [[_nz(rng, 2, kmax), _nz(rng, 1, amax), _nz(rng, 1, bmax)] for _ in range(max(0, n_right - 1))]
        if n_right:
            right.append([1, _nz(rng, 1, amax), 0])  # a plain x term on the right
        coef = sum(k * a for k, a, _ in left) - sum(k * a for k, a, _ in right)
        if coef == 0:
            continue
        const = sum(k * (a * x + b) for k, a, b in left) - sum(k * (a * x + b) for k, a, b in right)
        break
    return {"question": f"Solve for x: {_equation_text(left, right, const)}.", "answer": str(x),
            "spec": {"family": "linear", "left": left, "right": right, "const": const}}


def _term_text(k: int, a: int, b: int) -> str:
    if k == 1:
        return _lin(a, b)
    return f"{k}({_lin(a, b)})" if k != -1 else f"-({_lin(a, b)})"


def _equation_text(left: list[list[int]], right: list[list[int]], const: int) -> str:
    lhs = _signed_terms([_term_text(*t) for t in left])
    rhs_terms = [_term_text(*t) for t in right] + ([str(const)] if const or not right else [])
    return f"{lhs} = {_signed_terms(rhs_terms)}"


def _system(rng: random.Random, level: int) -> dict[str, Any]:
    cmax, vmax = 2 + level + level // 2, 3 + 3 * level
    while True:
        x, y = _nz(rng, 1, vmax), _nz(rng, 1, vmax)
        a1, b1, a2 = _nz(rng, 1, cmax), _nz(rng, 2, cmax), _nz(rng, 2, cmax)
        b2 = rng.choice([-1, 1])  # the second equation can be solved for y directly
        if a1 * b2 - a2 * b1 != 0:
            break
    c1, c2 = a1 * x + b1 * y, a2 * x + b2 * y
    eq1 = f"{_signed_terms([_lin(a1, 0), _lin(b1, 0, 'y')])} = {c1}"
    eq2 = f"{_signed_terms([_lin(a2, 0), _lin(b2, 0, 'y')])} = {c2}"
    return {"question": f"Solve the system {eq1} and {eq2}. What is x + y?", "answer": str(x + y),
            "spec": {"family": "system", "eq1": [a1, b1, c1], "eq2": [a2, b2, c2]}}


_MAKERS = {"mul": _mul, "div": _div, "frac": _frac, "linear": _linear, "system": _system}


def make_math(rng: random.Random, level: int) -> dict[str, Any]:
    return _MAKERS[rng.choice(FAMILIES)](rng, level)


# ============================================================================== solvers (the trace)
def _solve_mul(s: dict[str, Any], method: str, w: Work) -> str:
    return str(multiply(s["a"], s["b"], w, method))


def _solve_div(s: dict[str, Any], method: str, w: Work) -> str:
    return str(divide_exact(s["a"], s["d"], w, method))


def _lcm_by_factors(dens: list[int], w: Work) -> int:
    power: dict[int, int] = {}
    for d in dens:
        f = prime_factors(d)
        w.line(f"{d} = " + "*".join(str(p) for p in f))
        for p in set(f):
            power[p] = max(power.get(p, 0), f.count(p))
    factors = [p for p in sorted(power) for _ in range(power[p])]
    lcm = factors[0]
    for p in factors[1:]:
        lcm = w.op(lcm * p, "number")
    w.line("lcm = " + "*".join(str(p) for p in factors) + f" = {lcm}")
    return lcm


def _solve_frac(s: dict[str, Any], method: str, w: Work) -> str:
    nums, dens = s["nums"], s["dens"]
    if method == "column":
        w.line("Common denominator from the prime factors:")
        lcm = _lcm_by_factors(dens, w)
        scaled = []
        for n, d in zip(nums, dens):
            f = divide_exact(lcm, d, w, method) if lcm >= 100 else w.op(lcm // d)
            if lcm < 100:
                w.line(f"{lcm} / {d} = {f}")
            m = multiply(n, f, w, method)
            w.line(f"{n}/{d} = {m}/{lcm}")
            scaled.append(m)
        w.line("Add the numerators:")
        total = add_running(scaled, w) if len(scaled) > 1 else scaled[0]
        w.line(f"Sum: {total}/{lcm}")
        num, den = reduce_fraction(total, lcm, w, method)
    else:
        num, den = nums[0], dens[0]
        for n, d in zip(nums[1:], dens[1:]):
            w.line(f"{num}/{den} {'+' if n > 0 else '-'} {abs(n)}/{d} = ({num}*{d} {'+' if n > 0 else '-'} "
                   f"{abs(n)}*{den})/({den}*{d})")
            p1, p2 = multiply(num, d, w, method), multiply(n, den, w, method)
            top = w.op(p1 + p2, "number")
            w.line(f"{p1} {'+' if p2 >= 0 else '-'} {abs(p2)} = {top}")
            bottom = multiply(den, d, w, method)
            w.line(f"= {top}/{bottom}")
            num, den = reduce_fraction(top, bottom, w, method)
    if den < 0:
        num, den = -num, -den
    return frac_tex(Fraction(num, den)) if den else str(num)


def _collect(terms: list[list[int]], side: str, method: str, w: Work) -> tuple[int, int]:
    """Expand every bracket of one side and collect the x coefficient and the constant."""
    xs, cs = [], []
    for k, a, b in terms:
        if k == 1:
            ka, kb = a, b
        else:
            ka, kb = multiply(k, a, w, method), multiply(k, b, w, method)
            w.line(f"{_term_text(k, a, b)} = {_lin(ka, kb)}")
        xs.append(ka)
        cs.append(kb)
    xc = add_running(xs, w) if len(xs) > 1 else xs[0]
    cc = add_running(cs, w) if len(cs) > 1 else cs[0]
    w.line(f"{side} side: {_lin(xc, cc)}")
    return xc, cc


def _side_value(terms: list[list[int]], const: int, x: int, method: str, w: Work) -> int:
    vals = []
    for k, a, b in terms:
        inner = w.op(a * x + b, "number")
        v = multiply(k, inner, w, method) if k != 1 else inner
        w.line(f"{_term_text(k, a, b)} at x = {x}: {v}")
        vals.append(v)
    if const:
        vals.append(const)
    return add_running(vals, w) if len(vals) > 1 else (vals[0] if vals else 0)


def _solve_linear(s: dict[str, Any], method: str, w: Work) -> str:
    left, right, const = s["left"], s["right"], s["const"]
    if method == "column":
        w.line("Expand and collect each side.")
        lx, lc = _collect(left, "Left", method, w)
        rx, rc = _collect(right, "Right", method, w) if right else (0, const)
        if right and const:
            new = w.op(rc + const, "number")
            w.line(f"with the constant {const}: {rc} + ({const}) = {new}, right side: {_lin(rx, new)}")
            rc = new
        a = w.op(lx - rx, "number")
        w.line(f"x terms to the left: {lx} - ({rx}) = {a}")
        b = w.op(rc - lc, "number")
        w.line(f"constants to the right: {rc} - ({lc}) = {b}")
        w.line(f"{a}x = {b}")
        return str(divide_exact(b, a, w, method))
    w.line("Write f(x) = left - right; f is linear, so f(0) and f(1) fix it.")
    vals = []
    for x in (0, 1):
        lv = _side_value(left, 0, x, method, w)
        rv = _side_value(right, const, x, method, w)
        f = w.op(lv - rv, "number")
        w.line(f"f({x}) = {lv} - ({rv}) = {f}")
        vals.append(f)
    slope = w.op(vals[1] - vals[0], "number")
    w.line(f"slope = f(1) - f(0) = {vals[1]} - ({vals[0]}) = {slope}")
    w.line(f"x = -f(0) / slope = {-vals[0]} / {slope}")
    return str(divide_exact(-vals[0], slope, w, method))


def _solve_system(s: dict[str, Any], method: str, w: Work) -> str:
    (a1, b1, c1), (a2, b2, c2) = s["eq1"], s["eq2"]
    if method == "column":
        w.line(f"Eliminate x: multiply the first equation by {a2} and the second by {a1}.")
        p1, q1 = multiply(b1, a2, w, method), multiply(c1, a2, w, method)
        p2, q2 = multiply(b2, a1, w, method), multiply(c2, a1, w, method)
        w.line(f"Subtract: ({p1} - ({p2}))y = {q1} - ({q2})")
        cy, rhs = w.op(p1 - p2, "number"), w.op(q1 - q2, "number")
        w.line(f"{cy}y = {rhs}")
        y = divide_exact(rhs, cy, w, method)
        w.line(f"y = {y}. Put it into {_lin(a1, 0)} + ({b1})y = {c1}:")
        by = multiply(b1, y, w, method)
        rest = w.op(c1 - by, "number")
        w.line(f"{_lin(a1, 0)} = {c1} - ({by}) = {rest}")
        x = divide_exact(rest, a1, w, method)
    else:
        k, m = -a2 * b2, c2 * b2
        flip = ", then change every sign" if b2 < 0 else ""
        w.line(f"From the second equation (move {_lin(a2, 0)} to the right{flip}): y = {_lin(k, m)}.")
        w.line(f"Substitute into the first: {_lin(a1, 0)} + {paren(b1)}({_lin(k, m)}) = {c1}")
        bk, bm = multiply(b1, k, w, method), multiply(b1, m, w, method)
        cx = w.op(a1 + bk, "number")
        w.line(f"{a1} + ({bk}) = {cx}, so {cx}x + ({bm}) = {c1}")
        rhs = w.op(c1 - bm, "number")
        w.line(f"{cx}x = {c1} - ({bm}) = {rhs}")
        x = divide_exact(rhs, cx, w, method)
        kx = multiply(k, x, w, method)
        y = w.op(kx + m, "number")
        w.line(f"y = {kx} + ({m}) = {y}")
    total = w.op(x + y, "number")
    w.line(f"x + y = {x} + ({y}) = {total}")
    return str(total)


_SOLVERS = {"mul": _solve_mul, "div": _solve_div, "frac": _solve_frac, "linear": _solve_linear,
            "system": _solve_system}


def solve_math(spec: dict[str, Any], method: str, w: Work) -> str:
    """Write the worked solution into ``w`` and return the final answer as the box will show it."""
    return _SOLVERS[spec["family"]](spec, method, w)


def math_final(answer: str) -> str:
    return f"The answer is \\boxed{{{answer}}}."


__all__ = ["FAMILIES", "make_math", "math_final", "solve_math"]
