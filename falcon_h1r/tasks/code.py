"""Code problems: a function ``solve(xs)`` over a list of integers, specified step by step in words.

Two families, built from a structured spec that yields the question, the reference code, an
interpreter (for the expected outputs and the teacher's trace) and its one-slip mutants:

- ``pipeline``: filter and map stages, then a reduction (sum, count, max, product modulo m, ...)
  and at higher levels a final affine step;
- ``loop``: a state machine over the list: one or two accumulators, if/elif/else update rules.

The level sets the number of stages or rules, the size of the constants and the length of the
example the question shows. Hidden tests are ``assert solve(<list>) == <int>`` strings, chosen so
that every *mutant* of the spec (a constant off by one, a comparison flipped, even/odd or max/min
swapped: the local slips a model makes) fails at least one of them; mutants no input tells apart
from the reference are discarded.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from falcon_h1r.tasks.arithmetic import Work

FAMILIES = ("pipeline", "loop")
_CMP = {">": "greater than", ">=": "at least", "<": "less than", "<=": "at most"}
_FLIP = {">": ">=", ">=": ">", "<": "<=", "<=": "<"}
MAX_TESTS = 12


def _affine_text(a: int, b: int, var: str = "v") -> str:
    head = var if a == 1 else f"{a}*{var}"
    return head if b == 0 else f"{head} {'+' if b > 0 else '-'} {abs(b)}"


# ============================================================================== specs
def _stage(rng: random.Random, level: int) -> list[Any]:
    kind = rng.choice(["keep_mod", "drop_mod", "keep_cmp", "map_affine", "map_mod", "map_absdiff", "map_floordiv"])
    top = 10 + 8 * level
    if kind in ("keep_mod", "drop_mod"):
        k = rng.randint(2, 3 + level // 2)
        return [kind, k, rng.randint(0, k - 1)]
    if kind == "keep_cmp":
        return [kind, rng.choice(list(_CMP)), rng.randint(2, top // 2)]
    if kind == "map_affine":
        return [kind, rng.randint(2, 2 + level // 2), rng.choice([-1, 1]) * rng.randint(1, 5 + level)]
    if kind == "map_mod":
        return [kind, rng.randint(3, 6 + level)]
    if kind == "map_absdiff":
        return [kind, rng.randint(3, top // 2)]
    return [kind, rng.randint(2, 4 + level // 3)]


def _pipeline(rng: random.Random, level: int) -> dict[str, Any]:
    stages = [_stage(rng, level) for _ in range((level + 1) // 2)]
    reductions = [["sum"], ["count"], ["max"], ["min"]]
    if level >= 3:
        reductions += [["sum_sq"], ["alt_sum"], ["prod_mod", rng.randint(7, 20 + 10 * level)]]
    final = [rng.randint(2, 3 + level // 3), rng.choice([-1, 1]) * rng.randint(1, 9 + level)] if level >= 4 else None
    spec = {"family": "pipeline", "stages": stages, "reduce": rng.choice(reductions), "final": final}
    if level >= 6:  # the final step given by two of its values: a and b must be worked out first
        p1 = rng.randint(1, 5)
        p2 = p1 + rng.randint(1, 4)
        spec["final_given"] = [[p, final[0] * p + final[1]] for p in (p1, p2)]
    return spec


def _cond(rng: random.Random, level: int, kind: str) -> list[Any]:
    if kind == "parity":
        return [rng.choice(["even", "odd"])]
    if kind == "gt":
        return [kind, rng.randint(2, 5 + 4 * level)]
    if kind == "mod":
        return [kind, rng.randint(3, 4 + level // 2), 0]
    return [kind]


def _update(rng: random.Random, target: str, two: bool) -> list[Any]:
    """``[target, pa, pb, pv, c]``: target = pa*a + pb*b + pv*v + c (pb only with two accumulators)."""
    other = rng.choice([0, 1]) if two else 0
    own = 1 if other or rng.random() < 0.7 else 2
    pv = rng.choice([-2, -1, 1, 1, 2, 3])
    c = rng.choice([0, 0, rng.randint(-5, 9)])
    pa, pb = (own, other) if target == "a" else (other, own)
    return [target, pa, pb, pv, c]


def _loop(rng: random.Random, level: int) -> dict[str, Any]:
    two = level >= 5
    n_rules = 1 if level <= 2 else (2 if level <= 6 else 3)
    while True:  # every branch reachable and different; with two accumulators both change somewhere
        kinds = rng.sample(["parity", "gt", "mod"], n_rules)
        rules = [[_cond(rng, level, k), [_update(rng, rng.choice("ab") if two else "a", two)
                                         for _ in range(1 + (two and rng.random() < 0.5))]] for k in kinds]
        other = [_update(rng, rng.choice("ab") if two else "a", two)]
        updates = [u for _, ups in rules for u in ups] + other
        distinct = len({str(ups) for _, ups in rules} | {str(other)}) == n_rules + 1
        if distinct and (not two or {"a", "b"} <= {u[0] for u in updates}):
            break
    init = [rng.randint(0, 9), rng.randint(0, 9) if two else 0]
    ret = [1, rng.randint(1, 3), rng.randint(-9, 9)] if two else [1, 0, rng.randint(-9, 9)]
    return {"family": "loop", "two": two, "init": init, "rules": rules, "otherwise": other, "ret": ret}


# ============================================================================== interpreter
def _stage_apply(st: list[Any], v: int) -> int | None:
    """The value after one stage, or None when the stage drops it."""
    kind = st[0]
    if kind == "keep_mod":
        return v if v % st[1] == st[2] else None
    if kind == "drop_mod":
        return None if v % st[1] == st[2] else v
    if kind == "keep_cmp":
        op, t = st[1], st[2]
        ok = {">": v > t, ">=": v >= t, "<": v < t, "<=": v <= t}[op]
        return v if ok else None
    if kind == "map_affine":
        return st[1] * v + st[2]
    if kind == "map_mod":
        return v % st[1]
    if kind == "map_absdiff":
        return abs(v - st[1])
    return v // st[1]


def _reduce(red: list[Any], vs: list[int]) -> int:
    kind = red[0]
    if kind == "sum":
        return sum(vs)
    if kind == "count":
        return len(vs)
    if kind == "max":
        return max(vs) if vs else 0
    if kind == "min":
        return min(vs) if vs else 0
    if kind == "sum_sq":
        return sum(v * v for v in vs)
    if kind == "alt_sum":
        return sum(v if i % 2 == 0 else -v for i, v in enumerate(vs))
    p = 1
    for v in vs:
        p = p * v % red[1]
    return p


def _cond_holds(c: list[Any], v: int) -> bool:
    if c[0] in ("even", "odd"):
        return v % 2 == (0 if c[0] == "even" else 1)
    return v > c[1] if c[0] == "gt" else v % c[1] == c[2]


def run_spec(spec: dict[str, Any], xs: list[int]) -> int:
    """What the reference ``solve`` returns on ``xs`` (the interpreter the traces follow)."""
    if spec["family"] == "pipeline":
        vs = []
        for v in xs:
            for st in spec["stages"]:
                v = _stage_apply(st, v)
                if v is None:
                    break
            if v is not None:
                vs.append(v)
        r = _reduce(spec["reduce"], vs)
        return r if spec["final"] is None else spec["final"][0] * r + spec["final"][1]
    st = {"a": spec["init"][0], "b": spec["init"][1]}
    for v in xs:
        ups = next((u for c, u in spec["rules"] if _cond_holds(c, v)), spec["otherwise"])
        for t, pa, pb, pv, c in ups:
            st[t] = pa * st["a"] + pb * st["b"] + pv * v + c
    ca, cb, c0 = spec["ret"]
    return ca * st["a"] + cb * st["b"] + c0


# ============================================================================== words and code
def _stage_words(st: list[Any]) -> str:
    kind = st[0]
    if kind == "keep_mod":
        return f"keep only the numbers that leave remainder {st[2]} when divided by {st[1]}"
    if kind == "drop_mod":
        return f"remove the numbers that leave remainder {st[2]} when divided by {st[1]}"
    if kind == "keep_cmp":
        return f"keep only the numbers {_CMP[st[1]]} {st[2]}"
    if kind == "map_affine":
        return f"replace each number v by {_affine_text(st[1], st[2])}"
    if kind == "map_mod":
        return f"replace each number v by v % {st[1]}"
    if kind == "map_absdiff":
        return f"replace each number v by abs(v - {st[1]})"
    return f"replace each number v by v // {st[1]}"


_REDUCE_WORDS = {"sum": "the sum of the numbers", "count": "how many numbers remain",
                 "max": "the largest number (0 if none remain)", "min": "the smallest number (0 if none remain)",
                 "sum_sq": "the sum of the squares of the numbers",
                 "alt_sum": "the alternating sum (first minus second plus third ...)"}


def _reduce_words(red: list[Any]) -> str:
    return f"the product of the numbers modulo {red[1]} (1 if none remain)" if red[0] == "prod_mod" \
        else _REDUCE_WORDS[red[0]]


def _cond_code(c: list[Any]) -> str:
    if c[0] in ("even", "odd"):
        return f"v % 2 == {0 if c[0] == 'even' else 1}"
    return f"v > {c[1]}" if c[0] == "gt" else f"v % {c[1]} == {c[2]}"


def _cond_words(c: list[Any]) -> str:
    return f"v is {c[0]}" if c[0] in ("even", "odd") else _cond_code(c)


def _update_expr(u: list[Any]) -> str:
    _, pa, pb, pv, c = u
    terms = [f"{k}*{n}" if k not in (1, -1) else ("-" if k == -1 else "") + n
             for k, n in ((pa, "a"), (pb, "b"), (pv, "v")) if k]
    out = terms[0]
    for t in terms[1:]:
        out += f" - {t[1:]}" if t.startswith("-") else f" + {t}"
    return out if c == 0 else f"{out} {'+' if c > 0 else '-'} {abs(c)}"


def _ret_expr(ret: list[Any]) -> str:
    _, cb, c0 = ret
    out = "a" + (f" + {cb}*b" if cb > 1 else (" + b" if cb == 1 else ""))
    return out if c0 == 0 else f"{out} {'+' if c0 > 0 else '-'} {abs(c0)}"


def describe(spec: dict[str, Any]) -> list[str]:
    """The spec as numbered sentences (the question states them, the stepwise plan repeats them)."""
    if spec["family"] == "pipeline":
        out = [s[0].upper() + s[1:] + "." for s in map(_stage_words, spec["stages"])]
        out.append(f"Compute r = {_reduce_words(spec['reduce'])}.")
        f = spec["final"]
        if spec.get("final_given"):
            (p1, y1), (p2, y2) = spec["final_given"]
            out.append(f"Return f(r), where f is the linear function with f({p1}) = {y1} and f({p2}) = {y2}.")
        else:
            out.append(f"Return {_affine_text(f[0], f[1], 'r')}." if f else "Return r.")
        return out
    init = f"Start with a = {spec['init'][0]}" + (f" and b = {spec['init'][1]}." if spec["two"] else ".")
    out = [init, "For each v in xs, in order:"]
    for i, (c, ups) in enumerate(spec["rules"]):
        out.append(f"{'if' if i == 0 else 'else if'} {_cond_words(c)}: "
                   + ", then ".join(f"set {u[0]} = {_update_expr(u)}" for u in ups) + ";")
    out.append("otherwise: " + ", then ".join(f"set {u[0]} = {_update_expr(u)}" for u in spec["otherwise"]) + ".")
    out.append(f"Return {_ret_expr(spec['ret'])}.")
    return out


def _stage_note(st: list[Any]) -> str:
    kind = st[0]
    if kind in ("keep_mod", "drop_mod"):
        return f"{kind[:4]} v % {st[1]} == {st[2]}"
    if kind == "keep_cmp":
        return f"keep v {st[1]} {st[2]}"
    if kind == "map_affine":
        return f"v -> {_affine_text(st[1], st[2])}"
    return "v -> " + {"map_mod": f"v % {st[1]}", "map_absdiff": f"abs(v - {st[1]})"}.get(kind, f"v // {st[1]}")


_REDUCE_NOTES = {"sum": "sum", "count": "count", "max": "max or 0", "min": "min or 0", "sum_sq": "sum of squares",
                 "alt_sum": "alternating sum"}


def plan_lines(spec: dict[str, Any]) -> list[str]:
    """The spec in short code-like notes (the stepwise teacher's plan)."""
    if spec["family"] == "pipeline":
        out = [_stage_note(st) for st in spec["stages"]]
        red = spec["reduce"]
        out.append("r = " + (f"product mod {red[1]}" if red[0] == "prod_mod" else _REDUCE_NOTES[red[0]]))
        f = spec["final"]
        out.append(f"return {_affine_text(f[0], f[1], 'r')}" if f else "return r")
        return out
    out = ["a = {}".format(spec["init"][0]) + (f", b = {spec['init'][1]}" if spec["two"] else "")]
    for c, ups in spec["rules"]:
        out.append(f"{_cond_words(c)}: " + "; ".join(f"{u[0]} = {_update_expr(u)}" for u in ups))
    out.append("else: " + "; ".join(f"{u[0]} = {_update_expr(u)}" for u in spec["otherwise"]))
    out.append(f"return {_ret_expr(spec['ret'])}")
    return out


def code_of(spec: dict[str, Any]) -> str:
    """The reference ``solve`` as Python source."""
    lines = ["def solve(xs):"]
    if spec["family"] == "pipeline":
        lines.append("    vs = list(xs)")
        for st in spec["stages"]:
            k = st[0]
            if k == "keep_mod":
                lines.append(f"    vs = [v for v in vs if v % {st[1]} == {st[2]}]")
            elif k == "drop_mod":
                lines.append(f"    vs = [v for v in vs if v % {st[1]} != {st[2]}]")
            elif k == "keep_cmp":
                lines.append(f"    vs = [v for v in vs if v {st[1]} {st[2]}]")
            elif k == "map_affine":
                lines.append(f"    vs = [{st[1]} * v {'+' if st[2] > 0 else '-'} {abs(st[2])} for v in vs]")
            elif k == "map_mod":
                lines.append(f"    vs = [v % {st[1]} for v in vs]")
            elif k == "map_absdiff":
                lines.append(f"    vs = [abs(v - {st[1]}) for v in vs]")
            else:
                lines.append(f"    vs = [v // {st[1]} for v in vs]")
        red = spec["reduce"]
        body = {"sum": "sum(vs)", "count": "len(vs)", "max": "max(vs) if vs else 0", "min": "min(vs) if vs else 0",
                "sum_sq": "sum(v * v for v in vs)",
                "alt_sum": "sum(v if i % 2 == 0 else -v for i, v in enumerate(vs))"}
        if red[0] == "prod_mod":
            lines += ["    r = 1", "    for v in vs:", f"        r = r * v % {red[1]}"]
        else:
            lines.append(f"    r = {body[red[0]]}")
        f = spec["final"]
        lines.append(f"    return {f[0]} * r {'+' if f[1] > 0 else '-'} {abs(f[1])}" if f else "    return r")
        return "\n".join(lines) + "\n"
    a0, b0 = spec["init"]
    lines.append(f"    a, b = {a0}, {b0}" if spec["two"] else f"    a = {a0}")
    lines.append("    for v in xs:")
    for i, (c, ups) in enumerate(spec["rules"]):
        lines.append(f"        {'if' if i == 0 else 'elif'} {_cond_code(c)}:")
        lines += [f"            {u[0]} = {_update_expr(u)}" for u in ups]
    lines.append("        else:")
    lines += [f"            {u[0]} = {_update_expr(u)}" for u in spec["otherwise"]]
    lines.append(f"    return {_ret_expr(spec['ret'])}")
    return "\n".join(lines) + "\n"


# ============================================================================== mutants and tests
def _valid_constant(st: list[Any], j: int, y: int) -> bool:
    """Whether a stage keeps making sense with its ``j``-th constant set to ``y``."""
    kind = st[0]
    if kind in ("keep_mod", "drop_mod"):
        return y >= 2 and st[2] < y
    if kind in ("map_mod", "map_floordiv"):
        return y >= 2
    if kind == "map_affine":
        return y >= 1 if j == 1 else y != 0
    return True


def mutants(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every one-slip variant of the spec: a constant off by one, a comparison or parity flipped."""
    out = []

    def variant(path: list[Any], value: Any) -> None:
        m = copy.deepcopy(spec)
        obj = m
        for key in path[:-1]:
            obj = obj[key]
        if obj[path[-1]] != value:
            obj[path[-1]] = value
            out.append(m)

    if spec["family"] == "pipeline":
        for i, st in enumerate(spec["stages"]):
            for j, x in enumerate(st[1:], start=1):
                if isinstance(x, str):
                    variant(["stages", i, j], _FLIP[x])
                elif st[0] in ("keep_mod", "drop_mod") and j == 2:
                    variant(["stages", i, j], (x + 1) % st[1])
                else:
                    for y in (x + 1, x - 1):
                        if _valid_constant(st, j, y):
                            variant(["stages", i, j], y)
        red = spec["reduce"]
        swap = {"max": "min", "min": "max", "sum": "sum_sq", "sum_sq": "sum", "count": "sum", "alt_sum": "sum"}
        if red[0] in swap:
            variant(["reduce"], [swap[red[0]]])
        else:
            variant(["reduce", 1], red[1] + 1)
        if spec["final"]:
            variant(["final", 0], spec["final"][0] + 1)
            variant(["final", 1], spec["final"][1] + 1)
        return out
    for i, (c, ups) in enumerate(spec["rules"]):
        if c[0] in ("even", "odd"):
            variant(["rules", i, 0], ["odd" if c[0] == "even" else "even"])
        else:
            variant(["rules", i, 0, len(c) - 1], c[-1] + 1)
        for j, u in enumerate(ups):
            for k in range(1, 5):
                if u[k]:
                    variant(["rules", i, 1, j, k], u[k] + 1)
    for j, u in enumerate(spec["otherwise"]):
        variant(["otherwise", j, 3], u[3] + 1)
    variant(["init", 0], spec["init"][0] + 1)
    variant(["ret", 2], spec["ret"][2] + 1)
    return out


def random_input(rng: random.Random, level: int, length: int | None = None) -> list[int]:
    """A list argument for ``solve``: non-negative values whose range grows with the level."""
    n = rng.randint(1, 4 + level) if length is None else length
    return [rng.randint(0, 10 + 8 * level) for _ in range(n)]


def choose_tests(spec: dict[str, Any], pool: list[list[int]]) -> list[list[int]]:
    """Test inputs: five lists from ``pool`` and the empty list, then, greedily, the pool's lists that
    make the most surviving mutants fail, until none survives that the pool can tell apart."""
    tests = pool[:5] + [[]]
    ref = {i: run_spec(spec, xs) for i, xs in enumerate(pool)}
    alive = [m for m in mutants(spec) if all(run_spec(m, xs) == run_spec(spec, xs) for xs in tests)]
    while alive and len(tests) < MAX_TESTS:
        kills = {i: [m for m in alive if run_spec(m, pool[i]) != ref[i]] for i in range(5, len(pool))}
        best = max(kills, key=lambda i: len(kills[i]))
        if not kills[best]:
            break
        tests.append(pool[best])
        alive = [m for m in alive if m not in kills[best]]
    return tests


def make_code(rng: random.Random, level: int) -> dict[str, Any]:
    """One code problem; specs whose output barely depends on the input (a filter that drops almost
    everything, a chain of floor divisions down to 0) are drawn again."""
    while True:
        spec = (_pipeline if rng.random() < 0.5 else _loop)(rng, level)
        pool = [random_input(rng, level) for _ in range(60)]
        if len({run_spec(spec, xs) for xs in pool}) >= 6:
            break
    example = random_input(rng, level, length=2 + level)
    spec["example"] = example
    tests = choose_tests(spec, pool)
    lines = describe(spec)
    question = ("Write a Python function solve(xs) for a list of integers xs that does this:\n"
                + "\n".join(lines) + f"\nFor example, solve({example!r}) == {run_spec(spec, example)}.")
    return {"question": question, "answer": code_of(spec), "language": "python",
            "tests": [f"assert solve({xs!r}) == {run_spec(spec, xs)!r}" for xs in tests], "spec": spec}


# ============================================================================== traces
def _trace_pipeline(spec: dict[str, Any], xs: list[int], per_element: bool, w: Work) -> int:
    if per_element:
        kept = []
        for v0 in xs:
            v, notes = v0, []
            for st in spec["stages"]:
                nv = _stage_apply(st, v)
                if st[0] in ("keep_mod", "drop_mod"):
                    notes.append(f"{v} % {st[1]} = {v % st[1]}, {'drop' if nv is None else 'keep'}")
                elif st[0] == "keep_cmp":
                    notes.append(f"{v} {st[1]} {st[2]}? {'no, drop' if nv is None else 'yes'}")
                elif st[0] == "map_affine":
                    notes.append(f"{st[1]}*{v} {'+' if st[2] > 0 else '-'} {abs(st[2])} = {nv}")
                elif st[0] == "map_mod":
                    notes.append(f"{v} % {st[1]} = {nv}")
                elif st[0] == "map_absdiff":
                    notes.append(f"abs({v} - {st[1]}) = {nv}")
                else:
                    notes.append(f"{v} // {st[1]} = {nv}")
                if nv is None:
                    break
                v = nv
            if nv is not None:
                kept.append(v)
            w.line(f"v = {v0}: " + "; ".join(notes))
        vs = kept
    else:
        vs = list(xs)
        for i, st in enumerate(spec["stages"]):
            vs = [u for u in (_stage_apply(st, v) for v in vs) if u is not None]
            w.line(f"after step {i + 1}: {vs}")
    if per_element:
        w.line(f"remaining: {vs}")
    r = _reduce(spec["reduce"], vs)
    red = spec["reduce"][0]
    if per_element and len(vs) > 1 and red in ("sum", "sum_sq", "alt_sum", "prod_mod"):
        acc = 0 if red != "prod_mod" else 1
        for i, v in enumerate(vs):
            if red == "sum":
                new = acc + v
                w.line(f"{acc} + {v} = {new}")
            elif red == "sum_sq":
                new = acc + v * v
                w.line(f"{v}*{v} = {v * v}, {acc} + {v * v} = {new}")
            elif red == "alt_sum":
                new = acc + v if i % 2 == 0 else acc - v
                w.line(f"{acc} {'+' if i % 2 == 0 else '-'} {v} = {new}")
            else:
                new = acc * v % spec["reduce"][1]
                w.line(f"{acc}*{v} = {acc * v}, mod {spec['reduce'][1]}: {new}")
            acc = new
    w.line(f"r = {r}")
    if spec["final"]:
        f = spec["final"]
        out = f[0] * r + f[1]
        w.line(f"{_affine_text(f[0], f[1], str(r))} = {out}")
        return out
    return r


def _trace_loop(spec: dict[str, Any], xs: list[int], per_element: bool, w: Work) -> int:
    st = {"a": spec["init"][0], "b": spec["init"][1]}
    w.line(f"start: a = {st['a']}" + (f", b = {st['b']}" if spec["two"] else ""))
    for v in xs:
        idx = next((i for i, (c, _) in enumerate(spec["rules"]) if _cond_holds(c, v)), None)
        ups = spec["rules"][idx][1] if idx is not None else spec["otherwise"]
        why = _cond_words(spec["rules"][idx][0]) if idx is not None else "no rule matches"
        parts = []
        for t, pa, pb, pv, c in ups:
            new = pa * st["a"] + pb * st["b"] + pv * v + c
            if per_element:
                vals = {"a": st["a"], "b": st["b"], "v": v}
                expr = "".join(f"({vals[ch]})" if ch in vals and vals[ch] < 0 else str(vals.get(ch, ch))
                               for ch in _update_expr([t, pa, pb, pv, c]))
                parts.append(f"{t} = {expr} = {new}")
            st[t] = new
        if per_element:
            w.line(f"v = {v}: {why}; " + "; ".join(parts))
        else:
            w.line(f"v = {v}: a = {st['a']}" + (f", b = {st['b']}" if spec["two"] else ""))
    ca, cb, c0 = spec["ret"]
    out = ca * st["a"] + cb * st["b"] + c0
    w.line(f"return {_ret_expr(spec['ret'])} = {out}")
    return out


def _solve_final(spec: dict[str, Any], w: Work) -> None:
    """Work out f(r) = a*r + b from its two given values (the numbers the code then uses)."""
    (p1, y1), (p2, y2) = spec["final_given"]
    a, b = spec["final"]
    w.line(f"f(r) = a*r + b with f({p1}) = {y1}, f({p2}) = {y2}:")
    w.line(f"a = ({y2} - {y1}) / ({p2} - {p1}) = {y2 - y1} / {p2 - p1} = {a}")
    w.line(f"b = {y1} - {a}*{p1} = {y1} - {a * p1} = {b}")


def solve_code(spec: dict[str, Any], method: str, w: Work) -> str:
    """Write the reasoning into ``w`` and return the code.

    ``column`` (trace-then-code): restate the plan, trace the example element by element, then
    write the function. ``decompose`` (code-directly): the function's outline, then a check of the
    example stage by stage on whole lists.
    """
    ex = spec["example"]
    if spec.get("final_given"):
        _solve_final(spec, w)
    if method == "column":
        w.line("Plan:")
        for i, s in enumerate(plan_lines(spec)):
            w.line(f"{i + 1}. {s}")
        w.line(f"Trace the example xs = {ex}:")
        r = (_trace_pipeline if spec["family"] == "pipeline" else _trace_loop)(spec, ex, True, w)
        w.line(f"Result: {r}. Now write the function.")
    else:
        w.line("Write it directly, then check it.")
        w.line(f"Check on {ex}:")
        r = (_trace_pipeline if spec["family"] == "pipeline" else _trace_loop)(spec, ex, False, w)
        w.line(f"Result: {r}.")
    return code_of(spec)


def code_final(code: str) -> str:
    return f"```python\n{code}```"


__all__ = ["FAMILIES", "MAX_TESTS", "choose_tests", "random_input", "code_final", "code_of", "describe", "make_code", "mutants", "plan_lines",
           "run_spec", "solve_code"]
