"""The shared base-model stage: deterministic, cached, and above chance when given enough steps."""

import pytest

from falcon_h1r.sections.common import get_base_model, held_out, task_sets


@pytest.mark.slow
def test_same_seed_same_tiny_run_numbers_twice(tiny_preset, tmp_path):
    a = get_base_model(tiny_preset, root=tmp_path / "a", progress=False)
    b = get_base_model(tiny_preset, root=tmp_path / "b", progress=False)
    for key in ("params", "train_tokens", "greedy_acc_before", "greedy_acc_after", "loss_curve"):
        assert a.info[key] == b.info[key], key
    assert a.info["loss_curve"]["loss"][-1] < a.info["loss_curve"]["loss"][0]


def test_cached_base_is_reused_not_retrained(tiny_preset, tmp_path):
    first = get_base_model(tiny_preset, root=tmp_path, progress=False)
    again = get_base_model(tiny_preset, root=tmp_path, progress=False)
    assert again.path == first.path and again.info == first.info
    assert sorted(p.name for p in (tmp_path / "tiny" / "_cache").iterdir() if ".tmp-" in p.name) == []


def test_held_out_takes_per_domain_and_never_training_questions(tiny_preset):
    sets = task_sets(tiny_preset)
    test = held_out(sets, tiny_preset)
    assert len(test) == tiny_preset.eval.problems_per_domain * len(tiny_preset.tasks.domains)
    assert not {p["question"] for p in test} & {p["question"] for p in sets["train"]}


def test_wilson_interval_is_honest_at_zero_and_few_successes():
    """The base model's per-domain accuracy is reported with this interval ("clearly above chance")."""
    import pytest

    from falcon_h1r.evaluation import wilson_interval

    lo, hi = wilson_interval(0, 30)
    assert lo == 0.0 and 0.10 < hi < 0.12
    lo, hi = wilson_interval(1, 30)
    assert 0.005 < lo < 0.007 and lo < 1 / 30 < hi
    lo, hi = wilson_interval(15, 30)
    assert abs((lo + hi) / 2 - 0.5) < 1e-9 and 0.33 < lo < 0.34
    with pytest.raises(ValueError, match="correct must be in"):
        wilson_interval(31, 30)


def test_cached_base_is_re_evaluated_when_the_eval_count_changes(tiny_preset, tmp_path):
    """The cache key covers what shapes the weights; a new eval.problems_per_domain re-measures the
    accuracies on the new count (same weights), instead of reporting the old count's figures."""
    from dataclasses import replace

    first = get_base_model(tiny_preset, root=tmp_path, progress=False)
    fewer = replace(tiny_preset, eval=replace(tiny_preset.eval, problems_per_domain=2))
    again = get_base_model(fewer, root=tmp_path, progress=False)
    assert again.path == first.path and again.info["train_wall_s"] == first.info["train_wall_s"]
    assert again.info["eval_problems"] == 2 * len(tiny_preset.tasks.domains) != first.info["eval_problems"]
    assert get_base_model(fewer, root=tmp_path, progress=False).info == again.info  # now cached as is


def test_a_budget_with_cpu_ranks_is_refused_before_any_work(tiny_preset, tmp_path, monkeypatch):
    """A base on several CPU processes runs whole (the ranks cannot agree on a deadline): asking for a time budget
    is one clear error before the model is built or evaluated."""
    from dataclasses import replace

    from falcon_h1r.config import RecipeError
    from falcon_h1r.sections import common

    monkeypatch.setattr(common, "seed_everything", lambda *a: pytest.fail("work started"))
    preset = replace(tiny_preset, train=replace(tiny_preset.train, cpu_ranks=2))
    with pytest.raises(RecipeError, match="train.cpu_ranks=1"):
        get_base_model(preset, root=tmp_path, progress=False, budget_s=60)
