"""The live stop's fused Triton kernel against its torch twin, under Triton's CPU interpreter
(tests/conftest.py sets TRITON_INTERPRET=1 on a machine without a GPU); on a GPU the overhead measurement
(falcon_h1r.deepconf.overhead) runs the compiled kernel inside the decode graph."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from falcon_h1r import deepconf as dc
from falcon_h1r.deepconf import stop_kernel

pytest.importorskip("triton", reason="Triton (installed with the dev extra) runs the kernel's interpreter")


@pytest.fixture
def interpret():
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("a GPU machine: the overhead measurement runs the compiled kernel")


def _state(batch: int, window: int):
    return (torch.zeros(batch, window, dtype=torch.float64), torch.zeros(batch, dtype=torch.float64),
            torch.zeros(batch, dtype=torch.long))


@pytest.mark.parametrize("batch,window,k,threshold,block", [
    (5, 3, 20, 9.5, 4),      # several programs, a short last block
    (130, 8, 7, 1.6, 128),   # k not a power of two, a second program for 2 rows
    (3, 1, 20, None, 128),   # no threshold: never stops, the state still advances
])
def test_fused_step_equals_the_torch_twin(interpret, batch, window, k, threshold, block):
    g = torch.Generator().manual_seed(batch + window)
    fused_state, ref_state = _state(batch, window), _state(batch, window)
    running = torch.ones(batch, dtype=torch.bool)
    for step in range(3 * window + 4):
        # confidences spread around the threshold so that rows stop at different steps
        top = -torch.rand(batch, k, generator=g, dtype=torch.float32) * 2 * (threshold or 2.0)
        if step == 2:
            running[0] = False  # a finished row: its state must not move
        want = stop_kernel.window_stop_update_ref(top, running, *ref_state, threshold)
        got = stop_kernel.window_stop_update(top, running, *fused_state, threshold, block_rows=block)
        assert got.dtype == torch.bool and torch.equal(got, want), f"step {step}"
        torch.testing.assert_close(fused_state[0], ref_state[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(fused_state[1], ref_state[1], rtol=0, atol=1e-10)
        assert torch.equal(fused_state[2], ref_state[2])
        running &= ~want
    assert int(fused_state[2][0]) == 2  # stopped counting when it stopped running
    if threshold is None:
        assert bool(running[1:].all())
    else:
        assert 0 < int((~running[1:]).sum())  # the stop fired for some rows


def test_controller_fused_and_torch_stop_at_the_same_steps(interpret):
    window, thr = 3, 2.0
    confs = np.array([[3.0, 3.0, 3.0, 2.5, 1.0, 1.0, 1.0, 1.0],
                      [0.1, 0.1, 5.0, 5.0, 5.0, 5.0, 5.0, 5.0],
                      [9.0] * 8, [2.0] * 8])  # the last sits exactly on the threshold: never below it
    stopped = {}
    for fused in (True, False):
        ctl = dc.EarlyStopController(threshold=thr, window=window, fused=fused)
        ctl.reset(4, "cpu")
        running, at = torch.ones(4, dtype=torch.bool), [None] * 4
        for step in range(confs.shape[1]):
            top = torch.tensor(-confs[:, step:step + 1].repeat(20, axis=1), dtype=torch.float32)
            stop = ctl(top, running.clone())
            for i in torch.nonzero(stop).flatten().tolist():
                at[i] = step
            running &= ~stop
        stopped[fused] = at
    assert stopped[True] == stopped[False] == [5, 2, None, None]


def test_controller_picks_the_torch_form_on_cpu_and_follows_a_changed_threshold(interpret, monkeypatch):
    calls = []
    monkeypatch.setattr(dc.online, "window_stop_update", lambda *a, **k: calls.append(a) or torch.zeros(2, dtype=bool))
    ctl = dc.EarlyStopController(threshold=None, window=1)  # fused=None: the kernel only for CUDA tensors
    ctl.reset(2, "cpu")
    ctl(torch.full((2, 20), -0.01), torch.ones(2, dtype=torch.bool))
    assert calls == []
    monkeypatch.undo()
    ctl = dc.EarlyStopController(threshold=None, window=1, fused=True)
    ctl.reset(2, "cpu")
    assert not bool(ctl(torch.full((2, 20), -0.01), torch.ones(2, dtype=torch.bool)).any())
    ctl.threshold = 5.0  # settable between batches: the kernel reads the new value
    assert bool(ctl(torch.full((2, 20), -0.01), torch.ones(2, dtype=torch.bool)).all())
    assert float(ctl.threshold_buf) == 5.0


def test_fused_update_refuses_state_of_the_wrong_kind(interpret):
    ring, sums, count = _state(2, 4)
    with pytest.raises(ValueError, match="float64"):
        stop_kernel.window_stop_update(torch.zeros(2, 20), torch.ones(2, dtype=torch.bool), ring.float(), sums,
                                       count, 1.0)


def test_auto_mode_falls_back_to_the_torch_form_when_the_kernel_fails(monkeypatch):
    """fused=None on a device where the kernel is picked but does not build: one warning, the torch form
    from then on, the same stops."""
    def broken(*a, **k):
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(dc.online, "window_stop_update", broken)
    monkeypatch.setattr(dc.online, "fused_available", lambda: True)
    ctl = dc.EarlyStopController(threshold=5.0, window=1)
    ctl.reset(2, "cpu")
    top = torch.full((2, 20), -0.01)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # as on a GPU
    with pytest.warns(RuntimeWarning, match="fused DeepConf stop kernel failed"):
        stop = ctl(top, torch.ones(2, dtype=torch.bool))
    monkeypatch.undo()
    assert ctl.fused is False and bool(stop.all())
    assert bool(ctl(top, torch.ones(2, dtype=torch.bool)).all())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_kernel_equals_the_torch_twin_on_the_gpu_inside_a_cuda_graph():
    """The compiled kernel on the GPU, eager and replayed in a CUDA graph (as the decode engine runs it),
    against the torch twin on the same inputs."""
    dev, batch, window, k, thr = "cuda", 512, 64, 20, 9.0
    g = torch.Generator(device=dev).manual_seed(0)
    fused_state = [t.to(dev) for t in _state(batch, window)]
    ref_state = [t.to(dev) for t in _state(batch, window)]
    running = torch.ones(batch, dtype=torch.bool, device=dev)
    thr_buf = torch.full((1,), thr, dtype=torch.float64, device=dev)
    top = torch.empty(batch, k, device=dev)
    stop_out = torch.empty(batch, dtype=torch.bool, device=dev)

    def step():
        stop_out.copy_(stop_kernel.window_stop_update(top, running, *fused_state, thr, thr_buf))

    top.copy_(-torch.rand(batch, k, generator=g, device=dev) * 2 * thr)
    step()  # compile eagerly, then capture
    want = stop_kernel.window_stop_update_ref(top, running, *ref_state, thr)
    assert torch.equal(stop_out, want)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for i in range(3 * window):
        top.copy_(-torch.rand(batch, k, generator=g, device=dev) * 2 * thr)
        graph.replay()
        want = stop_kernel.window_stop_update_ref(top, running, *ref_state, thr)
        assert torch.equal(stop_out, want), f"step {i}"
        torch.testing.assert_close(fused_state[1], ref_state[1], rtol=0, atol=1e-9)
        running &= ~want
    assert bool((~running).any()) and bool(running.any())
