"""The setup that must work on both kinds of machine, and the kernel selection the trainers use.

* The GPU install plan (torch's CUDA wheel, the project's pins, the dev and gpu extras) is resolved for CUDA
  Linux with pip's own resolver, so that a pin conflict such as ``triton==3.6.0`` against torch 2.13.0's CUDA
  wheel (which requires 3.7.1) fails CI on a CPU machine. These tests need the package index: when it cannot be
  reached they FAIL with a message saying so, rather than skip, because a skipped check is how the conflict
  went unseen; deselect them offline with ``-m "not network"``.
* ``scripts/setup_env.sh`` stops at the first failing step and names it.
* ``falcon_h1r.kernels``: what is reported, how ``attn_implementation`` is chosen, Liger applied and undone.
* ``falcon-h1r reproduce``: the loud line and ``--require-gpu`` when a GPU preset finds no usable GPU.
Tests marked ``gpu`` compare the fused kernels with the plain path on a CUDA device (skipped elsewhere).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from falcon_h1r import kernels

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIP_TIMEOUT_S = 300

# Packages that ship only source archives: setup_env.sh builds them with --no-build-isolation against the
# installed torch; their requirements come from pip's own metadata build of the archive (first stage below).
SOURCE_ONLY = ("deepspeed", "mamba-ssm", "causal-conv1d")
# the CUDA Linux target: torch's wheels need glibc 2.28; pip takes each tag literally, so list the older ones
LINUX_PLATFORMS = [f"manylinux_2_{m}_x86_64" for m in range(28, 4, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
TARGET_PYTHON = "3.11"


def extra(name: str) -> list[str]:
    return PYPROJECT["optional-dependencies"][name]


def pin_of(requirements: list[str], name: str) -> str:
    for line in requirements:
        req = Requirement(line)
        if canonicalize_name(req.name) == canonicalize_name(name):
            return str(req.specifier).removeprefix("==")
    raise AssertionError(f"{name} is not pinned in {requirements}")


# ============================================================================ resolving the GPU install plan


def _pip(args: list[str], tmp_path: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """pip of this interpreter with no machine-local configuration (find-links, local indexes, constraints):
    only the public index decides, as on a user's machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_RETRIES="2",
               PIP_TIMEOUT="60", PIP_CACHE_DIR=str(tmp_path / "pip-cache"), **(extra_env or {}))
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"pip did not resolve within {PIP_TIMEOUT_S} s (is the package index reachable?): {' '.join(cmd)}")


def _fail_if_offline(proc: subprocess.CompletedProcess) -> None:
    text = proc.stderr + proc.stdout
    if re.search(r"(NewConnectionError|Failed to establish|Name or service not known|Temporary failure in name "
                 r"resolution|Network is unreachable|Max retries exceeded|ConnectTimeout|ReadTimeout|ProxyError|"
                 r"Could not fetch URL)", text):
        pytest.fail("the package index cannot be reached, so the GPU install plan cannot be resolved; this test "
                    "needs it (CI has it). Offline, deselect it with -m 'not network'.\n" + text[-2000:])


@pytest.fixture(scope="module")
def source_only_requirements(tmp_path_factory) -> list[str]:
    """Stage 1: the install requirements of the source-only packages, from pip's metadata build of their
    archives (with their CUDA builds skipped: only the metadata is wanted, and this machine has no nvcc)."""
    pins = [line for line in PYPROJECT["dependencies"] + extra("gpu")
            if canonicalize_name(Requirement(line).name) in SOURCE_ONLY]
    assert len(pins) == len(SOURCE_ONLY), pins
    tmp_path = tmp_path_factory.mktemp("source_only")
    report = tmp_path / "source_only.json"
    proc = _pip(["--no-deps", "--no-build-isolation", "--report", str(report), *pins], tmp_path,
                {"MAMBA_SKIP_CUDA_BUILD": "TRUE", "CAUSAL_CONV1D_SKIP_CUDA_BUILD": "TRUE", "DS_BUILD_OPS": "0"})
    _fail_if_offline(proc)
    assert proc.returncode == 0, f"pip could not read the metadata of {pins}:\n{proc.stderr[-3000:]}"
    out = []
    for item in json.loads(report.read_text())["install"]:
        for line in item["metadata"].get("requires_dist") or []:
            req = Requirement(line)
            if req.marker is None or "extra" not in str(req.marker):
                out.append(line)
    return out


def gpu_install_plan(source_only: list[str], *, replace: dict[str, str] | None = None) -> list[str]:
    """Everything `make env GPU=1` installs, as requirement lines: the project's dependencies (torch among them),
    the dev and gpu extras, and the requirements of the source-only packages in place of the packages."""
    lines = [line for line in PYPROJECT["dependencies"] + extra("dev") + extra("gpu")
             if canonicalize_name(Requirement(line).name) not in SOURCE_ONLY]
    lines += source_only
    for name, line in (replace or {}).items():
        lines = [x for x in lines if canonicalize_name(Requirement(x).name) != canonicalize_name(name)] + [line]
    return lines


def resolve_for_cuda_linux(lines: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Stage 2: pip's resolver over wheels for x86-64 Linux, CPython 3.11, as on a CUDA machine. Metadata only:
    wheels are read through HTTP range requests (fast-deps) where the index serves no separate metadata."""
    req_file = tmp_path / "plan.txt"
    req_file.write_text("\n".join(lines) + "\n")
    platforms = [a for p in LINUX_PLATFORMS for a in ("--platform", p)]
    args = [*platforms, "--python-version", TARGET_PYTHON, "--implementation", "cp", "--only-binary=:all:",
            "--target", str(tmp_path / "target"), "--report", str(tmp_path / "plan.json"), "-r", str(req_file)]
    proc = _pip(["--use-feature=fast-deps", *args], tmp_path)
    if proc.returncode != 0 and "fast-deps" in proc.stderr and "invalid choice" in proc.stderr:
        proc = _pip(args, tmp_path)  # a pip without the feature: slower (whole wheels), same answer
    _fail_if_offline(proc)
    return proc


@pytest.mark.network
@pytest.mark.slow
def test_gpu_install_plan_resolves_for_cuda_linux(tmp_path, source_only_requirements):
    proc = resolve_for_cuda_linux(gpu_install_plan(source_only_requirements), tmp_path)
    assert proc.returncode == 0, ("the GPU install plan (`make env GPU=1`) does not resolve for CUDA Linux:\n"
                                  + proc.stderr[-4000:])
    chosen = {canonicalize_name(i["metadata"]["name"]): i for i in json.loads((tmp_path / "plan.json").read_text())["install"]}
    torch_pin = pin_of(PYPROJECT["dependencies"], "torch")
    assert chosen["torch"]["metadata"]["version"] == torch_pin  # PyPI's wheel, no "+cpu" local build
    torch_needs = [Requirement(r) for r in chosen["torch"]["metadata"]["requires_dist"]]
    needs_triton = [r for r in torch_needs if r.name == "triton" and (r.marker is None or r.marker.evaluate(
        {"platform_system": "Linux", "python_version": TARGET_PYTHON, "extra": ""}))]
    # the mechanism under test is present: this is the CUDA wheel, and it constrains triton
    assert needs_triton and any(n.startswith("nvidia-") for n in chosen), sorted(chosen)
    dev_triton = pin_of(extra("dev"), "triton")
    assert chosen["triton"]["metadata"]["version"] == dev_triton
    assert needs_triton[0].specifier.contains(dev_triton)
    for line in extra("gpu"):
        req = Requirement(line)
        name = canonicalize_name(req.name)
        if name not in SOURCE_ONLY:
            assert chosen[name]["metadata"]["version"] == str(req.specifier).removeprefix("==")


@pytest.mark.network
@pytest.mark.slow
def test_the_resolution_catches_a_triton_pin_the_cuda_torch_rejects(tmp_path, source_only_requirements):
    """The control: the pin that broke every CUDA machine (triton 3.6.0 beside torch 2.13.0) must fail here."""
    plan = gpu_install_plan(source_only_requirements, replace={"triton": "triton==3.6.0"})
    proc = resolve_for_cuda_linux(plan, tmp_path)
    assert proc.returncode != 0
    assert "ResolutionImpossible" in proc.stderr or "conflicting dependencies" in proc.stderr, proc.stderr[-2000:]


def test_the_gpu_extra_and_the_dev_extra_are_exact_pins():
    for line in extra("gpu") + extra("dev"):
        assert str(Requirement(line).specifier).startswith("=="), line
    names = {canonicalize_name(Requirement(x).name) for x in extra("gpu")}
    assert {"mamba-ssm", "causal-conv1d", "liger-kernel"} <= names


# ===================================================================================== the README's commands


def gpu_readme_section() -> str:
    """The README's GPU section, up to its first subsection (the lent-image notes that follow are not a user's
    install path)."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^## On a CUDA GPU\n.*?(?=^##+ |\Z)", readme, re.S | re.M)
    assert m, "README.md has no '## On a CUDA GPU' section"
    return m.group(0)


def test_the_readme_gpu_commands_are_the_resolved_plan():
    section = gpu_readme_section()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", section, re.S))
    commands = [line.split("#")[0].strip() for line in blocks.splitlines() if line.split("#")[0].strip()]
    assert "make env GPU=1" in commands
    # the make route runs setup_env.sh, which installs exactly the extras the plan above resolves
    script = (ROOT / "scripts" / "setup_env.sh").read_text()
    assert 'pip install --no-build-isolation -e ".[dev,gpu]"' in script
    assert re.search(r"^\s*@?VENV=\$\(VENV\) GPU=\$\(GPU\) bash scripts/setup_env.sh", (ROOT / "Makefile").read_text(), re.M)
    # a manual route, where shown, is the same two steps
    manual = [c for c in commands if c.startswith(("pip ", ".venv/bin/pip ", ".venv/bin/python -m pip "))]
    for c in manual:
        assert c.endswith(("packaging ninja", '--no-build-isolation -e ".[dev,gpu]"')), c
    assert "python -m falcon_h1r.kernels" in blocks


# ================================================================================================ setup_env.sh

FAKE_PYTHON = r"""#!/usr/bin/env bash
# stands in for python3 and for the venv's python: `-m venv DIR` makes DIR/bin/python (this file);
# a call whose arguments contain $FAIL_MATCH fails as pip would; everything else succeeds.
if [ "$1" = -m ] && [ "$2" = venv ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
echo "$*" >> "$CALLS"
if [[ "$*" == *"$FAIL_MATCH"* ]]; then
  echo "WARNING: Location 'file:///nowhere' is ignored: it is neither a file nor a directory."
  echo "ERROR: No matching distribution found (simulated)"; exit 1
fi
exit 0
"""


def _run_setup(tmp_path: Path, fail_match: str, gpu: bool = False) -> tuple[subprocess.CompletedProcess, list[str]]:
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    calls = tmp_path / "calls.txt"
    env = {**os.environ, "VENV": str(tmp_path / "venv"), "PYTHON": str(fake), "CALLS": str(calls),
           "FAIL_MATCH": fail_match}
    env.pop("GPU", None)
    env.pop("TORCH_INDEX_URL", None)
    if gpu:
        env["GPU"] = "1"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "setup_env.sh")], capture_output=True, text=True, env=env,
                          timeout=60)
    return proc, calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("fail_match,step", [
    ("install torch==", "install torch=="),
    ("--no-build-isolation deepspeed==", "install deepspeed=="),
    ('-e .[dev]', "install the project with its dev extra"),
])
def test_setup_env_stops_at_the_failing_pip_step_and_names_it(tmp_path, fail_match, step):
    proc, calls = _run_setup(tmp_path, fail_match)
    assert proc.returncode != 0
    assert f"FAILED at step '{step}" in proc.stderr, proc.stderr
    assert "ERROR: No matching distribution found (simulated)" in proc.stderr  # pip's own words are shown
    assert "WARNING: Location" not in proc.stderr
    assert not (tmp_path / "venv" / ".falcon_h1r_stamp").exists()  # a failed setup is never marked ready
    failing = next(i for i, c in enumerate(calls) if fail_match in c)
    assert failing == len(calls) - 1, calls  # nothing ran after it


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_env_runs_every_step_and_marks_the_venv_ready(tmp_path):
    proc, calls = _run_setup(tmp_path, "nothing-matches-this")
    assert proc.returncode == 0, proc.stderr
    torch_pin = f"torch=={pin_of(PYPROJECT['dependencies'], 'torch')}"
    order = [next(i for i, c in enumerate(calls) if needle in c)
             for needle in (torch_pin, "--no-build-isolation deepspeed==", "-e .[dev]", "ipykernel install")]
    assert order == sorted(order), calls  # torch before everything that could pull another build of it
    assert (tmp_path / "venv" / ".falcon_h1r_stamp").read_text().split()[1] == "cpu"
    # idempotent: a second run does nothing
    before = len(calls)
    proc, calls = _run_setup(tmp_path, "nothing-matches-this")
    assert proc.returncode == 0 and len(calls) == before


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_env_gpu_mode_builds_the_gpu_extra_against_the_installed_torch(tmp_path):
    proc, calls = _run_setup(tmp_path, "nothing-matches-this", gpu=True)
    assert proc.returncode == 0, proc.stderr
    needles = ("install torch==", "torch.version.cuda", "install packaging ninja",
               "install --no-build-isolation -e .[dev,gpu]", "falcon_h1r.kernels --require-importable "
               "mamba_ssm,causal_conv1d,liger_kernel")
    order = [next(i for i, c in enumerate(calls) if n in c) for n in needles]
    assert order == sorted(order), calls
    assert (tmp_path / "venv" / ".falcon_h1r_stamp").read_text().split()[1] == "gpu"
    before = len(calls)  # a GPU venv stays one: a plain refresh (make test) does not redo or downgrade it
    proc, calls = _run_setup(tmp_path, "nothing-matches-this")
    assert proc.returncode == 0 and len(calls) == before


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_setup_env_gpu_mode_refuses_a_cpu_only_torch_and_says_so(tmp_path):
    proc, calls = _run_setup(tmp_path, "torch.version.cuda", gpu=True)
    assert proc.returncode != 0 and "FAILED at step 'check torch is a CUDA build (GPU=1)'" in proc.stderr
    assert not any("[dev,gpu]" in c for c in calls)


def test_no_setup_script_discards_an_exit_status():
    for name in ("setup_env.sh", "gpu_setup.sh", "gpu_notebook_wheels.sh"):
        text = (ROOT / "scripts" / name).read_text()
        assert "set -euo pipefail" in text, name
        assert not re.search(r"\|\|\s*true\s*$", "\n".join(line for line in text.splitlines() if "pip" in line), re.M), name


# ========================================================================================== kernels: report


def test_cuda_status_agrees_with_torch_and_always_says_why():
    st = kernels.cuda_status()
    assert st.reason
    if not torch.cuda.is_available():
        assert not st.usable and st.device_name is None


@pytest.mark.parametrize("cap,arches,ok", [
    ((9, 0), ["sm_80", "sm_90"], True),
    ((8, 6), ["sm_80"], True),                   # same major, lower minor: binary compatible
    ((7, 5), ["sm_80", "sm_90"], False),
    ((12, 0), ["sm_90", "compute_90"], True),    # PTX the driver compiles
    ((10, 0), ["sm_100", "sm_120"], True),
    ((9, 0), ["sm_90a"], True),
    ((8, 0), ["sm_86"], False),
])
def test_arch_support(cap, arches, ok):
    assert kernels._arch_supported(cap, arches) is ok


GPU = kernels.CudaStatus(True, "Test GPU (sm_90)", "Test GPU", (9, 0), "13.0")
OLD_GPU = kernels.CudaStatus(True, "Old GPU (sm_75)", "Old GPU", (7, 5), "13.0")
NO_GPU = kernels.CudaStatus(False, "no CUDA device (test)")


def _fake_kernel(monkeypatch, probe, dist="pytest", min_cap=(0, 0)):
    def fake_probe():
        probe()
    monkeypatch.setitem(kernels.KERNELS, "fake", (dist, "a test double", fake_probe, min_cap))


def test_kernel_status_distinguishes_missing_broken_inactive_and_active(monkeypatch):
    _fake_kernel(monkeypatch, lambda: None, dist="surely-not-an-installed-distribution")
    assert kernels.kernel_status("fake", GPU).detail == "not installed"

    def broken():
        raise ImportError("libcudart.so.13: cannot open shared object file")
    _fake_kernel(monkeypatch, broken)
    st = kernels.kernel_status("fake", GPU)
    assert (st.importable, st.usable) == (False, False) and "libcudart" in st.detail and st.version

    _fake_kernel(monkeypatch, lambda: None)
    st = kernels.kernel_status("fake", NO_GPU)
    assert (st.importable, st.usable) == (True, False) and "no CUDA device (test)" in st.detail
    assert kernels.kernel_status("fake", GPU).usable

    _fake_kernel(monkeypatch, lambda: None, min_cap=(8, 0))
    st = kernels.kernel_status("fake", OLD_GPU)
    assert not st.usable and "8.0" in st.detail
    with pytest.raises(ValueError, match="unknown kernel"):
        kernels.kernel_status("nope")


def test_the_report_covers_the_four_kernels_and_none_runs_without_a_gpu():
    report = kernels.kernel_report(NO_GPU)
    assert list(report) == ["causal_conv1d", "mamba_ssm", "liger_kernel", "flash_attn"]
    assert not any(st.usable for st in report.values())
    text = kernels.format_report(report, NO_GPU)
    assert "NOT usable" in text and "attn_implementation='sdpa'" in text


def test_kernels_command_line(capsys):
    assert kernels.main(["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["kernels"]) == set(kernels.KERNELS) and "usable" in out["cuda"]
    assert kernels.main(["--require-importable", "not_a_kernel"]) == 2
    assert "unknown kernel" in capsys.readouterr().err


# ======================================================================================= kernels: attention


@pytest.mark.parametrize("device,dtype,flash,want", [
    ("cuda", torch.bfloat16, True, "flash_attention_2"),
    ("cuda:1", torch.float16, True, "flash_attention_2"),
    ("cuda", torch.float32, True, "sdpa"),      # flash-attn takes only half precision
    ("cuda", torch.bfloat16, False, "sdpa"),    # absent: SDPA (FlashAttention-2 kernels inside PyTorch)
    ("cpu", torch.bfloat16, True, "sdpa"),
    ("cpu", torch.float32, False, "sdpa"),
])
def test_choose_attn_implementation(monkeypatch, device, dtype, flash, want):
    st = kernels.KernelStatus("flash_attn", "flash-attn", "", "2.8.3" if flash else None, flash, flash, "test")
    monkeypatch.setattr(kernels, "kernel_status", lambda name, cuda=None: st)
    assert kernels.choose_attn_implementation(device, dtype) == want
    assert kernels.choose_attn_implementation(device, dtype, flash_attn_usable=flash) == want
    assert kernels.choose_attn_implementation(device, dtype, need_attention_weights=True) == "eager"


def test_choose_attn_implementation_probes_flash_attn_for_its_compute_capability(monkeypatch):
    """The probe path: flash-attn importable on a pre-Ampere GPU is not used."""
    _fake_kernel(monkeypatch, lambda: None, min_cap=(8, 0))
    monkeypatch.setitem(kernels.KERNELS, "flash_attn", kernels.KERNELS.pop("fake"))
    monkeypatch.setattr(kernels, "cuda_status", lambda: OLD_GPU)
    assert kernels.choose_attn_implementation("cuda", torch.bfloat16) == "sdpa"
    monkeypatch.setattr(kernels, "cuda_status", lambda: GPU)
    assert kernels.choose_attn_implementation("cuda", torch.bfloat16) == "flash_attention_2"


# =========================================================================================== kernels: Liger


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    from transformers import FalconH1Config, FalconH1ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  head_dim=8, intermediate_size=48, max_position_embeddings=64, attn_implementation="sdpa")
    if family == "falcon_h1":
        # 8 heads: the in-projection's width (d_ssm + conv dim + heads = 88) a multiple of 8, as causal-conv1d's
        # channel-last kernel requires of the strided conv input it is handed (Falcon-H1R-7B: 24 heads)
        cfg = FalconH1Config(**common, mamba_d_ssm=32, mamba_n_heads=8, mamba_d_head=4, mamba_d_state=8,
                             mamba_d_conv=4, mamba_chunk_size=8, mamba_n_groups=1, lm_head_multiplier=0.5)
        return FalconH1ForCausalLM(cfg).eval()
    return Qwen3ForCausalLM(Qwen3Config(**common)).eval()


def _module_state(model: torch.nn.Module, modeling) -> tuple:
    return (dict(vars(modeling)), [(dict(vars(m)), dict(m._parameters)) for m in model.modules()])


def _same_state(a: tuple, b: tuple) -> bool:
    def same(x: dict, y: dict) -> bool:
        return x.keys() == y.keys() and all(x[k] is y[k] for k in x)
    return same(a[0], b[0]) and len(a[1]) == len(b[1]) and all(
        same(p[0], q[0]) and same(p[1], q[1]) for p, q in zip(a[1], b[1]))


def _modeling(family: str):
    import importlib

    return importlib.import_module(kernels.LIGER_FAMILIES[family][0])


@pytest.mark.parametrize("family", ["falcon_h1", "qwen3"])
def test_apply_liger_is_a_no_op_with_a_reason_where_it_cannot_run(monkeypatch, family):
    model, modeling = tiny_model(family), _modeling(family)
    before = _module_state(model, modeling)
    monkeypatch.setattr(kernels, "cuda_status", lambda: NO_GPU)
    patch = kernels.apply_liger(model)
    assert patch.applied == () and not patch.active and "no usable CUDA GPU" in patch.reason
    monkeypatch.setattr(kernels, "cuda_status", lambda: GPU)  # a GPU, but the model left on the CPU
    patch = kernels.apply_liger(model)
    assert patch.applied == () and "the model is on cpu" in patch.reason
    assert kernels.apply_liger(model, rope=False, rms_norm=False).reason == "nothing requested"
    assert _same_state(before, _module_state(model, modeling))


def test_apply_liger_names_the_families_it_accepts():
    class NotAModel(torch.nn.Module):
        config = type("Config", (), {"model_type": "llama"})()
    with pytest.raises(ValueError, match="accepted: falcon_h1, qwen3"):
        kernels.apply_liger(NotAModel())


@pytest.mark.parametrize("family", ["falcon_h1", "qwen3"])
def test_apply_liger_patches_the_model_and_undo_restores_the_plain_path(monkeypatch, family):
    """Liger's real patch functions on a CPU model (pretending a GPU: no Liger kernel is run here), then undo."""
    pytest.importorskip("liger_kernel.transformers", reason="liger-kernel (dev extra, Linux) applies the patch")
    from liger_kernel.transformers import LigerRMSNorm, liger_rotary_pos_emb

    model, modeling = tiny_model(family), _modeling(family)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    before = _module_state(model, modeling)
    monkeypatch.setattr(kernels, "cuda_status", lambda: GPU)
    monkeypatch.setattr(kernels, "_model_device", lambda m: torch.device("cuda"))

    patch = kernels.apply_liger(model, swiglu=True, fused_linear_cross_entropy=True)
    assert patch.applied == ("rope", "rms_norm", "swiglu", "fused_linear_cross_entropy")
    assert modeling.apply_rotary_pos_emb is liger_rotary_pos_emb
    norms = [m for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    assert norms and all(m.forward.__func__ is LigerRMSNorm.forward for m in norms)
    assert "forward" in vars(model)  # the fused linear cross-entropy forward, bound to this model

    patch.undo()
    assert patch.applied == () and patch.reason == "undone"
    assert _same_state(before, _module_state(model, modeling))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, plain)


def test_linear_cross_entropy_plain_path_is_scaled_cross_entropy():
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(10, 16, generator=g), torch.randn(40, 16, generator=g)
    targets = torch.randint(0, 40, (10,), generator=g)
    targets[3] = -100
    got = kernels.linear_cross_entropy(hidden, weight, targets, scale=0.25)
    want = torch.nn.functional.cross_entropy((hidden @ weight.t()) * 0.25, targets, reduction="none")
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=1e-6) and got[3] == 0
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        kernels.linear_cross_entropy(hidden, weight, targets, fused=True)


# ======================================================================================= the CLI's GPU notice


def test_reproduce_says_loudly_when_a_gpu_preset_finds_no_gpu(monkeypatch, capsys):
    from falcon_h1r import cli

    ran = []
    monkeypatch.setattr(kernels, "cuda_status", lambda: NO_GPU)
    monkeypatch.setattr(cli, "cmd_reproduce", lambda *a, **k: ran.append(a) or 0)
    assert cli.main(["reproduce", "--preset", "small", "--sections", "05"]) == 0
    err = capsys.readouterr().err
    assert ran and len([line for line in err.splitlines() if "NO USABLE CUDA GPU" in line]) == 1
    assert "no CUDA device (test)" in err and "--require-gpu" in err

    ran.clear()
    assert cli.main(["reproduce", "--preset", "small", "--sections", "05", "--require-gpu"]) == 2
    assert not ran and "--require-gpu: preset 'small'" in capsys.readouterr().err

    assert cli.main(["reproduce", "--preset", "tiny", "--sections", "05", "--require-gpu"]) == 0  # tiny: CPU
    assert ran and capsys.readouterr().err == ""


# ============================================================================================ on a CUDA GPU

needs_cuda = pytest.mark.skipif(not kernels.cuda_status().usable, reason="needs a usable CUDA GPU")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("family", ["falcon_h1", "qwen3"])
def test_gpu_liger_matches_the_plain_path_in_loss_and_gradients(family):
    if not kernels.kernel_status("liger_kernel").usable:
        pytest.skip("liger-kernel is not usable here")

    def loss_and_grads(use_liger: bool):
        model = tiny_model(family, seed=3).to("cuda", torch.bfloat16).train()
        patch = kernels.apply_liger(model, swiglu=True, fused_linear_cross_entropy=True) if use_liger else None
        assert not use_liger or patch.active, patch
        ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(1)).cuda()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        if patch:
            patch.undo()
        return loss.float(), grads

    plain_loss, plain_grads = loss_and_grads(False)
    liger_loss, liger_grads = loss_and_grads(True)
    assert torch.allclose(liger_loss, plain_loss, rtol=2e-2, atol=2e-2)
    assert plain_grads.keys() == liger_grads.keys()
    for name, g in plain_grads.items():
        assert torch.allclose(liger_grads[name], g, rtol=5e-2, atol=5e-2 * g.abs().max().item() + 1e-3), name


@pytest.mark.gpu
@needs_cuda
def test_gpu_fused_linear_cross_entropy_matches_the_plain_twin():
    if not kernels.kernel_status("liger_kernel").usable:
        pytest.skip("liger-kernel is not usable here")
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(64, 128, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    weight = torch.randn(1000, 128, device="cuda", dtype=torch.bfloat16, generator=g, requires_grad=True)
    targets = torch.randint(0, 1000, (64,), device="cuda", generator=g)
    targets[:5] = -100
    fused = kernels.linear_cross_entropy(hidden, weight, targets, scale=0.1, fused=True)
    fused.sum().backward()
    fused_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    plain = kernels.linear_cross_entropy(hidden, weight, targets, scale=0.1, fused=False)
    plain.sum().backward()
    assert torch.allclose(fused, plain, rtol=2e-2, atol=2e-2)
    for a, b in zip(fused_grads, (hidden.grad, weight.grad)):
        assert torch.allclose(a.float(), b.float(), rtol=5e-2, atol=5e-2 * b.float().abs().max().item())
