"""Runs that fail safely (issue 22): every bad input gets one clear error naming what was wrong and how to fix it,
and nothing already written is lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from falcon_h1r.cli import main
from falcon_h1r.results import ResultsFileError, SectionWriter, read_json, sweep_temporary_files


def test_a_bad_value_in_a_preset_block_exits_2_in_one_line(capsys, monkeypatch, tmp_path):
    from falcon_h1r import cli, config

    monkeypatch.setattr(cli, "run_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    presets = tmp_path / "presets"
    presets.mkdir()
    text = (config.PRESETS_DIR / "tiny.yaml").read_text().replace("  temperature: 0.85", "  temperature: hot", 1)
    (presets / "tiny.yaml").write_text(text)
    monkeypatch.setattr(config, "PRESETS_DIR", presets)
    assert main(["reproduce", "--preset", "tiny", "--sections", "06"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rl.temperature" in err[0] and "'hot'" in err[0] and "number" in err[0]


def test_an_override_of_the_wrong_type_exits_2(capsys, monkeypatch):
    from falcon_h1r import cli

    monkeypatch.setattr(cli, "run_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    assert main(["reproduce", "--preset", "tiny", "--override", "train.steps=many"]) == 2
    err = capsys.readouterr().err
    assert "train.steps" in err and "integer" in err


def test_a_corrupt_summary_is_named_in_a_render_and_replaced_when_computing(tmp_path):
    section = tmp_path / "tiny" / "06_safety"
    section.mkdir(parents=True)
    (section / "summary.json").write_text('{"x": 1,')  # cut off mid-write
    render = SectionWriter("tiny", "06_safety", root=tmp_path, mode="rendered")
    with pytest.raises(ResultsFileError, match=r"summary.json is not valid JSON.*git checkout"):
        render.summary({"y": 2})
    assert (section / "summary.json").read_text() == '{"x": 1,'  # untouched
    compute = SectionWriter("tiny", "06_safety", root=tmp_path, mode="computed")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compute.summary({"y": 2})
    assert read_json(section / "summary.json") == {"y": 2}
    assert (section / "summary.json.corrupt").read_text() == '{"x": 1,'
    assert any("not valid JSON" in str(w.message) for w in caught)


def test_a_truncated_cached_base_model_is_named_with_its_rebuild(tiny_preset, tmp_path):
    from falcon_h1r.sections.common import CacheError, get_base_model

    base = get_base_model(tiny_preset, root=tmp_path, progress=False)
    weights = next(base.path.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # a copy cut short
    with pytest.raises(CacheError, match=r"cannot be loaded.*delete that folder and rerun"):
        get_base_model(tiny_preset, root=tmp_path, progress=False)


def test_leftovers_of_killed_writers_are_swept_and_live_ones_kept(tmp_path):
    dead = tmp_path / ".summary.json.999999999.abc.tmp"
    live = tmp_path / f".summary.json.{os.getpid()}.abc.tmp"
    dead.write_text("x")
    live.write_text("y")
    assert sweep_temporary_files(tmp_path) == [dead]
    assert live.exists()
    SectionWriter("tiny", "06_safety", root=tmp_path)  # a writer sweeps its folder when it starts
    from falcon_h1r.sft import sweep_checkpoint_temps

    ck = tmp_path / "ck"
    (ck / ".tmp-step-000010-999999999").mkdir(parents=True)
    (ck / f".tmp-step-000020-{os.getpid()}").mkdir()
    assert [p.name for p in sweep_checkpoint_temps(ck)] == [".tmp-step-000010-999999999"]


@pytest.mark.parametrize("params, message", [
    ({"preset": "tiny", "overrides": "train.steps=3"}, "expected a mapping"),
    ({"preset": "tiny", "overrides": {}, "preset_name": "small"}, "unknown notebook parameter 'preset_name'"),
    ({"preset": "huge", "overrides": {}}, "expected one of tiny, small, paper"),
])
@pytest.mark.slow
def test_notebook_parameters_are_checked_under_papermill(tmp_path, params, message):
    """Run straight through papermill (no CLI in front): a misspelled or mistyped parameter stops the notebook
    with a clear error instead of silently running the default preset."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from falcon_h1r.cli import NOTEBOOKS, NOTEBOOKS_DIR

    env_before = os.environ.get("FALCON_H1R_RESULTS")
    os.environ["FALCON_H1R_RESULTS"] = str(tmp_path / "results")
    try:
        with pytest.raises(PapermillExecutionError) as err:
            pm.execute_notebook(str(NOTEBOOKS_DIR / NOTEBOOKS["06_safety"]), str(tmp_path / "out.ipynb"),
                                parameters=params, kernel_name="python3", progress_bar=False, cwd=str(NOTEBOOKS_DIR))
    finally:
        if env_before is None:
            os.environ.pop("FALCON_H1R_RESULTS", None)
        else:
            os.environ["FALCON_H1R_RESULTS"] = env_before
    assert "ParameterError" in str(err.value) and message in str(err.value)
    assert not (tmp_path / "results" / "tiny" / "06_safety" / "summary.json").exists()
