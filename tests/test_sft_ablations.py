"""The §2 SFT ablations (section 02): the ``sft_ablations:`` block, the recipe grids and their shared reference
arm, the resumable work file and its worker shards, and the statistics read beside the paper (paired
differences, finding status)."""

import math

import pytest

from falcon_h1r.config import RecipeError, load_preset
from falcon_h1r.sections.paired import PairedDifference, mean_ci95, paired_difference, paired_rows
from falcon_h1r.sections.sft_ablations import GRIDS, append_row, grid_runs, load_ablations, load_grid, load_rows
from falcon_h1r.sections.sft_findings import finding_status


def test_presets_parse_their_sft_ablations_block_and_bad_grids_are_named():
    for name in ("tiny", "small", "paper"):
        load_ablations(load_preset(name))
    assert load_ablations(load_preset("paper")).grids == []
    with pytest.raises(RecipeError, match="grids are"):
        load_ablations(load_preset("tiny", {"sft_ablations.grids": ["lr"]}))
    with pytest.raises(RecipeError, match="sft_ablations.stepz"):
        load_ablations(load_preset("tiny", {"sft_ablations.stepz": 3}))
    with pytest.raises(RecipeError, match="teacher_wrong_rate"):
        load_ablations(load_preset("tiny", {"sft_ablations.teacher_wrong_rate": [0.1]}))


def test_every_grid_loads_with_its_comparison_and_grids_share_the_reference_arm():
    keys = {}
    for g in GRIDS:
        for preset in ("tiny", "small"):
            grid = load_grid(g, preset)
            assert len(grid.compare) == 2 and len(grid.arms) >= 2
            keys.setdefault(preset, []).append({a.key() for a in grid.arms})
    ref = load_grid("rollouts", "tiny").arms[0].key()  # n=4 is the reference arm
    assert sum(ref in k for k in keys["tiny"]) == 6  # all but the normalization grid reuse it
    assert len(load_grid("learning_rate", "paper").arms) > len(load_grid("learning_rate", "small").arms)
    with pytest.raises(RecipeError, match="unknown SFT grid"):
        load_grid("lr")


def test_paired_difference_and_status():
    a = [{"seed": s, "outcomes": [1, 1, 0, 1], "outcome_levels": [1, 2, 3, 3], "outcome_domains": ["m"] * 4}
         for s in (0, 1)]
    b = [{"seed": s, "outcomes": [1, 0, 0, 0], "outcome_levels": [1, 2, 3, 3], "outcome_domains": ["m"] * 4}
         for s in (0, 1)]
    d = paired_rows(a, b)
    assert d.diff == pytest.approx(0.5) and d.n == 8
    assert paired_rows(a, b, level=3).diff == pytest.approx(0.5)
    assert finding_status(0.2, 0.1, +1)[0] == "reproduced"
    assert finding_status(0.05, 0.1, +1)[0] == "partly"
    assert finding_status(-0.05, 0.1, +1)[0] == "not"
    assert finding_status(0.0, 0.0, +1) == ("not", "no difference at all between the arms")
    assert finding_status(0.0, 0.02, +1)[1].startswith("zero mean difference")


def test_paired_rows_pairs_by_seed_and_names_what_is_missing():
    a = [{"seed": 0, "entropy": 1.0}, {"seed": 1, "entropy": 2.0}, {"seed": 7, "entropy": 9.0}]
    b = [{"seed": 1, "entropy": 1.5}, {"seed": 0, "entropy": 0.5}]
    d = paired_rows(a, b, "entropy")  # seed 7 has no partner; the others pair whatever their order
    assert (d.diff, d.n) == (pytest.approx(0.5), 2) and d.ci95 == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no seed is shared"):
        paired_rows(a, [{"seed": 5, "entropy": 0.0}], "entropy")
    rows = [{"seed": 0, "outcomes": [1], "outcome_levels": [1], "outcome_domains": ["math"]}]
    with pytest.raises(ValueError, match="no held-out problem at level 3"):
        paired_rows(rows, rows, level=3)


def test_one_paired_difference_for_problems_and_arms():
    """The RL section's shape (per-problem rates keyed by id) and the arithmetic both sections share."""
    after = {"p1": 1.0, "p2": 0.5, "p3": 0.0, "extra": 1.0}
    before = {"p3": 0.5, "p1": 0.5, "p2": 0.5}
    d = paired_difference(after, before)
    assert isinstance(d, PairedDifference) and d.n == 3 and d.diff == pytest.approx(0.0)
    diff, ci, n = paired_difference(after, before, ["p2", "p1", "missing"])  # unpacks; only shared keys count
    assert (diff, n) == (pytest.approx(0.25), 2)
    assert ci == pytest.approx(1.96 * math.sqrt(0.125 / 2))  # sample variance (n - 1), normal approximation
    assert all(math.isnan(x) for x in paired_difference({"a": 1.0}, {"b": 1.0})[:2])
    assert mean_ci95([0.3]) == (pytest.approx(0.3), 0.0, 1)


def test_grid_runs_are_distinct_and_shards_partition_them(tmp_path):
    """--workers: the shared reference arm is one run, and the i/n shards cover every run exactly once."""
    grids = [load_grid(g, "small") for g in GRIDS]
    runs = grid_runs(grids, [0, 1])
    assert len(runs) == len(set(runs))
    n_arms = len({a.key() for g in grids for a in g.arms})
    assert len(runs) == 2 * n_arms < 2 * sum(len(g.arms) for g in grids)  # the reference arm recurs across grids
    shards = [set(runs[i::3]) for i in range(3)]
    assert set().union(*shards) == set(runs) and sum(map(len, shards)) == len(runs)
    work = tmp_path / "rows.jsonl"
    for k, (key, seed) in enumerate(runs[:3]):
        append_row(work, {"arm_key": key, "seed": seed, "base_key": "b", "acc": k / 10})
    assert set(load_rows(work, "b")) == set(runs[:3]) and load_rows(work, "other") == {}
