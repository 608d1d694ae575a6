"""Grader side of the sandbox: the pool of sandbox servers, their lifetime, and the isolation report.

Each server (:mod:`falcon_h1r.sandbox.runner`) is a trusted child process that grades one program at
a time, each program in a fresh jail with its own uid. A thread takes a server from the pool for one
program and gives it back; more threads start more servers. Servers exit when this process does
(their stdin closes, or they see their parent change), and their programs die with them.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

RUNNER_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
UID_BASE, UID_SPAN = 1_900_000_000, 100_000_000  # one uid per program, drawn from a range no account uses
HOST_DIR_PREFIX = "falcon_h1r_sbx_"
DISABLE_ENV = "FALCON_H1R_SANDBOX_DISABLE"
MAX_IDLE_SERVERS = 8
START_TIMEOUT_S = 30.0
ANSWER_GRACE_S = 10.0
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
        "PYTHONIOENCODING": "utf-8", "HOME": "/", "TMPDIR": tempfile.gettempdir()}
# layers whose absence weakens containment (the report says why each one is missing)
REQUIRED_LAYERS = ("private_root", "mount_namespace", "pid_namespace", "private_proc", "network_namespace",
                   "ipc_namespace", "distinct_uid", "seccomp")


class SandboxUnavailable(RuntimeError):
    """The sandbox server could not be started or stopped answering."""


def _others_may_run(path: str) -> bool:
    """Every folder above ``path`` and the file itself executable by any user (o+x)."""
    real, parts = os.path.realpath(path), []
    while True:
        parts.append(real)
        if real == "/":
            break
        real = os.path.dirname(real)
    try:
        return all(os.stat(p).st_mode & stat.S_IXOTH for p in parts)
    except OSError:
        return False


def server_interpreter() -> str:
    """The interpreter the servers (and so the programs) run.

    ``sys.executable`` unless we are root and it lives where another user cannot reach it (a Python
    under /root, say): programs run as their own uid, and without a private root they would then
    fail to import the standard library. Then a system interpreter of the same major.minor.
    """
    if os.geteuid() != 0:
        return sys.executable
    mm = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for cand in (sys.executable, f"/usr/bin/python{mm}", f"/usr/local/bin/python{mm}"):
        if os.path.isfile(cand) and _others_may_run(cand):
            return cand
    return sys.executable


class Server:
    """One sandbox server process and its framed pipe protocol (one request at a time).

    ``disable`` names layers to leave off (the runner's DISABLE_ENV), to exercise the degraded mode;
    by default the variable is passed on from this process's environment, if set.
    """

    def __init__(self, disable: str | None = None) -> None:
        env = dict(_ENV)
        disable = os.environ.get(DISABLE_ENV, "") if disable is None else disable
        if disable:
            env[DISABLE_ENV] = disable
        self.interpreter = server_interpreter()
        self.proc = subprocess.Popen([self.interpreter, "-S", "-s", "-B", RUNNER_PATH], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd="/",
                                     close_fds=True)
        self.owner = os.getpid()
        try:
            self.hello = self._read(time.monotonic() + START_TIMEOUT_S)
        except SandboxUnavailable:
            self.kill()
            raise
        if not self.hello.get("hello"):
            self.kill()
            raise SandboxUnavailable(f"the sandbox server did not start: {self.hello}")
        _warn_if_degraded(self.hello)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd, out = self.proc.stdout.fileno(), bytearray()
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise SandboxUnavailable("the sandbox server did not answer in time")
            chunk = os.read(fd, n - len(out))
            if not chunk:
                raise SandboxUnavailable(f"the sandbox server exited (status {self.proc.poll()})")
            out += chunk
        return bytes(out)

    def _read(self, deadline: float) -> dict[str, Any]:
        import json

        size = struct.unpack(">I", self._read_exact(4, deadline))[0]
        return json.loads(self._read_exact(size, deadline))

    def request(self, req: dict[str, Any], answer_within_s: float) -> dict[str, Any]:
        import json

        data = json.dumps(req, ensure_ascii=True).encode()
        try:
            self.proc.stdin.write(struct.pack(">I", len(data)) + data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise SandboxUnavailable(f"the sandbox server is gone ({exc})") from exc
        return self._read(time.monotonic() + answer_within_s)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Ask the server to exit (it also exits on EOF); kill it if it does not within a second."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc.stdout.close()

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


class ServerPool:
    """Idle servers, taken by one thread at a time; a new one starts when none is idle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[Server] = []
        self._all: set[Server] = set()
        self._uid_next = int.from_bytes(os.urandom(4), "big") % UID_SPAN
        self._swept = False

    def next_uid(self) -> int:
        with self._lock:
            self._uid_next = (self._uid_next + 1) % UID_SPAN
            return UID_BASE + self._uid_next

    @contextmanager
    def server(self) -> Iterator[Server]:
        with self._lock:
            srv = self._idle.pop() if self._idle else None
            sweep, self._swept = not self._swept, True
        if sweep:
            sweep_stale_dirs()
        if srv is None:
            srv = Server()
            with self._lock:
                self._all.add(srv)
        healthy = False
        try:
            yield srv
            healthy = srv.alive()
        finally:
            with self._lock:
                keep = healthy and len(self._idle) < MAX_IDLE_SERVERS
                if keep:
                    self._idle.append(srv)
                else:
                    self._all.discard(srv)
            if not keep:
                srv.kill() if not healthy else srv.close()

    def fds(self) -> list[int]:
        """This process's ends of the servers' pipes (so fd-leak checks can leave them out)."""
        with self._lock:
            return [f.fileno() for s in self._all for f in (s.proc.stdin, s.proc.stdout) if not f.closed]

    def pids(self) -> list[int]:
        with self._lock:
            return sorted(s.pid for s in self._all)

    def close(self) -> None:
        with self._lock:
            servers, self._idle, self._all = list(self._all), [], set()
        for s in servers:
            if s.owner == os.getpid():
                s.close()

    def forget(self) -> None:
        """In a forked child: the servers belong to the parent; start afresh."""
        self._lock = threading.Lock()
        self._idle, self._all = [], set()


POOL = ServerPool()
atexit.register(POOL.close)
os.register_at_fork(after_in_child=POOL.forget)


# ----------------------------------------------------------------------------- housekeeping
def sweep_stale_dirs(root: str | None = None) -> list[str]:
    """Remove work folders that servers of dead processes left behind (only made without a mount
    namespace: with one, a program's files live in its own tmpfs and vanish with it)."""
    root = root or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(root)
    except OSError:
        return removed
    for name in names:
        m = re.fullmatch(re.escape(HOST_DIR_PREFIX) + r"(\d+)_\w+", name)
        old_style = re.fullmatch(re.escape(HOST_DIR_PREFIX) + r"[a-z0-9_]{8}", name)
        path = os.path.join(root, name)
        try:
            stale = (m is not None and not _pid_alive(int(m.group(1)))) or (
                old_style is not None and time.time() - os.lstat(path).st_mtime > 3600)
        except OSError:
            continue
        if stale and os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def open_fd_count() -> int:
    """This process's open files, the sandbox servers' pipes left out: the pool keeps servers alive
    between programs, so a before/after count that included them would see a leak that is not one."""
    return len({int(n) for n in os.listdir("/proc/self/fd")} - set(POOL.fds()))


def sandbox_processes(uid: int | None = None) -> list[int]:
    """Live processes (zombies excluded) running as a program uid of the sandbox (or as ``uid``)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            owner = os.stat(f"/proc/{name}").st_uid
            if not (owner == uid if uid is not None else UID_BASE <= owner < UID_BASE + UID_SPAN):
                continue
            with open(f"/proc/{name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X"):
                    out.append(int(name))
        except (OSError, IndexError):
            continue
    return out


_warned: set[str] = set()


def _missing(hello: dict[str, Any]) -> dict[str, str]:
    return {k: hello["notes"].get(k, "") for k in REQUIRED_LAYERS if not hello["layers"].get(k)}


def _warn_if_degraded(hello: dict[str, Any]) -> None:
    """One RuntimeWarning per distinct set of missing layers: a weaker sandbox is never silent."""
    missing = _missing(hello)
    key = ",".join(sorted(missing))
    if missing and key not in _warned:
        _warned.add(key)
        shown = "; ".join(f"{k}: {v}" for k, v in missing.items())
        warnings.warn(f"sandbox isolation degraded, unavailable layers: {shown}", RuntimeWarning, stacklevel=3)


def report_from_hello(hello: dict[str, Any]) -> dict[str, Any]:
    """The isolation report of one server's startup message."""
    layers = dict(hello["layers"])
    layers["verdict_outside"] = True
    why = _missing(hello)
    missing = list(why)
    return {"layers": layers, "missing": missing, "why_missing": why,
            "python_version": hello["python"], "server_interpreter": hello.get("interpreter", ""),
            "readonly_paths": hello.get("readonly_paths", []),
            "program_uid_range": [UID_BASE, UID_BASE + UID_SPAN - 1],
            "host_folders": "none" if layers.get("mount_namespace") else f"{tempfile.gettempdir()}/{HOST_DIR_PREFIX}*",
            # the keys older callers read
            "network_namespace": layers.get("network_namespace", False),
            "pid_namespace": layers.get("pid_namespace", False),
            "unprivileged_user": layers.get("distinct_uid", False),
            "audit_guard": True, "clean_environment": True,
            "rlimits": ["CPU", "AS", "NPROC", "FSIZE", "NOFILE", "CORE"]}


def isolation_report() -> dict[str, Any]:
    """Which isolation layers are active on this machine, and why any is not (for provenance)."""
    with POOL.server() as srv:
        return report_from_hello(srv.hello)
