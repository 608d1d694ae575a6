"""The sandbox against its own adversarial suite, against a concurrent neighbour, and against the
death of its grader: every attack contained, every reward 0, nothing left behind."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from falcon_h1r import sandbox as sb
from falcon_h1r.sandbox import api, pool

REPO = Path(__file__).resolve().parent.parent
REQUIRED_KINDS = {"host_files", "processes", "frames", "builtins", "equality", "forgery", "resources", "lifetime",
                  "network", "process"}


@pytest.fixture(scope="module")
def attack_rows(tmp_path_factory):
    rows = sb.run_attack_suite(scratch_dir=str(tmp_path_factory.mktemp("attack_bait")))
    return {row["name"]: row for row in rows}


def test_suite_covers_every_attack_class():
    assert REQUIRED_KINDS <= set(sb.ATTACK_CLASSES.values())
    assert len(sb.ATTACKS) >= 60 and sb.ATTACKS.keys() == sb.ATTACK_EXPECTED.keys() == sb.ATTACK_CLASSES.keys()
    assert "192.0.2.1" in sb.ATTACKS["socket_outside"]  # TEST-NET-1: never routed, no real host
    for name in sb.ATTACKS:  # every placeholder filled, every program valid Python
        code = sb.fill_attack(name)
        assert not re.search(r"__[A-Z_]+__", code) and sb.syntax_ok(code), name
    with pytest.raises(ValueError, match="unknown placeholder"):
        sb.fill_attack("read_canary", CANARY_PATH="/x")


@pytest.mark.parametrize("name", sorted(sb.ATTACKS))
def test_each_attack_is_contained(attack_rows, name):
    row = attack_rows[name]
    failed = [check for check, ok in row["host_ok"].items() if not ok]
    assert row["contained"], f"{name}: reason={row['reason']!r} expected={row['expected']} failed={failed}"


def test_suite_reports_zero_escapes_and_zero_rewards(attack_rows):
    summary = sb.summarize(list(attack_rows.values()))
    assert summary["tried"] == len(sb.ATTACKS) and summary["contained"] == summary["tried"]
    assert summary["escapes"] == 0 and set(summary["by_kind"]) == set(sb.ATTACK_CLASSES.values())
    assert all(row["host_ok"]["reward_zero"] for row in attack_rows.values())
    assert attack_rows["busy_loop"]["reason"] in ("cpu", "timeout")
    assert attack_rows["fork_bomb_os_fork"]["reason"] == "forbidden: process"
    assert all(row["wall_s"] <= sb.ATTACK_SUITE_LIMITS.wall_s + 3 for row in attack_rows.values())


def test_kernel_layers_alone_contain_every_attack(tmp_path):
    # the same suite with the in-process audit hook off: containment must not depend on it
    if sb.isolation_report()["missing"]:
        pytest.skip(f"isolation layers missing here: {sb.isolation_report()['why_missing']}")
    rows = sb.run_attack_suite(scratch_dir=str(tmp_path), guard=False)
    escaped = {r["name"]: [k for k, ok in r["host_ok"].items() if not ok] for r in rows if not r["contained"]}
    assert not escaped, escaped
    assert len(rows) == len(sb.ATTACKS)


def test_a_program_cannot_reach_a_concurrent_one():
    if sb.isolation_report()["missing"]:
        pytest.skip("needs every isolation layer")
    name = f"falcon_victim_{secrets.token_hex(4)}"
    victim = (
        "import os, socket, time\n"
        "open('/tmp/victim_marker', 'w').write('mine')\n"
        f"s = socket.socket(socket.AF_UNIX)\ns.bind('\\0{name}')\ns.listen(4)\n"
        "time.sleep(1.5)\n"
        "assert open('/tmp/victim_marker').read() == 'mine'\n"
        "def solve(x):\n    return x + 1\n"
    )
    known = set(sb.sandbox_processes())
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(victim=api._grade(victim, api._parse_tests(
        ["assert solve(1) == 2"]), api._timed(None, 5.0), guard=False)))
    t.start()
    for _ in range(200):
        new = set(sb.sandbox_processes()) - known
        if new:
            break
        time.sleep(0.01)
    assert new, "the victim never started"
    vpid = min(new)
    attacker = (
        "import json, os, signal, socket\n"
        "found = {'pids': sorted(p for p in os.listdir('/proc') if p.isdigit())}\n"
        "found['marker'] = os.path.exists('/tmp/victim_marker')\n"
        "try:\n"
        f"    c = socket.socket(socket.AF_UNIX)\n    c.connect('\\0{name}')\n    found['socket'] = 'connected'\n"
        "except OSError as e:\n    found['socket'] = type(e).__name__\n"
        f"for what, act in (('kill', lambda: os.kill({vpid}, signal.SIGKILL)),\n"
        f"                  ('mem', lambda: open('/proc/{vpid}/mem', 'r+b')),\n"
        f"                  ('tmp', lambda: open('/proc/{vpid}/root/tmp/victim_marker', 'w'))):\n"
        "    try:\n        act()\n        found[what] = 'done'\n"
        "    except OSError as e:\n        found[what] = type(e).__name__\n"
        "killed = 0\n"
        "for pid in range(2, 3000):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n        killed += 1\n"
        "    except OSError:\n        pass\n"
        "found['killed'] = killed\n"
        "print(json.dumps(found))\n"
    )
    seen = sb.api._run_program(attacker, "", api._timed(None, 5.0), guard=False)[0]
    t.join()
    found = json.loads(seen.stdout)
    assert found == {"pids": ["1"], "marker": False, "socket": "ConnectionRefusedError", "kill": "ProcessLookupError",
                     "mem": "FileNotFoundError", "tmp": "FileNotFoundError", "killed": 0}, found
    assert out["victim"].passed, out["victim"].reason


_GRADER = """
import sys
from falcon_h1r import sandbox as sb
from falcon_h1r.sandbox.pool import POOL
sb.isolation_report()
print("SERVERS", *POOL.pids(), flush=True)
sb.run_python("import time\\ntime.sleep(60)", limits=sb.SandboxLimits(cpu_s=60, wall_s=60))
"""


@pytest.mark.parametrize("disable", ["", "private_root,pid_namespace"], ids=["full", "no_mount_no_pid_namespace"])
def test_a_killed_grader_takes_its_sandbox_with_it(disable):
    env = {**os.environ, "PYTHONPATH": str(REPO), pool.DISABLE_ENV: disable}
    folders = lambda: {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(pool.HOST_DIR_PREFIX)}
    before_folders, before_programs = folders(), set(sb.sandbox_processes())
    grader = subprocess.Popen([sys.executable, "-W", "ignore", "-c", _GRADER], stdout=subprocess.PIPE, text=True,
                              env=env)
    servers = [int(x) for x in grader.stdout.readline().split()[1:]]
    programs: set[int] = set()
    for _ in range(300):
        programs = set(sb.sandbox_processes()) - before_programs
        if programs:
            break
        time.sleep(0.01)
    assert servers and programs, "the grader's program never started"
    os.kill(grader.pid, signal.SIGKILL)
    grader.wait()
    grader.stdout.close()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (programs & set(sb.sandbox_processes()) or
                                           any(os.path.exists(f"/proc/{s}") for s in servers)):
        time.sleep(0.05)
    assert not programs & set(sb.sandbox_processes()), "the program outlived its grader"
    assert not any(os.path.exists(f"/proc/{s}") for s in servers), "the server outlived its grader"
    assert folders() <= before_folders, "a work folder was left behind"
