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
