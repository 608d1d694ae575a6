"""Worked arithmetic: the intermediate steps a teacher writes out, with an optional local slip.

Every domain's trace is built from these steps, so a trace's length grows with the size of the
numbers and the number of operations, and every elementary result (a digit product, a carry, a
partial remainder) passes through :meth:`Work.op`. A teacher with a *slip* gets exactly one of
those results wrong (a digit off by one, a dropped carry) and carries the wrong value through the
rest of the computation, as a person or a model does: the error is local, so independent samples
make different ones and a vote over samples can recover the right answer.

Two methods per operation, so teacher styles differ in how they compute, not only in wording:

- ``column``: multiplication digit by digit with carries and partial products, addition column by
  column, long division with a trial product for each quotient digit.
- ``decompose``: multiplication split by the place values of the multiplier (one-shot products by a
  single digit), addition of running sums, division by subtracting place-value chunks.

Written for this package (no library produces worked-out traces); the results are checked against
Python's own arithmetic in the tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction


@dataclass
class Work:
    """A trace being written: its lines, a counter of elementary steps, and at most one slip.

    ``slip_at`` is the index of the step that goes wrong (None: a clean computation). ``ops``
    counts the steps, so a first clean run tells how many positions a slip can take.
    """

    slip_at: int | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    lines: list[str] = field(default_factory=list)
    ops: int = 0
    slipped: bool = False

    def op(self, value: int, kind: str = "digit") -> int:
        """The result of one elementary step: ``value``, or a plausible wrong one at the slip.

        ``digit`` steps (a digit product, a column sum) go off by one; ``number`` steps (a one-shot
        multi-digit result) get one digit wrong.
        """
        i = self.ops
        self.ops += 1
        if i != self.slip_at:
            return value
        self.slipped = True
        if kind == "digit" or abs(value) < 10:
            return value + 1 if value <= 0 or self.rng.random() < 0.5 else value - 1
        place = 10 ** self.rng.randrange(len(str(abs(value))))
        return value + place if self.rng.random() < 0.5 or abs(value) < 2 * place else value - place

    def line(self, text: str) -> None:
        self.lines.append(text)

    def text(self) -> str:
        return "\n".join(self.lines)


def paren(n: int) -> str:
    """A second operand as written by hand: negative numbers in parentheses, ``3*(-4)``."""
    return f"({n})" if n < 0 else str(n)


def digits_of(n: int) -> list[int]:
    """Decimal digits of a non-negative integer, least significant first."""
    return [int(c) for c in reversed(str(n))]


def _place_name(i: int) -> str:
    names = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions"]
    return names[i] if i < len(names) else f"10^{i}"


# ============================================================================== addition
def add_column(nums: list[int], w: Work) -> int:
    """Sum of non-negative integers, column by column with carries (one line per column)."""
    if len(nums) == 1:
        return nums[0]
    w.line("Add " + " + ".join(str(n) for n in nums) + " column by column:")
    width = max(len(str(n)) for n in nums)
    carry, out = 0, []
    for i in range(width):
        ds = [digits_of(n)[i] if i < len(str(n)) else 0 for n in nums]
        s = w.op(sum(ds) + carry)
        expr = "+".join(str(d) for d in ds) + (f"+{carry}" if carry else "")
        w.line(f"{_place_name(i)}: {expr} = {s}, write {s % 10} carry {s // 10}")
        out.append(s % 10)
        carry = s // 10
    total = int(str(carry) + "".join(str(d) for d in reversed(out))) if carry else \
        int("".join(str(d) for d in reversed(out)))
    w.line(f"Sum: {total}")
    return total


def add_running(nums: list[int], w: Work) -> int:
    """Sum of integers as a chain of running totals, one result per line."""
    total = nums[0]
    for n in nums[1:]:
        new = w.op(total + n, "number")
        w.line(f"{total} + {n} = {new}" if n >= 0 else f"{total} - {-n} = {new}")
        total = new
    return total


# ============================================================================== multiplication
def mul_digit_row(a: int, d: int, w: Work) -> int:
    """a * d (d a single digit) digit by digit, carries written."""
    carry, out = 0, []
    da = digits_of(a)
    for i, x in enumerate(da):
        t = w.op(x * d + carry)
        last = i == len(da) - 1
        expr = f"{x}*{d}" + (f"+{carry}" if carry else "")
        if last:
            w.line(f"{expr} = {t}, write {t}")
            out.append(str(t)[::-1])
        else:
            w.line(f"{expr} = {t}, write {t % 10} carry {t // 10}")
            out.append(str(t % 10))
            carry = t // 10
    return int("".join(out)[::-1])


def mul_column(a: int, b: int, w: Work) -> int:
    """a * b (non-negative) by the column method: one partial product per digit of b, then the sum."""
    if a < 10 and b < 10:
        r = w.op(a * b)
        w.line(f"{a}*{b} = {r}")
        return r
    if a < b:
        a, b = b, a
    w.line(f"Multiply {a} by {b} digit by digit.")
    rows = []
    for i, d in enumerate(digits_of(b)):
        if d == 0:
            w.line(f"{_place_name(i)} digit 0: row 0")
            rows.append(0)
            continue
        w.line(f"{a} x {d} ({_place_name(i)} digit):")
        row = mul_digit_row(a, d, w)
        shifted = row * 10 ** i
        w.line(f"row {row}" + (f", shifted {shifted}" if i else ""))
        rows.append(shifted)
    rows = [r for r in rows if r] or [0]
    return add_column(rows, w)


def mul_decompose(a: int, b: int, w: Work) -> int:
    """a * b (non-negative) by place values of b: one-shot single-digit products, then running sums."""
    if a < 10 and b < 10:
        r = w.op(a * b)
        w.line(f"{a}*{b} = {r}")
        return r
    if a < b:
        a, b = b, a
    parts = [(d, i) for i, d in reversed(list(enumerate(digits_of(b)))) if d]
    w.line(f"{a} * {b} = " + " + ".join(f"{a}*{d * 10 ** i}" for d, i in parts))
    terms = []
    for d, i in parts:
        r = w.op(a * d, "number")
        w.line(f"{a}*{d} = {r}" + (f", so {a}*{d * 10 ** i} = {r * 10 ** i}" if i else ""))
        terms.append(r * 10 ** i)
    return add_running(terms, w) if len(terms) > 1 else terms[0]


def _power_of_ten(n: int) -> bool:
    """1, 10, 100, ...: multiplying or dividing by one is a shift, written in one step."""
    return n >= 1 and str(n).strip("0") == "1"


def multiply(a: int, b: int, w: Work, method: str) -> int:
    """Signed a * b; small products in one step, others worked out by ``method``."""
    sign = -1 if (a < 0) != (b < 0) else 1
    x, y = abs(a), abs(b)
    if x * y < 100 or min(x, y) < 10 and max(x, y) < 100 or _power_of_ten(x) or _power_of_ten(y):
        r = w.op(x * y, "number" if x * y >= 10 else "digit") * sign
        w.line(f"{a}*{paren(b)} = {r}")
        return r
    r = (mul_column if method == "column" else mul_decompose)(x, y, w)
    if sign < 0:
        w.line(f"with the sign: {a}*{paren(b)} = {-r}")
    return r * sign


# ============================================================================== division
def div_long(a: int, d: int, w: Work) -> tuple[int, int]:
    """Quotient and remainder of a // d (a >= 0, d > 0) by long division with trial products."""
    w.line(f"Long division {a} / {d}:")
    q, rem, started = 0, 0, False
    for ch in str(a):
        cur = rem * 10 + int(ch)
        if not started and cur < d:
            rem = cur
            continue
        started = True
        qd = w.op(cur // d)
        prod = w.op(qd * d, "number")
        if d >= 10:
            w.line(f"{cur}: try {qd}: {qd}*{d} = {prod}, {qd + 1}*{d} = {(qd + 1) * d} > {cur}")
        else:
            w.line(f"{cur}: {cur} / {d} = {qd}, {qd}*{d} = {prod}")
        rem = w.op(cur - prod, "number")
        w.line(f"{cur} - {prod} = {rem}")
        q = q * 10 + qd
    w.line(f"Quotient {q}, remainder {rem}")
    return q, rem


def div_chunks(a: int, d: int, w: Work) -> tuple[int, int]:
    """Quotient and remainder of a // d by subtracting multiples of d at descending place values."""
    w.line(f"Divide {a} by {d} in chunks:")
    rest, parts = a, []
    for i in range(len(str(a)) - 1, -1, -1):
        unit = d * 10 ** i
        if rest < unit:
            continue
        k = w.op(rest // unit)
        chunk = w.op(k * unit, "number")
        new = w.op(rest - chunk, "number")
        w.line(f"{d}*{k * 10 ** i} = {chunk}, {rest} - {chunk} = {new}")
        parts.append(k * 10 ** i)
        rest = new
    q = add_running(parts, w) if len(parts) > 1 else (parts[0] if parts else 0)
    w.line(f"Quotient {q}, remainder {rest}")
    return q, rest


def divide_exact(a: int, d: int, w: Work, method: str) -> int:
    """Signed a / d, expected exact; small cases in one step."""
    sign = -1 if (a < 0) != (d < 0) else 1
    x, y = abs(a), abs(d)
    if x < 100 and y < 10 or x == 0 or _power_of_ten(y):
        q = w.op(x // y, "number") * sign
        w.line(f"{a} / {paren(d)} = {q}")
        return q
    q, _ = (div_long if method == "column" else div_chunks)(x, y, w)
    if sign < 0:
        w.line(f"with the sign: {a} / {paren(d)} = {-q}")
    return q * sign


# ============================================================================== gcd, lcm, fractions
def gcd_euclid(a: int, b: int, w: Work) -> int:
    """gcd by Euclid's remainders, one line per division."""
    a, b = abs(a), abs(b)
    if a < b:
        a, b = b, a
    if b == 0:
        w.line(f"gcd({a}, 0) = {a}")
        return a
    w.line(f"gcd({a}, {b}):")
    steps = 0
    while b and steps < 40:
        q = w.op(a // b)
        r = w.op(a - q * b, "number")
        w.line(f"{a} = {q}*{b} + {r}")
        if r < 0:
            r = -r
        a, b = b, r
        steps += 1
    w.line(f"gcd = {a}")
    return max(a, 1)


def prime_factors(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    if n > 1:
        out.append(n)
    return out


def frac_tex(f: Fraction) -> str:
    """A reduced fraction as the answers are written: integers plain, else ``\\frac{p}{q}``."""
    if f.denominator == 1:
        return str(f.numerator)
    sign = "-" if f < 0 else ""
    return f"{sign}\\frac{{{abs(f.numerator)}}}{{{f.denominator}}}"


def reduce_fraction(num: int, den: int, w: Work, method: str) -> tuple[int, int]:
    """num/den in lowest terms via Euclid's gcd, the division written out."""
    if num == 0:
        w.line("The numerator is 0, so the value is 0.")
        return 0, 1
    g = gcd_euclid(num, den, w)
    if g == 1:
        w.line(f"{num}/{den} is already reduced.")
        return num, den
    n2 = divide_exact(num, g, w, method)
    d2 = divide_exact(den, g, w, method)
    w.line(f"Reduced: {n2}/{d2}")
    return n2, d2


def fmt_decimal(x: Fraction) -> str:
    """A finite decimal without trailing zeros (the science answers are built to be finite)."""
    if x.denominator == 1:
        return str(x.numerator)
    sign = "-" if x < 0 else ""
    x = abs(x)
    whole, frac = divmod(x.numerator, x.denominator)
    digits = ""
    for _ in range(6):
        frac *= 10
        digits += str(frac // x.denominator)
        frac %= x.denominator
        if frac == 0:
            break
    return f"{sign}{whole}.{digits.rstrip('0') or '0'}"


__all__ = ["Work", "add_column", "add_running", "digits_of", "paren", "div_chunks", "div_long",
           "divide_exact", "fmt_decimal", "frac_tex", "gcd_euclid", "mul_column", "mul_decompose", "multiply",
           "prime_factors", "reduce_fraction"]
