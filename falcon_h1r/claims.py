"""The claims scoreboard: the paper's claims (``papers/claims.yaml``) read and checked, and each claim's
status computed by its rule from the sections' ``summary.json`` values. No status is ever typed by hand.

A claim names the summary key(s) that test it and a rule from a small vocabulary (``direction``,
``within_range``, ``at_least``, ``at_most``, ``equals``, ``not_testable``), plus preconditions
(``requires``) that check the testbed contains the mechanism before the effect is read. The file's
header documents each rule in words; :func:`evaluate_claim` is its one implementation.

Statuses: ``reproduced``, ``partly``, ``not_reproduced``, ``not_testable`` and ``not_run``. ``not_run``
means a key the claim needs is absent from the section's summary (the section was not run, or does not
produce that key yet); it is counted apart (``claims_not_run``), never folded into the other four.
An estimate is read through the keys that :meth:`falcon_h1r.stats.Estimate.summary` writes; a value whose
``<key>_informative`` is false, or absent for an estimate (an interval not computed by the protocol),
is never ``reproduced``. A null value (the protocol writes None for NaN or infinity) is ``not_reproduced``.

This module is library code: it takes ``{section: summary dict}`` and returns rows; reading the result
folders and writing ``claims.csv`` / ``claims.md`` / ``claims_summary.json`` is
``falcon_h1r.sections.scoreboard``'s job.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from falcon_h1r.papers import PAPERS_DIR
from falcon_h1r.results import SECTIONS

CLAIMS_FILE = PAPERS_DIR / "claims.yaml"
STATUSES = ("reproduced", "partly", "not_reproduced", "not_testable", "not_run")
TOPICS = ("curation", "sft", "rl", "rl_dynamics", "throughput", "deepconf", "safety", "paper_arithmetic")
# kind -> (required parameters, optional parameters)
RULE_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "direction": (("sign",), ("bases",)),
    "within_range": (("low", "high"), ("estimate", "bases", "whole_interval")),
    "at_least": (("threshold",), ("estimate", "bases")),
    "at_most": (("threshold",), ("estimate", "bases")),
    "equals": (("value",), ("tolerance",)),
    "not_testable": (("reason",), ()),
}
_CLAIM_FIELDS = ("id", "topic", "section", "statement", "paper_value", "where", "rule")
_OPTIONAL_FIELDS = ("key", "keys", "requires", "note")
_REQUIRE_OPS = ("at_least", "at_most", "equals")
ROW_COLUMNS = ("id", "section", "topic", "status", "statement", "paper_value", "where", "keys", "ours", "rule",
               "reason")
_SEVERITY = {"reproduced": 0, "partly": 1, "not_reproduced": 2}


class ClaimsError(ValueError):
    """papers/claims.yaml is malformed: the message names the claim and the field."""


@dataclass(frozen=True)
class Rule:
    kind: str
    sign: int | None = None
    low: float | None = None
    high: float | None = None
    threshold: float | None = None
    value: float | None = None
    tolerance: float = 0.0
    estimate: bool = True
    bases: bool = False
    whole_interval: bool = False  # within_range as an equivalence test: the whole interval must lie inside
    reason: str = ""

    def describe(self) -> str:
        """The rule in a few words, for the scoreboard's ``rule`` column."""
        extra = "; interval over >= 3 trained bases" if self.bases else ""
        if self.kind == "direction":
            return f"{'> 0' if self.sign > 0 else '< 0'}, 95 % interval excludes 0{extra}"
        if self.kind == "within_range":
            how = " (measurement)" if not self.estimate else " (whole interval)" if self.whole_interval else ""
            return f"in [{_fmt(self.low)}, {_fmt(self.high)}]{how}{extra}"
        if self.kind == "at_least":
            return f">= {_fmt(self.threshold)}" + (" (interval low end)" if self.estimate else " (measurement)") + extra
        if self.kind == "at_most":
            return f"<= {_fmt(self.threshold)}" + (" (interval high end)" if self.estimate else " (measurement)") + extra
        if self.kind == "equals":
            return f"= {_fmt(self.value)}" + (f" ± {_fmt(self.tolerance)}" if self.tolerance else "")
        return "not testable here"


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # at_least | at_most | equals
    threshold: float
    why: str
    section: str | None = None
    # the status when the precondition fails: the mechanism is absent from the testbed (not_testable), or the
    # measurement that would show it has not been made yet (not_run, e.g. a GPU record still to come)
    unmet: str = "not_testable"

    def holds(self, value: float) -> bool:
        if self.op == "at_least":
            return value >= self.threshold
        if self.op == "at_most":
            return value <= self.threshold
        return value == self.threshold


@dataclass(frozen=True)
class Claim:
    id: str
    topic: str
    section: str
    statement: str
    paper_value: str
    where: str
    keys: tuple[str, ...]
    rule: Rule
    requires: tuple[Requirement, ...] = ()
    note: str = ""

    def needed_keys(self) -> dict[str, set[str]]:
        """``{section: keys}`` this claim reads (its keys and its preconditions')."""
        out: dict[str, set[str]] = {self.section: set(self.keys)}
        for r in self.requires:
            out.setdefault(r.section or self.section, set()).add(r.key)
        return out


@dataclass(frozen=True)
class Observed:
    """One key's value as the scoreboard reads it from a summary."""

    value: float | None
    ci95: float | None
    low: float | None
    high: float | None
    informative: bool | None  # None: no <key>_informative flag (not computed by the protocol)
    reason: str
    n_seeds: int | None
    unit: str | None

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None


# ----------------------------------------------------------------------------------------- loading
def load_claims(path: str | Path = CLAIMS_FILE) -> list[Claim]:
    """Read and validate ``papers/claims.yaml`` (raises :class:`ClaimsError` naming the claim and field)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ClaimsError(f"{path}: not valid YAML: {exc}") from exc
    return parse_claims(raw, source=str(path))


def parse_claims(raw: Any, *, source: str = "claims.yaml") -> list[Claim]:
    """Validate the parsed YAML and build :class:`Claim` objects."""
    if not isinstance(raw, dict) or not isinstance(raw.get("claims"), list) or not raw["claims"]:
        raise ClaimsError(f"{source}: expected a mapping with a non-empty list under 'claims'")
    claims, seen = [], set()
    for i, entry in enumerate(raw["claims"]):
        claim = _parse_claim(entry, where=f"{source}: claim #{i + 1}", source=source)
        if claim.id in seen:
            raise ClaimsError(f"{source}: claim {claim.id!r}: field 'id': duplicate id")
        seen.add(claim.id)
        claims.append(claim)
    return claims


def _err(ctx: str, field: str, problem: str) -> ClaimsError:
    return ClaimsError(f"{ctx}: field {field!r}: {problem}")


def _number(ctx: str, field: str, x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise _err(ctx, field, f"must be a finite number, got {x!r}")
    return float(x)


def _parse_claim(entry: Any, *, where: str, source: str) -> Claim:
    if not isinstance(entry, dict):
        raise ClaimsError(f"{where}: expected a mapping, got {type(entry).__name__}")
    cid = entry.get("id")
    if not isinstance(cid, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", cid):
        raise _err(where, "id", f"must be a snake_case string, got {cid!r}")
    ctx = f"{source}: claim {cid!r}"
    unknown = sorted(set(entry) - set(_CLAIM_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise _err(ctx, unknown[0], f"unknown field; accepted: {', '.join(_CLAIM_FIELDS + _OPTIONAL_FIELDS)}")
    for field in _CLAIM_FIELDS:
        if field not in entry:
            raise _err(ctx, field, "missing" + (" (every claim needs a rule)" if field == "rule" else ""))
    for field in ("statement", "paper_value", "where"):
        if not isinstance(entry[field], (str, int, float)) or str(entry[field]).strip() == "":
            raise _err(ctx, field, "must be non-empty text")
    if entry["topic"] not in TOPICS:
        raise _err(ctx, "topic", f"unknown topic {entry['topic']!r}; accepted: {', '.join(TOPICS)}")
    if entry["section"] not in SECTIONS:
        raise _err(ctx, "section", f"unknown section {entry['section']!r}; accepted: {', '.join(SECTIONS)}")
    rule = _parse_rule(entry["rule"], ctx)
    if "key" in entry and "keys" in entry:
        raise _err(ctx, "key", "give either 'key' or 'keys', not both")
    keys = [entry["key"]] if "key" in entry else entry.get("keys", [])
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise _err(ctx, "keys", f"must be a list of summary key names, got {keys!r}")
    if rule.kind != "not_testable" and not keys:
        raise _err(ctx, "key", f"a {rule.kind!r} rule needs the summary key(s) that test the claim")
    requires = tuple(_parse_requirement(r, f"{ctx}: requires #{j + 1}") for j, r in enumerate(entry.get("requires") or []))
    return Claim(id=cid, topic=entry["topic"], section=entry["section"], statement=str(entry["statement"]),
                 paper_value=str(entry["paper_value"]), where=str(entry["where"]), keys=tuple(keys), rule=rule,
                 requires=requires, note=str(entry.get("note", "")))


def _parse_rule(raw: Any, ctx: str) -> Rule:
    if not isinstance(raw, dict) or "kind" not in raw:
        raise _err(ctx, "rule", f"must be a mapping with a 'kind'; kinds: {', '.join(RULE_KINDS)}")
    kind = raw["kind"]
    if kind not in RULE_KINDS:
        raise _err(ctx, "rule.kind", f"unknown rule {kind!r}; accepted: {', '.join(RULE_KINDS)}")
    required, optional = RULE_KINDS[kind]
    for p in required:
        if p not in raw:
            raise _err(ctx, f"rule.{p}", f"missing (a {kind!r} rule needs {', '.join(required)})")
    extra = sorted(set(raw) - {"kind", *required, *optional})
    if extra:
        raise _err(ctx, f"rule.{extra[0]}", f"not a parameter of {kind!r}; accepted: {', '.join(required + optional) or 'none'}")
    args: dict[str, Any] = {"kind": kind}
    for flag in ("estimate", "bases", "whole_interval"):
        if flag in raw:
            if not isinstance(raw[flag], bool):
                raise _err(ctx, f"rule.{flag}", f"must be true or false, got {raw[flag]!r}")
            args[flag] = raw[flag]
    if kind == "direction":
        if raw["sign"] not in (1, -1) or isinstance(raw["sign"], bool):
            raise _err(ctx, "rule.sign", f"must be +1 or -1, got {raw['sign']!r}")
        args["sign"] = int(raw["sign"])
    elif kind == "within_range":
        args["low"], args["high"] = _number(ctx, "rule.low", raw["low"]), _number(ctx, "rule.high", raw["high"])
        if args["low"] >= args["high"]:
            raise _err(ctx, "rule.low", f"must be below rule.high, got [{args['low']}, {args['high']}]")
    elif kind in ("at_least", "at_most"):
        args["threshold"] = _number(ctx, "rule.threshold", raw["threshold"])
    elif kind == "equals":
        args["value"] = _number(ctx, "rule.value", raw["value"])
        args["tolerance"] = _number(ctx, "rule.tolerance", raw.get("tolerance", 0.0))
        args["estimate"] = False
        if args["tolerance"] < 0:
            raise _err(ctx, "rule.tolerance", "must be >= 0")
    else:
        if not isinstance(raw["reason"], str) or not raw["reason"].strip():
            raise _err(ctx, "rule.reason", "a not_testable rule must say why")
        args["reason"] = raw["reason"].strip()
    return Rule(**args)


def _parse_requirement(raw: Any, ctx: str) -> Requirement:
    if not isinstance(raw, dict):
        raise _err(ctx, "requires", "each precondition is a mapping {key, at_least|at_most|equals, why}")
    ops = [op for op in _REQUIRE_OPS if op in raw]
    if len(ops) != 1:
        raise _err(ctx, "requires", f"needs exactly one of {', '.join(_REQUIRE_OPS)}, got {sorted(raw)}")
    extra = sorted(set(raw) - {"key", "why", "section", "unmet", ops[0]})
    if extra:
        raise _err(ctx, f"requires.{extra[0]}", "unknown field; accepted: key, at_least | at_most | equals, why, "
                                                "section, unmet")
    unmet = raw.get("unmet", "not_testable")
    if unmet not in ("not_testable", "not_run"):
        raise _err(ctx, "requires.unmet", f"{unmet!r} not accepted; use not_testable or not_run")
    if not isinstance(raw.get("key"), str) or not raw["key"]:
        raise _err(ctx, "requires.key", "missing summary key name")
    if not isinstance(raw.get("why"), str) or not raw["why"].strip():
        raise _err(ctx, "requires.why", "a precondition must say why the mechanism needs it")
    section = raw.get("section")
    if section is not None and section not in SECTIONS:
        raise _err(ctx, "requires.section", f"unknown section {section!r}; accepted: {', '.join(SECTIONS)}")
    return Requirement(key=raw["key"], op=ops[0], threshold=_number(ctx, f"requires.{ops[0]}", raw[ops[0]]),
                       why=raw["why"].strip(), section=section, unmet=unmet)


def required_keys(claims: Sequence[Claim]) -> dict[str, set[str]]:
    """``{section: every key some claim reads}`` (claim keys and precondition keys)."""
    out: dict[str, set[str]] = {}
    for c in claims:
        for section, keys in c.needed_keys().items():
            out.setdefault(section, set()).update(keys)
    return out


# ----------------------------------------------------------------------------------------- evaluation
def read_observed(summary: Mapping[str, Any], key: str) -> Observed:
    """A key and its protocol companions (``_ci95``, ``_ci95_low/_high``, ``_informative``, ...)."""
    def num(k: str) -> float | None:
        v = summary.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return None
        return float(v)

    value, ci = num(key), num(f"{key}_ci95")
    low, high = num(f"{key}_ci95_low"), num(f"{key}_ci95_high")
    if (low is None or high is None) and value is not None and ci is not None:
        low, high = value - ci, value + ci
    flag = summary.get(f"{key}_informative")
    n = summary.get(f"{key}_n_seeds")
    return Observed(value=value, ci95=ci, low=low, high=high,
                    informative=flag if isinstance(flag, bool) else None,
                    reason=str(summary.get(f"{key}_reason") or ""),
                    n_seeds=int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None,
                    unit=summary.get(f"{key}_unit"))


def _key_status(rule: Rule, obs: Observed) -> tuple[str, str]:
    """Status and reason of one key under ``rule`` (before the informative and bases caps)."""
    v = obs.value
    if v is None:
        return "not_reproduced", "no finite value (the section wrote null: NaN, infinite or undefined)"
    if rule.kind == "equals":
        ok = abs(v - rule.value) <= rule.tolerance
        return ("reproduced", "equals the expected value") if ok else \
            ("not_reproduced", f"{_fmt(v)} differs from {_fmt(rule.value)}")
    interval = rule.estimate and obs.has_interval
    lo, hi = (obs.low, obs.high) if interval else (v, v)
    no_interval = " (no 95 % interval)" if rule.estimate and not obs.has_interval else ""
    if rule.kind == "direction":
        if v * rule.sign <= 0:
            if v == 0:
                return "not_reproduced", "no difference (exactly 0)"
            excl = interval and (lo > 0 or hi < 0)
            return "not_reproduced", "opposite direction" + (", interval excludes 0" if excl else ", within noise" if interval else "")
        if not interval:
            return "partly", f"direction right{no_interval}"
        if (lo > 0) if rule.sign > 0 else (hi < 0):
            return "reproduced", "direction right, 95 % interval excludes 0"
        return "partly", "direction right, but the 95 % interval includes 0"
    if rule.kind == "within_range":
        if rule.low <= v <= rule.high:
            if no_interval:
                return "partly", f"in range{no_interval}"
            if rule.whole_interval and interval and not (rule.low <= lo and hi <= rule.high):
                return "partly", "in range, but the 95 % interval reaches outside it"
            return "reproduced", "in range" + (" (whole interval)" if rule.whole_interval and interval else "")
        if interval and hi >= rule.low and lo <= rule.high:
            return "partly", "outside the range, but the 95 % interval reaches it"
        return "not_reproduced", "outside the range" + (" (whole interval)" if interval else "")
    if rule.kind == "at_least":
        if v < rule.threshold:
            return "not_reproduced", f"below {_fmt(rule.threshold)}"
        if not rule.estimate or (interval and lo >= rule.threshold):
            return "reproduced", f"at least {_fmt(rule.threshold)}" + (" (interval low end)" if interval else "")
        return "partly", f"value at least {_fmt(rule.threshold)}, but " + \
            ("the interval's low end is below" if interval else f"there is{no_interval}")
    if rule.kind == "at_most":
        if v > rule.threshold:
            return "not_reproduced", f"above {_fmt(rule.threshold)}"
        if not rule.estimate or (interval and hi <= rule.threshold):
            return "reproduced", f"at most {_fmt(rule.threshold)}" + (" (interval high end)" if interval else "")
        return "partly", f"value at most {_fmt(rule.threshold)}, but " + \
            ("the interval's high end is above" if interval else f"there is{no_interval}")
    raise ClaimsError(f"rule kind {rule.kind!r} has no evaluation")  # parse_claims never lets this through


def _capped(rule: Rule, obs: Observed, status: str, reason: str) -> tuple[str, str]:
    """A not-informative value, an estimate without the protocol's flag, or an interval that rests on one
    trained base where the rule asks for bases, can never be ``reproduced``."""
    if status != "reproduced":
        return status, reason
    if obs.informative is False:
        return "partly", f"{reason}; not informative: {obs.reason or 'flagged by the protocol'}"
    if rule.estimate and obs.informative is None:
        return "partly", f"{reason}; no protocol flag (interval not computed by falcon_h1r.stats)"
    if rule.bases and obs.unit != "bases":
        return "partly", f"{reason}; the interval does not cover retraining (unit {obs.unit or 'unknown'}, not bases)"
    return status, reason


def evaluate_claim(claim: Claim, summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One scoreboard row: the claim, our number(s) and the status its rule gives."""
    row = {"id": claim.id, "section": claim.section, "topic": claim.topic, "statement": claim.statement,
           "paper_value": claim.paper_value, "where": claim.where, "keys": "; ".join(claim.keys),
           "rule": claim.rule.describe(), "ours": ""}
    if claim.rule.kind == "not_testable":
        return {**row, "status": "not_testable", "reason": claim.rule.reason}
    summary = summaries.get(claim.section) or {}
    missing = [k for k in claim.keys if k not in summary]
    missing += [f"{r.section + ':' if r.section else ''}{r.key}" for r in claim.requires
                if r.key not in (summaries.get(r.section or claim.section) or {})]
    observed = {k: read_observed(summary, k) for k in claim.keys if k in summary}
    row["ours"] = "; ".join(f"{k} = {_describe(o)}" for k, o in observed.items())
    if missing:
        return {**row, "status": "not_run", "reason": f"missing in {claim.section}/summary.json: {', '.join(missing)}"}
    for r in claim.requires:
        v = read_observed(summaries.get(r.section or claim.section) or {}, r.key).value
        if v is None or not r.holds(v):
            need = {"at_least": ">=", "at_most": "<=", "equals": "="}[r.op]
            what = "not run yet" if r.unmet == "not_run" else "mechanism absent"
            return {**row, "status": r.unmet,
                    "reason": f"{what}: {r.key} = {_fmt(v)} (needs {need} {_fmt(r.threshold)}): {r.why}"}
    worst, reasons = "reproduced", []
    for k, obs in observed.items():
        status, reason = _capped(claim.rule, obs, *_key_status(claim.rule, obs))
        reasons.append(f"{k}: {reason}" if len(observed) > 1 else reason)
        if _SEVERITY[status] > _SEVERITY[worst]:
            worst = status
    return {**row, "status": worst, "reason": "; ".join(reasons)}


def evaluate(claims: Sequence[Claim], summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every claim's row, in file order."""
    return [evaluate_claim(c, summaries) for c in claims]


def counts(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """``claims_total`` and ``claims_<status>`` for every status (not_run counted apart)."""
    out = {"claims_total": len(rows)}
    for s in STATUSES:
        out[f"claims_{s}"] = sum(r["status"] == s for r in rows)
    return out


def rows_markdown(rows: Sequence[Mapping[str, Any]],
                  columns: Sequence[str] = ("id", "status", "paper_value", "ours", "rule", "reason", "where")) -> str:
    """A Markdown table of scoreboard rows (pipes in cells escaped)."""
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- formatting
def _fmt(x: float | None) -> str:
    if x is None:
        return "null"
    return f"{x:.4g}"


def _describe(o: Observed) -> str:
    if o.value is None:
        return "null" + (f" ({o.reason})" if o.reason else "")
    text = _fmt(o.value)
    if o.has_interval:
        text += f" [{_fmt(o.low)}, {_fmt(o.high)}]"
    if o.n_seeds is not None:
        text += f" ({o.n_seeds} {o.unit or 'seeds'})"
    if o.informative is False:
        text += " not informative"
    return text


__all__ = ["CLAIMS_FILE", "Claim", "ClaimsError", "Observed", "ROW_COLUMNS", "RULE_KINDS", "Requirement", "Rule",
           "STATUSES", "TOPICS", "counts", "evaluate", "evaluate_claim", "load_claims", "parse_claims",
           "read_observed", "required_keys", "rows_markdown"]
