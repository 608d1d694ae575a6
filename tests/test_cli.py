import subprocess
import sys

import pytest

from falcon_h1r.cli import UsageError, main, parse_overrides, resolve_sections


def test_unknown_preset_exits_2_naming_valid(capsys):
    assert main(["reproduce", "--preset", "huge"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["falcon-h1r: unknown preset 'huge'; valid presets: tiny, small, paper"]


def test_unknown_section_exits_2_naming_valid(capsys):
    assert main(["reproduce", "--sections", "07_magic"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown section '07_magic'; valid sections: 01_data_curation, 02_sft" in err


def test_section_aliases():
    assert resolve_sections(["02", "deepconf", "6"]) == ["02_sft", "05_deepconf", "06_safety"]
    assert resolve_sections(None)[0] == "01_data_curation"


def test_overrides_are_read_as_yaml_and_malformed_ones_named():
    got = parse_overrides(["rl_experiments.steps=200", "rl_experiments.curricula=[math_only]", "rl.lr=5e-5",
                           "rl_experiments.attack_suite=false", "rl.rewards.science_judge=numeric"])
    assert got == {"rl_experiments.steps": 200, "rl_experiments.curricula": ["math_only"], "rl.lr": "5e-5",
                   "rl_experiments.attack_suite": False, "rl.rewards.science_judge": "numeric"}
    assert parse_overrides(None) == {}
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        parse_overrides(["rl.steps"])
    with pytest.raises(UsageError, match="not valid YAML"):
        parse_overrides(["rl.curricula=[math_only"])


def test_bad_override_exits_2_before_any_notebook(capsys, monkeypatch):
    from falcon_h1r import cli

    monkeypatch.setattr(cli, "run_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    assert main(["reproduce", "--preset", "tiny", "--sections", "03", "--override", "rl.stepz=3"]) == 2
    assert "unknown key rl.stepz" in capsys.readouterr().err
    assert main(["reproduce", "--preset", "tiny", "--sections", "03", "--override",
                 "rl_experiments.curricula=[math_then_math]"]) == 2
    assert "rl_experiments.curricula" in capsys.readouterr().err
    assert main(["reproduce", "--preset", "tiny", "--sections", "03", "--override", "train.stepz=3"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_overrides_reach_each_notebook_as_a_parameter(monkeypatch, tmp_path):
    from falcon_h1r import cli

    calls = []
    monkeypatch.setattr(cli, "run_notebook", lambda s, p, **kw: calls.append((s, p, kw)) or tmp_path / "x.ipynb")
    assert main(["reproduce", "--preset", "tiny", "--sections", "03", "--override", "rl_experiments.steps=7",
                 "--override", "rl.lr=5e-5"]) == 0
    assert calls == [("03_rl", "tiny", {"parameters": {"overrides": {"rl_experiments.steps": 7, "rl.lr": "5e-5"}},
                                        "log_output": False})]
    calls.clear()
    assert main(["reproduce", "--preset", "tiny", "--sections", "03"]) == 0
    assert calls[0][2]["parameters"] is None  # no overrides: the notebook's own default ({}) stands


def test_list_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "falcon_h1r", "list"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "02_sft" in out.stdout and "tiny" in out.stdout


@pytest.mark.slow
def test_failing_notebook_is_named_and_kept(tmp_path, monkeypatch, capsys):
    import nbformat

    from falcon_h1r import cli

    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("preset = 'tiny'")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell("raise RuntimeError('deliberate failure')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbdir = tmp_path / "nbs"
    nbdir.mkdir()
    nbformat.write(nb, nbdir / "bad.ipynb")
    monkeypatch.setattr(cli, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(cli, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setitem(cli.NOTEBOOKS, "06_safety", "bad.ipynb")
    real_run = cli.run_notebook
    monkeypatch.setattr(cli, "run_notebook", lambda s, p, **kw: real_run(s, p, root=tmp_path / "results", **kw))
    assert cli.main(["reproduce", "--sections", "06"]) == 1
    err = capsys.readouterr().err
    assert "[FAILED] 06_safety" in err and "deliberate failure" in err
    kept = nbformat.read(tmp_path / "results" / "tiny" / "06_safety" / "bad.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in kept.cells for o in c.get("outputs", []))
