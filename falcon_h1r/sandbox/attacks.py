"""The sandbox's own adversarial suite: programs that try to hurt the host, reach other programs, or
earn a reward they should not, each graded like a model's answer and then checked from the host.

Every attack defines ``solve`` and is graded with :func:`attack_tests`: ``assert solve(7) == <token>``
where the token is fresh per run and never enters the sandbox, so a reward above 0 means the attack
found the expected value somewhere (the grader's memory, files or frames) or made the grader accept a
wrong one. Host checks after each attack: the canary file intact, nothing created outside, no secret
(the canary's text, the grader's environment, a decoy process's command line) in the output, the
loopback and abstract-socket listeners never contacted, the decoy process alive, no process of the
program's uid left, the run bounded in time, and the grader's open files unchanged.

Placeholders filled by :func:`fill_attack`: ``__CANARY__`` (a host file whose text holds the secret),
``__HOST_DIR__`` (a host folder holding a file named after the secret), ``__OUTSIDE__`` (a host path
that must not appear), ``__PORT__`` (a loopback TCP listener), ``__UNIX__`` (an abstract Unix socket
the grader listens on), ``__SECRET_NAME__`` (an environment variable of the grader only),
``__PACKAGE_FILE__`` (this package's source). The "outside" network address is 192.0.2.1
(TEST-NET-1, RFC 5737: never routed); no real host is targeted.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from falcon_h1r.sandbox.api import (
    SandboxLimits,
    SandboxResult,
    _grade,
    _limits,
    _parse_tests,
)
from falcon_h1r.sandbox.attack_programs import ATTACK_CLASSES, ATTACK_EXPECTED, ATTACKS
from falcon_h1r.sandbox.pool import UID_BASE, UID_SPAN, open_fd_count, sandbox_processes

NOBODY_UID = NOBODY_GID = 65534  # kept for callers; programs now run as one uid each (pool.UID_BASE..)
ATTACK_SUITE_LIMITS = SandboxLimits(cpu_s=1.0, wall_s=2.0, memory_mb=256, max_procs=32, max_output_bytes=16384,
                                    max_file_bytes=1 << 20, max_open_files=32, max_files=16)
PACKAGE_MARKER = "def grade_programs("  # a line of api.py: seen in an output = the package source was read


def attack_tests(token: str) -> list[str]:
    """The test every attack is graded with; ``token`` must be fresh and kept out of the attack's code."""
    return [f"assert solve(7) == {token!r}"]


def fill_attack(name: str, **places: Any) -> str:
    """The attack's code with its placeholders filled (missing ones get harmless stand-ins)."""
    defaults = {"CANARY": "/nonexistent/canary.txt", "HOST_DIR": "/nonexistent", "PORT": 9,
                "OUTSIDE": os.path.join(tempfile.gettempdir(), f"falcon_h1r_escape_{secrets.token_hex(8)}"),
                "UNIX": f"falcon_h1r_canary_{secrets.token_hex(4)}", "SECRET_NAME": "FALCON_H1R_SECRET",
                "PACKAGE_FILE": os.path.join(os.path.dirname(os.path.abspath(__file__)), "api.py")}
    unknown = set(places) - set(defaults)
    if unknown:
        raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; accepted: {sorted(defaults)}")
    code = ATTACKS[name]
    for key, value in {**defaults, **places}.items():
        code = code.replace(f"__{key}__", str(value))
    return code


def listener_was_contacted(listener: socket.socket) -> bool:
    """Whether anything connected to a non-blocking canary listener (an escape to the network)."""
    try:
        conn, _ = listener.accept()
    except (BlockingIOError, OSError):
        return False
    conn.close()
    return True


def _outside_paths(outside: str) -> list[str]:
    """The host paths an attack aiming at ``outside`` may have written (see write_dev_shm_and_var_tmp)."""
    base = os.path.basename(outside)
    return [outside] + [os.path.join(d, base) for d in ("/dev/shm", "/var/tmp", "/run", "/")]


class _HostBait:
    """Everything an attack could reach on the host: files, listeners, a decoy process, a secret."""

    def __init__(self, scratch: str) -> None:
        self.secret = "s3cr3t-" + secrets.token_hex(12)
        self.scratch = scratch
        with open(os.path.join(scratch, f"secret_{self.secret}.txt"), "w") as f:
            f.write(self.secret)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.tcp.setblocking(False)
        self.unix_name = f"falcon_h1r_canary_{secrets.token_hex(6)}"
        self.unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.unix.bind("\0" + self.unix_name)
        self.unix.listen(16)
        self.unix.setblocking(False)
        self.decoy = subprocess.Popen([sys.executable, "-S", "-c", "import time; time.sleep(600)", self.secret],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def canary(self, name: str) -> tuple[str, str]:
        path, text = os.path.join(self.scratch, f"canary_{name}.txt"), f"canary {self.secret}\n"
        with open(path, "w") as f:
            f.write(text)
        return path, text

    def close(self) -> None:
        self.decoy.kill()
        self.decoy.wait()
        self.tcp.close()
        self.unix.close()


def run_attack_suite(limits: SandboxLimits | None = None, *, names: list[str] | None = None,
                     scratch_dir: str | None = None, guard: bool = True, workers: int = 2) -> list[dict[str, Any]]:
    """Run every attack in :data:`ATTACKS` (or ``names``) and check from the host that it was contained.

    One dict per attack: ``name``, ``kind``, ``contained`` (all checks hold), ``reason``, ``expected``,
    ``wall_s``, ``host_ok`` (each check). ``guard=False`` runs the programs without the in-process
    audit hook, to show that the kernel layers alone contain them (the reason is then not checked).
    """
    limits = ATTACK_SUITE_LIMITS if limits is None else _limits(limits)
    chosen = list(ATTACKS) if names is None else list(names)
    unknown = [n for n in chosen if n not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; accepted: {sorted(ATTACKS)}")
    own_scratch = scratch_dir is None
    scratch = tempfile.mkdtemp(prefix="falcon_h1r_attacks_") if own_scratch else scratch_dir
    bait = _HostBait(scratch)
    secret_name = "FALCON_H1R_SECRET"
    previous_env = os.environ.get(secret_name)
    os.environ[secret_name] = bait.secret
    jobs = []
    try:
        for name in chosen:
            canary, text = bait.canary(name)
            outside = os.path.join(tempfile.gettempdir(), f"falcon_h1r_escape_{secrets.token_hex(8)}")
            code = fill_attack(name, CANARY=canary, HOST_DIR=scratch, OUTSIDE=outside, PORT=bait.tcp.getsockname()[1],
                               UNIX=bait.unix_name, SECRET_NAME=secret_name)
            jobs.append((name, code, _parse_tests(attack_tests(secrets.token_hex(8))), canary, text, outside))
        fds_before, host_dir_before = open_fd_count(), sorted(os.listdir(scratch))

        def grade(job: tuple) -> tuple[SandboxResult, float]:
            t0 = time.monotonic()
            res = _grade(job[1], job[2], limits, guard)
            return res, time.monotonic() - t0

        with ThreadPoolExecutor(max_workers=workers) as ex:
            graded = list(ex.map(grade, jobs))
        shared = {"loopback_untouched": not listener_was_contacted(bait.tcp),
                  "unix_socket_untouched": not listener_was_contacted(bait.unix),
                  "decoy_alive": bait.decoy.poll() is None, "parent_fds_stable": open_fd_count() == fds_before,
                  "host_dir_unchanged": sorted(os.listdir(scratch)) == host_dir_before}
        rows = []
        for (name, _, _, canary, text, outside), (res, elapsed) in zip(jobs, graded):
            try:
                with open(canary) as f:
                    canary_ok = f.read() == text
            except OSError:
                canary_ok = False
            outside_ok = True
            for path in _outside_paths(outside):
                if os.path.lexists(path):
                    outside_ok = False
                    os.remove(path)
            shown = res.stdout + res.stderr + res.reason + res.detail
            expected = ATTACK_EXPECTED[name]
            host_ok = {"reward_zero": not res.passed,
                       "expected_reason": not guard or any(res.reason.startswith(e) for e in expected),
                       "canary_intact": canary_ok, "no_file_outside": outside_ok,
                       "secret_not_leaked": bait.secret not in shown, "source_not_read": PACKAGE_MARKER not in shown,
                       "no_leftover_processes": not (UID_BASE <= res.sandbox_uid < UID_BASE + UID_SPAN)
                       or not sandbox_processes(res.sandbox_uid),
                       "time_bounded": elapsed <= limits.wall_s + 3.0, **shared}
            rows.append({"name": name, "kind": ATTACK_CLASSES[name], "contained": all(host_ok.values()),
                         "reason": res.reason, "expected": list(expected), "wall_s": round(res.wall_s, 3),
                         "host_ok": host_ok})
    finally:
        bait.close()
        if previous_env is None:
            os.environ.pop(secret_name, None)
        else:
            os.environ[secret_name] = previous_env
        if own_scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """``tried``, ``contained``, ``escapes`` and the same per attack class, for reports."""
    kinds: dict[str, dict[str, int]] = {}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"tried": 0, "contained": 0})
        k["tried"] += 1
        k["contained"] += r["contained"]
    contained = sum(r["contained"] for r in rows)
    return {"tried": len(rows), "contained": contained, "escapes": len(rows) - contained, "by_kind": kinds}
