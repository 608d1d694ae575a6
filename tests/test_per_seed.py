"""falcon_h1r.sections.per_seed: the per-seed launch of the GPU stages (bases, DeepConf pools) and their exit
status, with the processes stood in for (no GPU, no training)."""
from __future__ import annotations

import pytest

from falcon_h1r.sections import per_seed


@pytest.mark.parametrize("codes,want", [({0: 0, 1: 0}, 0), ({0: 0, 1: 3}, 3), ({0: 3, 1: 1, 2: 2}, 1),
                                        ({0: 0, 1: -9}, -9)])
def test_combined_exit_is_the_first_failure_else_budget_else_done(codes, want):
    assert per_seed.combined_exit(codes) == want


def test_run_per_seed_starts_every_seed_before_waiting_and_collects_output(monkeypatch):
    started, waited = [], []

    class FakeProc:
        def __init__(self, cmd, stdout=None, text=None, env=None):
            self.cmd, self.seed = cmd, int(cmd[cmd.index("--base-seed") + 1])
            assert env[per_seed.SHARE_ENV] == "3", "each child is told how many share the device"
            self.returncode = None
            started.append(self.seed)

        def communicate(self):
            assert len(started) == 3, "a child was waited on before every seed had started"
            waited.append(self.seed)
            self.returncode = 3 if self.seed == 1 else 0
            return (f'{{"seed": {self.seed}}}\n', None)

    monkeypatch.setattr(per_seed.subprocess, "Popen", FakeProc)
    done = per_seed.run_per_seed("falcon_h1r.sections.deepconf", "small", [0, 1, 2], seed_flag="--base-seed",
                                 args=["--pools-only"], capture=True)
    assert started == waited == [0, 1, 2]
    assert done == {0: (0, '{"seed": 0}\n'), 1: (3, '{"seed": 1}\n'), 2: (0, '{"seed": 2}\n')}
    assert per_seed.combined_exit({s: rc for s, (rc, _) in done.items()}) == 3


def test_run_per_seed_runs_a_real_child_and_returns_its_exit_status():
    """A real child: ``python -m falcon_h1r.sections.bases --preset nosuch --seed 7`` is refused by its
    argument parser (exit 2, naming the preset), and that status comes back unchanged as the stage's."""
    done = per_seed.run_per_seed("falcon_h1r.sections.bases", "nosuch", [7], seed_flag="--seed", capture=True)
    assert done[7] == (2, "")
    assert per_seed.combined_exit({7: done[7][0]}) == 2


def test_claim_device_share_is_a_no_op_alone_or_without_cuda(monkeypatch):
    """One child, or no CUDA device: no memory cap is set (the cap only splits a shared GPU)."""
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f: calls.append(f))
    monkeypatch.delenv(per_seed.SHARE_ENV, raising=False)
    assert per_seed.claim_device_share() is None
    monkeypatch.setenv(per_seed.SHARE_ENV, "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert per_seed.claim_device_share() is None and calls == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert per_seed.claim_device_share() == pytest.approx(0.95 / 3) and calls == [pytest.approx(0.95 / 3)]
