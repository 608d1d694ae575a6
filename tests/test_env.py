"""Provenance: the commit recorded beside every result."""

import subprocess

from falcon_h1r.env import cpu_model, device_info, git_state


def test_the_launchers_commit_wins_and_a_non_hash_is_never_recorded(monkeypatch, tmp_path):
    real = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("FALCON_H1R_COMMIT", real)
    assert git_state(tmp_path) == {"commit": real, "dirty": "unknown", "source": "FALCON_H1R_COMMIT"}
    monkeypatch.setenv("FALCON_H1R_COMMIT", "HEAD")  # not a hash: ignored
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # a repository without commits
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip() == "HEAD"
    assert git_state(tmp_path)["commit"] == "unknown"
    monkeypatch.delenv("FALCON_H1R_COMMIT")
    assert git_state(tmp_path / "nowhere")["commit"] == "unknown"


def test_device_info_names_the_cpu_and_threads():
    info = device_info()
    assert info["cpu_model"] == cpu_model() and info["cpu_model"]
    assert info["torch_threads"] >= 1


def test_dirty_means_the_code_changed_not_the_results_a_run_rewrites(monkeypatch, tmp_path):
    monkeypatch.delenv("FALCON_H1R_COMMIT", raising=False)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "results" / "tiny").mkdir(parents=True)
    (tmp_path / "results" / "tiny" / "summary.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "results" / "tiny" / "summary.json").write_text('{"a": 1}')  # an earlier notebook of the run
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
