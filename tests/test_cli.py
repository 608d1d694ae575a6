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

    monkeypatch.setattr(cli, "RESULTS_ROOT", tmp_path / "results")  # the scoreboard step must not touch results/
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


def _notebook(tmp_path, body: str, name: str):
    import nbformat

    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("preset = 'tiny'")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbdir = tmp_path / "nbs"
    nbdir.mkdir(exist_ok=True)
    nbformat.write(nb, nbdir / name)
    return nbdir


def _patch_cli(monkeypatch, tmp_path, nbdir, name):
    from falcon_h1r import cli

    monkeypatch.setattr(cli, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(cli, "RESULTS_ROOT", tmp_path / "results")
    monkeypatch.setitem(cli.NOTEBOOKS, "06_safety", name)
    real_run = cli.run_notebook
    monkeypatch.setattr(cli, "run_notebook", lambda s, p, **kw: real_run(s, p, root=tmp_path / "results", **kw))
    return cli


@pytest.mark.slow
def test_failing_notebook_is_named_and_kept_and_the_last_good_results_stay(tmp_path, monkeypatch, capsys):
    import nbformat

    body = ("from falcon_h1r.results import SectionWriter\n"
            "w = SectionWriter(preset, '06_safety')\n"
            "w.summary({'x': 2})\n"
            "(w.dir / 'new_table.csv').write_text('half')\n"
            "raise RuntimeError('deliberate failure')")
    nbdir = _notebook(tmp_path, body, "bad.ipynb")
    cli = _patch_cli(monkeypatch, tmp_path, nbdir, "bad.ipynb")
    good = tmp_path / "results" / "tiny" / "06_safety"
    good.mkdir(parents=True)
    (good / "summary.json").write_text('{"x": 1}\n')
    (good / "bad.ipynb").write_text("the last good executed notebook")
    assert cli.main(["reproduce", "--sections", "06"]) == 1
    err = capsys.readouterr().err
    assert "[FAILED] 06_safety" in err and "deliberate failure" in err and "untouched" in err
    kept = nbformat.read(good / "bad.failed.ipynb", as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in kept.cells for o in c.get("outputs", []))
    assert (good / "summary.json").read_text() == '{"x": 1}\n'  # nothing of the failed run reached the folder
    assert (good / "bad.ipynb").read_text() == "the last good executed notebook"
    assert not (good / "new_table.csv").exists()
    assert not [p for p in good.parent.iterdir() if p.name.startswith(".")]  # no staging folder left


@pytest.mark.slow
def test_a_successful_run_replaces_the_folder_and_clears_the_failure_note(tmp_path, monkeypatch):
    body = ("from falcon_h1r.results import SectionWriter\n"
            "w = SectionWriter(preset, '06_safety')\n"
            "w.summary({'x': 2})\n"
            "(w.dir / '_work' / 'row.txt').write_text('work')")
    nbdir = _notebook(tmp_path, body, "ok.ipynb")
    cli = _patch_cli(monkeypatch, tmp_path, nbdir, "ok.ipynb")
    good = tmp_path / "results" / "tiny" / "06_safety"
    (good / "_work").mkdir(parents=True)
    (good / "summary.json").write_text('{"x": 1, "kept": 3}\n')
    (good / "ok.failed.ipynb").write_text("{}")
    assert cli.main(["reproduce", "--sections", "06"]) == 0
    from falcon_h1r.results import read_json

    assert read_json(good / "summary.json") == {"x": 2, "kept": 3}  # merged into the staged copy, then swapped in
    assert (good / "_work" / "row.txt").read_text() == "work" and not (good / "_work").is_symlink()
    assert not (good / "ok.failed.ipynb").exists() and (good / "ok.ipynb").exists()
    assert not [p for p in good.parent.iterdir() if p.name.startswith(".")]


def test_stale_staging_folders_of_dead_runs_are_swept(tmp_path):
    from falcon_h1r.cli import sweep_stale_runs

    dead = tmp_path / ".06_safety.staging-run-999999999"
    mine = tmp_path / f".06_safety.staging-run-{__import__('os').getpid()}"
    dead.mkdir()
    mine.mkdir()
    assert sweep_stale_runs(tmp_path) == [dead]
    assert mine.exists() and not dead.exists()


def test_empty_section_list_and_bad_preset_files_exit_2(capsys, monkeypatch, tmp_path):
    from falcon_h1r import cli, config

    monkeypatch.setattr(cli, "run_notebook", lambda *a, **k: pytest.fail("a notebook ran"))
    assert main(["reproduce", "--sections", ","]) == 2
    assert "names no section" in capsys.readouterr().err
    assert main(["reproduce", "--sections"]) == 2
    assert "names no section" in capsys.readouterr().err
    # a typo inside a preset file (not in an override) is caught before any notebook starts
    presets = tmp_path / "presets"
    presets.mkdir()
    text = (config.PRESETS_DIR / "tiny.yaml").read_text().replace("  strategy_steps:", "  strategy_stepz:")
    (presets / "tiny.yaml").write_text(text)
    monkeypatch.setattr(config, "PRESETS_DIR", presets)
    assert main(["reproduce", "--preset", "tiny"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "strategy_stepz" in err[0] and "preset tiny" in err[0]


def test_jobs_run_the_first_notebook_alone_then_the_rest_side_by_side(monkeypatch, tmp_path, capsys):
    """--jobs 2: the first notebook (it trains the base the others load) finishes before any other starts; the
    rest run in a pool of two; a failing one is named and the run exits 1 while the others still finish. The
    process pool is swapped for threads here so that the stubbed notebook runner reaches the workers."""
    import concurrent.futures
    import threading
    import time

    from falcon_h1r import cli

    monkeypatch.setattr(cli, "RESULTS_ROOT", tmp_path / "results")
    events, lock, running, peak = [], threading.Lock(), set(), []

    def fake(section, preset, **kw):
        with lock:
            events.append(("start", section))
            running.add(section)
            peak.append(len(running))
        time.sleep(0.2)
        with lock:
            running.discard(section)
            events.append(("end", section))
        if section == "04_throughput":
            raise RuntimeError("cell 3 failed\nValueError: broken on purpose")
        return tmp_path / f"{section}.ipynb"

    monkeypatch.setattr(cli, "run_notebook", fake)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor",
                        lambda max_workers, mp_context=None: concurrent.futures.ThreadPoolExecutor(max_workers))
    assert main(["reproduce", "--preset", "tiny", "--jobs", "2"]) == 1
    assert events[:2] == [("start", "01_data_curation"), ("end", "01_data_curation")]
    assert max(peak) == 2 and sorted(s for e, s in events if e == "end") == sorted(cli.NOTEBOOKS)
    err = capsys.readouterr().err
    assert "[FAILED] 04_throughput: ValueError: broken on purpose" in err and "failed: 04_throughput" in err
    assert "5/6 notebooks ok" in err
    assert main(["reproduce", "--preset", "tiny", "--jobs", "0"]) == 2
    assert "--jobs 0: expected a count of 1 or more" in capsys.readouterr().err
