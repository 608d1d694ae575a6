"""The claims scoreboard: papers/claims.yaml is complete and valid, every rule gives each status on synthetic
summaries, and the scoreboard writes its three files. One test checks that the committed summaries hold every
key a claim reads; it fails until the sections produce the keys papers/claims.yaml names."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from falcon_h1r import claims, stats
from falcon_h1r.results import SECTIONS
from falcon_h1r.sections import scoreboard

REPO = Path(__file__).resolve().parent.parent


def _claim(rule, key="x", requires=None, section="02_sft", **extra):
    entry = {"id": "c", "topic": "sft", "section": section, "statement": "s", "paper_value": "v", "where": "§2",
             "rule": rule, **extra}
    if key is not None:
        entry["key" if isinstance(key, str) else "keys"] = key
    if requires:
        entry["requires"] = requires
    return claims.parse_claims({"claims": [entry]})[0]


def _est(mean, half, *, informative=True, n_seeds=3, unit="seeds", reason=""):
    return stats.Estimate(mean=mean, ci95=half, low=mean - half, high=mean + half, n_seeds=n_seeds, n_problems=100,
                          method="t", informative=informative, reason=reason, unit=unit)


def _status(claim, summary, section="02_sft"):
    return claims.evaluate_claim(claim, {section: summary})["status"]


# ------------------------------------------------------------------------------------------- the file
def test_committed_claims_file_is_valid_and_every_claim_has_a_known_rule():
    cl = claims.load_claims()
    assert len(cl) >= 30
    assert len({c.id for c in cl}) == len(cl)
    for c in cl:
        assert c.rule.kind in claims.RULE_KINDS, c.id
        assert c.section in SECTIONS, c.id
        assert c.keys or c.rule.kind == "not_testable", c.id
    assert {c.topic for c in cl} >= {"curation", "sft", "rl", "rl_dynamics", "throughput", "deepconf", "safety"}


def test_every_claim_key_exists_in_a_committed_summary():
    """Each key a claim reads (and each precondition key) is in results/small or results/tiny. Fails until
    the sections write the keys named in papers/claims.yaml; the message lists what is missing."""
    have: dict[str, set[str]] = {s: set() for s in SECTIONS}
    for preset in ("small", "tiny"):
        for s in SECTIONS:
            path = REPO / "results" / preset / s / "summary.json"
            if path.exists():
                have[s] |= set(json.loads(path.read_text()))
    missing = {s: sorted(keys - have.get(s, set())) for s, keys in claims.required_keys(claims.load_claims()).items()}
    missing = {s: k for s, k in missing.items() if k}
    assert not missing, "keys no committed summary holds yet:\n" + "\n".join(f"  {s}: {', '.join(k)}"
                                                                            for s, k in sorted(missing.items()))


@pytest.mark.parametrize("entry, field", [
    ({"rule": None}, "rule"),
    ({"rule": {"kind": "roughly"}}, "rule.kind"),
    ({"rule": {"kind": "direction"}}, "rule.sign"),
    ({"rule": {"kind": "direction", "sign": 2}}, "rule.sign"),
    ({"rule": {"kind": "direction", "sign": 1, "tolerance": 0.1}}, "rule.tolerance"),
    ({"rule": {"kind": "within_range", "low": 1, "high": 0}}, "rule.low"),
    ({"rule": {"kind": "not_testable", "reason": ""}}, "rule.reason"),
    ({"topic": "vibes"}, "topic"),
    ({"section": "07_extra"}, "section"),
    ({"colour": "red"}, "colour"),
    ({"key": None}, "key"),
    ({"requires": [{"key": "k", "why": "w"}]}, "requires"),
    ({"requires": [{"key": "k", "at_least": 1}]}, "requires.why"),
])
def test_bad_claims_get_one_error_naming_the_claim_and_field(entry, field):
    base = {"id": "my_claim", "topic": "sft", "section": "02_sft", "statement": "s", "paper_value": "v",
            "where": "§2", "key": "x", "rule": {"kind": "direction", "sign": 1}}
    for k, v in entry.items():
        if v is None:
            base.pop(k)
        else:
            base[k] = v
    with pytest.raises(claims.ClaimsError, match=rf"claim 'my_claim'(: requires #1)?: field '{re.escape(field)}'"):
        claims.parse_claims({"claims": [base]})


def test_duplicate_ids_and_bad_yaml_are_errors(tmp_path):
    entry = {"id": "a", "topic": "sft", "section": "02_sft", "statement": "s", "paper_value": "v", "where": "§2",
             "key": "x", "rule": {"kind": "direction", "sign": 1}}
    with pytest.raises(claims.ClaimsError, match="duplicate id"):
        claims.parse_claims({"claims": [entry, dict(entry)]})
    bad = tmp_path / "claims.yaml"
    bad.write_text("claims: [\n")
    with pytest.raises(claims.ClaimsError, match="not valid YAML"):
        claims.load_claims(bad)


# ------------------------------------------------------------------------------------------- the rules
def test_direction_rule_gives_every_status():
    c = _claim({"kind": "direction", "sign": 1})
    assert _status(c, _est(0.10, 0.05).summary("x")) == "reproduced"
    assert _status(c, _est(0.03, 0.05).summary("x")) == "partly"  # interval includes 0
    assert _status(c, _est(0.10, 0.05, informative=False, n_seeds=2).summary("x")) == "partly"  # never reproduced
    assert _status(c, {"x": 0.10, "x_ci95": 0.05}) == "partly"  # an interval not from the protocol
    assert _status(c, {"x": 0.10}) == "partly"  # no interval at all
    assert _status(c, _est(-0.10, 0.05).summary("x")) == "not_reproduced"
    assert _status(c, {"x": 0.0, "x_ci95": 0.0}) == "not_reproduced"
    assert _status(c, {"x": None, "x_informative": False}) == "not_reproduced"  # the protocol's null
    assert _status(c, {"other": 1.0}) == "not_run"
    neg = _claim({"kind": "direction", "sign": -1})
    assert _status(neg, _est(-0.10, 0.05).summary("x")) == "reproduced"


def test_not_informative_from_the_protocol_is_never_reproduced():
    rng = np.random.default_rng(0)
    a, b = (rng.random((2, 100)) < 0.9).astype(float), (rng.random((2, 100)) < 0.1).astype(float)
    est = stats.paired_difference(a, b)  # a huge effect on 2 seeds: not informative
    assert est.excludes_zero() and not est.informative
    row = claims.evaluate_claim(_claim({"kind": "direction", "sign": 1}), {"02_sft": est.summary("x")})
    assert row["status"] == "partly" and "fewer than 3" in row["reason"]


def test_bases_rule_needs_an_interval_over_bases():
    c = _claim({"kind": "direction", "sign": 1, "bases": True})
    assert _status(c, _est(0.10, 0.05, unit="seeds").summary("x")) == "partly"
    assert _status(c, _est(0.10, 0.05, unit="bases").summary("x")) == "reproduced"


def test_within_range_rule():
    c = _claim({"kind": "within_range", "low": 0.43, "high": 0.85})
    assert _status(c, _est(0.60, 0.10).summary("x")) == "reproduced"
    assert _status(c, _est(0.40, 0.05).summary("x")) == "partly"  # outside, interval reaches the range
    assert _status(c, _est(0.20, 0.05).summary("x")) == "not_reproduced"
    eq = _claim({"kind": "within_range", "low": -0.03, "high": 0.03, "whole_interval": True})
    assert _status(eq, _est(0.01, 0.01).summary("x")) == "reproduced"
    assert _status(eq, _est(0.01, 0.05).summary("x")) == "partly"  # "no gain" not shown: interval too wide
    meas = _claim({"kind": "within_range", "low": 0.85, "high": 0.95, "estimate": False})
    assert _status(meas, {"x": 0.90}) == "reproduced"
    assert _status(meas, {"x": 1.20}) == "not_reproduced"


def test_at_least_and_at_most_rules():
    lo = _claim({"kind": "at_least", "threshold": -0.02})
    assert _status(lo, _est(0.01, 0.02).summary("x")) == "reproduced"
    assert _status(lo, _est(0.01, 0.05).summary("x")) == "partly"
    assert _status(lo, _est(-0.05, 0.01).summary("x")) == "not_reproduced"
    hi = _claim({"kind": "at_most", "threshold": 0.01, "estimate": False})
    assert _status(hi, {"x": 0.002}) == "reproduced"
    assert _status(hi, {"x": 0.02}) == "not_reproduced"
    hi_est = _claim({"kind": "at_most", "threshold": 0.02})
    assert _status(hi_est, _est(0.0, 0.05).summary("x")) == "partly"


def test_equals_rule_and_several_keys_take_the_worst():
    c = _claim({"kind": "equals", "value": 0, "tolerance": 0.05}, key=["a", "b"])
    assert _status(c, {"a": 0, "b": 0.01}) == "reproduced"
    row = claims.evaluate_claim(c, {"02_sft": {"a": 0, "b": 3}})
    assert row["status"] == "not_reproduced" and row["reason"].startswith("a: ")
    assert _status(c, {"a": 0}) == "not_run"


def test_preconditions_and_declared_not_testable():
    c = _claim({"kind": "direction", "sign": 1},
               requires=[{"key": "skew", "at_least": 3, "why": "ranks must hold different token counts"}])
    ok = _est(0.10, 0.05).summary("x")
    assert _status(c, {**ok, "skew": 4.0}) == "reproduced"
    row = claims.evaluate_claim(c, {"02_sft": {**ok, "skew": 1.46}})
    assert row["status"] == "not_testable" and "skew = 1.46" in row["reason"] and "token counts" in row["reason"]
    assert _status(c, ok) == "not_run"  # the precondition's key is missing
    declared = _claim({"kind": "not_testable", "reason": "needs 20K-token responses"}, key=None)
    assert claims.evaluate_claim(declared, {})["status"] == "not_testable"


def test_counts_cover_every_status_and_sum_to_total():
    rows = [{"status": s} for s in claims.STATUSES] + [{"status": "reproduced"}]
    n = claims.counts(rows)
    assert n["claims_total"] == 6 and n["claims_reproduced"] == 2 and n["claims_not_run"] == 1
    assert sum(n[f"claims_{s}"] for s in claims.STATUSES) == n["claims_total"]


# ------------------------------------------------------------------------------------------- the scoreboard
def test_scoreboard_writes_csv_md_and_counts(tmp_path):
    (tmp_path / "tiny" / "02_sft").mkdir(parents=True)
    (tmp_path / "tiny" / "02_sft" / "summary.json").write_text(json.dumps(
        {**_est(0.10, 0.05).summary("single_minus_multi_teacher_acc"), "n12_minus_n4_acc": -0.2,
         "ablation_reference_acc": 0.3, "ablation_reference_minus_start_acc": 0.1,
         "rollouts_distinct_correct_traces_n12_over_n4": 2.0}))  # preconditions met
    counts = scoreboard.write_scoreboard("tiny", tmp_path)
    total = len(claims.load_claims())
    assert counts["claims_total"] == total
    assert sum(counts[f"claims_{s}"] for s in claims.STATUSES) == total
    written = json.loads((tmp_path / "tiny" / "claims_summary.json").read_text())
    assert written["claims_reproduced"] >= 1 and written["sections_read"] == ["02_sft"]
    csv_text = (tmp_path / "tiny" / "claims.csv").read_text()
    assert csv_text.splitlines()[0] == ",".join(claims.ROW_COLUMNS) and len(csv_text.splitlines()) > total
    assert "| sft_single_teacher_better | 02_sft | reproduced |" in (tmp_path / "tiny" / "claims.md").read_text()
    df = scoreboard.section_rows("tiny", "02_sft", tmp_path)
    assert set(df["id"]) == {c.id for c in claims.load_claims() if c.section == "02_sft"}
    assert df.set_index("id").loc["sft_more_rollouts_better", "status"] == "not_reproduced"


def test_scoreboard_cli_rejects_an_unknown_preset(tmp_path, capsys):
    (tmp_path / "small").mkdir()
    assert scoreboard.main(["--preset", "smal", "--root", str(tmp_path)]) == 2
    assert "presets with results: small" in capsys.readouterr().err


def test_a_precondition_can_say_the_measurement_is_not_run_yet():
    """``unmet: not_run`` for a record still to come (a GPU benchmark): the scoreboard says not run, with why,
    not 'mechanism absent'."""
    raw = {"claims": [{"id": "c", "topic": "sft", "section": "02_sft", "statement": "s", "paper_value": "v",
                       "where": "w", "key": "ratio", "rule": {"kind": "at_most", "threshold": 0.99, "estimate": False},
                       "requires": [{"key": "measured", "at_least": 1, "unmet": "not_run", "why": "needs a GPU record"}]}]}
    claim = claims.parse_claims(raw)[0]
    row = claims.evaluate_claim(claim, {"02_sft": {"ratio": None, "measured": 0}})
    assert row["status"] == "not_run" and row["reason"].startswith("not run yet") and "GPU record" in row["reason"]
    assert claims.evaluate_claim(claim, {"02_sft": {"ratio": 0.9, "measured": 1}})["status"] == "reproduced"
    bad = {"claims": [{**raw["claims"][0], "requires": [{**raw["claims"][0]["requires"][0], "unmet": "maybe"}]}]}
    with pytest.raises(claims.ClaimsError, match="requires.unmet"):
        claims.parse_claims(bad)
