"""The sandbox server: a trusted process that runs each graded program in its own fresh jail.

Started by the grader (:mod:`falcon_h1r.sandbox.pool`) as ``python -S -s -B runner.py`` with an
environment built from scratch; it speaks length-prefixed JSON frames on stdin/stdout. Standard
library only (plus :mod:`jail` and :mod:`harness`, its siblings), so no site-packages are importable.

Process tree, per program (each arrow a fork)::

    grader ──► server (root, private read-only root, built once)
                 └─► supervisor (new mount/pid/net/ipc/uts namespaces, a fresh tmpfs on /tmp)
                       └─► worker = pid 1 of that pid namespace: private /proc, own uid, rlimits,
                           seccomp, then the program (harness.run)

Why one server and forks instead of a new interpreter per program: starting Python and building the
root costs ~0.1 s; forking a fresh jail from the warm server costs a few milliseconds. Each program still gets a process, a uid
and namespaces of its own, so one program can neither see nor touch another.

Lifetime: the server exits when its stdin closes or its parent (the grader) changes; the supervisor
and the worker each die with their parent (PR_SET_PDEATHSIG); the worker is pid 1 of its namespace,
so when it dies the kernel kills everything it started. The supervisor enforces the wall limit,
inside the jail; the server and the grader keep a backstop.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import resource
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

if __package__:
    from . import harness, jail
else:  # run as a script: the siblings are next to this file (removed from sys.path before any program runs)
    import harness
    import jail

SERVER_PID = os.getpid()
GRADER_PID = os.getppid()
REPORT_CAP_BYTES = 4 << 20
STATUS_CAP_BYTES = 1 << 16
GRACE_S = 1.0
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"
MOUNTPOINT_CANDIDATES = ("/mnt", "/media", "/srv", "/opt", "/boot", "/home")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
HOST_DIR_PREFIX = "falcon_h1r_sbx_"
DISABLE_ENV = "FALCON_H1R_SANDBOX_DISABLE"  # comma-separated layers to leave off (tests of the degraded mode)


class GraderGone(Exception):
    """Our parent changed: the grader is dead, nobody will read an answer."""


# ----------------------------------------------------------------------------- frames
def write_frame(fd: int, obj: dict) -> None:
    data = json.dumps(obj, ensure_ascii=True).encode()
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def _read_exact(fd: int, n: int, parent: int | None) -> bytes | None:
    out = bytearray()
    while len(out) < n:
        ready, _, _ = select.select([fd], [], [], 0.25)
        if parent is not None and os.getppid() != parent:
            return None
        if not ready:
            continue
        chunk = os.read(fd, n - len(out))
        if not chunk:
            return None
        out += chunk
    return bytes(out)


def read_frame(fd: int, parent: int | None = None) -> dict | None:
    """The next frame, or None at EOF or when ``parent`` is no longer our parent (it died)."""
    head = _read_exact(fd, 4, parent)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", head)[0], parent)
    return None if body is None else json.loads(body)


# ----------------------------------------------------------------------------- setting up, once
def readonly_paths() -> list[str]:
    """System libraries and the interpreter's prefix; a path inside an earlier one is skipped."""
    wanted = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache",
              "/etc/localtime", os.path.realpath(sys.base_prefix)]
    out: list[str] = []
    for p in wanted:
        real = os.path.realpath(p)
        top_symlink = os.path.islink(p) and os.path.dirname(p) == "/"
        if not os.path.lexists(p) or (not top_symlink and any(
                real == os.path.realpath(q) or real.startswith(os.path.realpath(q) + "/") for q in out
                if not os.path.islink(q))):
            continue
        out.append(p)
    return out


def _mountpoint(paths: list[str]) -> str | None:
    reals = [os.path.realpath(p) for p in paths]
    for m in MOUNTPOINT_CANDIDATES:
        if os.path.isdir(m) and not os.path.islink(m) and not any(
                r == m or r.startswith(m + "/") for r in reals):
            return m
    return None


def _in_child(fn) -> tuple[bool, str]:
    """Run ``fn`` in a forked child (so a half-done attempt leaves nothing here): (ok, why not)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            fn()
            os.write(w, b"ok")
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent as text
            os.write(w, f"{type(exc).__name__}: {exc}"[:300].encode())
            code = 1
        os._exit(code)
    os.close(w)
    msg = b""
    while chunk := os.read(r, 4096):
        msg += chunk
    os.close(r)
    os.waitpid(pid, 0)
    text = msg.decode("utf-8", "replace")
    return text == "ok", ("" if text == "ok" else text or "the probe process died")


def _disabled() -> set[str]:
    return {x.strip() for x in os.environ.get(DISABLE_ENV, "").split(",") if x.strip()}


def _probe_program_layers(plan: dict) -> None:
    """Which per-program layers this kernel allows, each tried alone in a throwaway child."""
    layers, notes, off = plan["layers"], plan["notes"], _disabled()
    flags = 0
    for name, flag in jail.NAMESPACE_FLAGS.items():
        if f"{name}_namespace" in off:
            ok, why = False, f"disabled by {DISABLE_ENV}"
        elif name == "mount" and not layers["private_root"]:
            ok, why = False, "no private root to copy"
        else:
            ok, why = _in_child(lambda flag=flag: jail.unshare(flag))
        layers[f"{name}_namespace"] = ok
        if ok:
            flags |= flag
        else:
            notes[f"{name}_namespace"] = why
    if layers["mount_namespace"]:
        def tmp_and_proc():
            jail.unshare(flags)
            jail.mount_private_tmp(1 << 20, 64, os.getuid(), os.getgid())
            if layers["pid_namespace"]:
                ok, why = _in_child(jail.mount_private_proc)  # the fork enters the new pid namespace
                if not ok:
                    raise OSError(1, why)
        ok, why = _in_child(tmp_and_proc)
        if not ok:
            layers["mount_namespace"] = False
            notes["mount_namespace"] = why
            flags &= ~jail.CLONE_NEWNS
    layers["private_proc"] = layers["mount_namespace"] and layers["pid_namespace"]
    if not layers["private_proc"]:
        notes["private_proc"] = "needs both a mount and a pid namespace"
    plan["flags"] = flags
    ok, why = (False, f"disabled by {DISABLE_ENV}") if "seccomp" in off else _in_child(jail.install_seccomp)
    layers["seccomp"] = ok
    if not ok:
        notes["seccomp"] = why
    layers["no_new_privs"] = True
    layers["distinct_uid"] = os.geteuid() == 0 and "distinct_uid" not in off
    if not layers["distinct_uid"]:
        notes["distinct_uid"] = (f"disabled by {DISABLE_ENV}" if "distinct_uid" in off else
                                 "the server does not run as root, so programs keep its user")


def setup() -> dict:
    """Build the private read-only root (if the kernel lets us) and probe the per-program layers."""
    plan: dict = {"layers": {"private_root": False}, "notes": {}, "flags": 0,
                  "python": platform.python_version(), "pid": os.getpid(),
                  "interpreter": sys.executable}
    paths = readonly_paths()
    mountpoint = _mountpoint(paths)
    try:
        if "private_root" in _disabled():
            raise OSError(1, f"disabled by {DISABLE_ENV}")
        if mountpoint is None:
            raise OSError(2, f"no empty mount point among {MOUNTPOINT_CANDIDATES}")
        jail.unshare(jail.CLONE_NEWNS)
        jail.build_root(mountpoint, paths, [d for d in DEVICES if os.path.exists(d)])
        plan["layers"]["private_root"] = True
        plan["readonly_paths"] = paths
    except OSError as exc:
        plan["notes"]["private_root"] = str(exc)
    _probe_program_layers(plan)
    harness.preload_modules()
    plan["layers"].update({"rlimits": True, "audit_guard": True, "wall_limit_inside": True,
                           "dies_with_grader": True})
    return plan


# ----------------------------------------------------------------------------- one program
def _kill_uid(uid: int) -> None:
    """Without a pid namespace: SIGKILL every process of the program's own uid (plain mode)."""
    for _ in range(3):
        found = False
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.stat(f"/proc/{name}").st_uid == uid:
                        os.kill(int(name), signal.SIGKILL)
                        found = True
                except OSError:
                    continue
        if not found:
            return
        time.sleep(0.01)


def _worker(req: dict, plan: dict, fds: dict, workdir: str, uid: int | None, alive_r: int) -> None:
    """pid 1 of the program's namespace: last trusted steps, then the program. Never returns."""
    # stdin, stdout, stderr, the report pipe, and the supervisor's liveness pipe at 0-4; nothing else open
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in
            (fds["stdin"], fds["out_w"], fds["err_w"], fds["rep_w"], alive_r)]
    for dst, src in enumerate(high):
        os.dup2(src, dst)
    alive_r = harness.REPORT_FD + 1
    os.closerange(alive_r + 1, 1 << 16)
    layers, lim = plan["layers"], req["limits"]
    if layers["private_proc"]:
        jail.mount_private_proc()
    if not layers["pid_namespace"]:
        os.setpgid(0, 0)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    # armed after the uid change, which clears it; the pipe tells whether the supervisor died before that
    jail.prctl(jail.PR_SET_PDEATHSIG, signal.SIGKILL)
    if select.select([alive_r], [], [], 0)[0]:
        os._exit(harness.EXIT_INTERNAL)
    os.close(alive_r)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update({"PATH": CLEAN_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0",
                       "PYTHONIOENCODING": "utf-8", "HOME": workdir, "TMPDIR": workdir})
    tempfile.tempdir = None
    cpu = max(1, int(-(-lim["cpu_s"] // 1)))
    for res, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1),
                            (resource.RLIMIT_AS, lim["memory_mb"] << 20, None),
                            (resource.RLIMIT_NPROC, lim["max_procs"], None),
                            (resource.RLIMIT_FSIZE, max(lim["max_file_bytes"], 1), None),
                            (resource.RLIMIT_NOFILE, lim["max_open_files"], None),
                            (resource.RLIMIT_CORE, 0, None)):
        resource.setrlimit(res, (soft, soft if hard is None else hard))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write raises OSError(EFBIG) instead
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as in any Python program: BrokenPipeError, not death
    if layers["seccomp"]:
        jail.install_seccomp()
    else:
        jail.prctl(jail.PR_SET_NO_NEW_PRIVS, 1)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if p and os.path.abspath(p) != here]
    for name in ("jail", "harness", "runner", "__main__", "ctypes", "_ctypes", "ctypes._endian"):
        sys.modules.pop(name, None)
    config = {"code": req["code"], "mode": req["mode"], "calls": req.get("calls") or []}
    guard = bool(req.get("guard", True))
    del req, plan, fds
    harness.run(config, guard=guard)


def _supervise(req: dict, plan: dict, fds: dict) -> None:
    """Outside the program's pid namespace: make its jail, start it, enforce the wall limit, report."""
    jail.die_with_parent(signal.SIGKILL, SERVER_PID)
    for key in ("out_r", "err_r", "rep_r", "st_r"):
        os.close(fds[key])
    layers, lim = plan["layers"], req["limits"]
    uid = int(req["uid"]) if layers["distinct_uid"] else None
    if plan["flags"]:
        jail.unshare(plan["flags"])
    workdir = fds["workdir"]
    if layers["mount_namespace"]:
        jail.mount_private_tmp(lim["max_files"] * max(lim["max_file_bytes"], 1) + (1 << 16), lim["max_files"] + 8,
                               uid if uid is not None else os.getuid(), uid if uid is not None else os.getgid())
    alive_r, alive_w = os.pipe()
    start = time.monotonic()
    wpid = os.fork()
    if wpid == 0:
        os.close(alive_w)
        try:
            _worker(req, plan, fds, workdir, uid, alive_r)
        finally:
            os._exit(harness.EXIT_INTERNAL)
    os.close(alive_r)
    write_frame(fds["st_w"], {"wpid": wpid, "uid": uid if uid is not None else os.getuid()})
    for key in ("stdin", "out_w", "err_w", "rep_w"):
        os.close(fds[key])
    timed_out = False
    try:
        pidfd = os.pidfd_open(wpid)
        timed_out = not select.select([pidfd], [], [], lim["wall_s"])[0]
    except (AttributeError, OSError):
        while os.waitid(os.P_PID, wpid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() - start >= lim["wall_s"]:
                timed_out = True
                break
            time.sleep(0.005)
    if timed_out:
        os.kill(wpid, signal.SIGKILL)
    _, status, ru = os.wait4(wpid, 0)  # with a pid namespace, its init is reaped only once all inside are gone
    wall = time.monotonic() - start
    if not layers["pid_namespace"]:
        try:
            os.killpg(wpid, signal.SIGKILL)
        except OSError:
            pass
        if uid is not None:
            _kill_uid(uid)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -sig
    write_frame(fds["st_w"], {"code": code, "signal": sig, "cpu": ru.ru_utime + ru.ru_stime,
                              "maxrss_kb": ru.ru_maxrss, "timeout": timed_out, "wall": wall, "wpid": wpid,
                              "uid": uid if uid is not None else os.getuid()})
    os._exit(0)


def _memfd_with(text: str) -> int:
    fd = os.memfd_create("stdin", 0) if hasattr(os, "memfd_create") else os.open("/dev/null", os.O_RDONLY)
    data = text.encode("utf-8")
    while data:
        data = data[os.write(fd, data):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def run_one(req: dict, plan: dict) -> dict:
    """Fork a supervisor for ``req`` and collect the program's output with caps and a backstop deadline."""
    lim, layers = req["limits"], plan["layers"]
    uid = int(req["uid"]) if layers["distinct_uid"] else None
    fds: dict = {"stdin": _memfd_with(req.get("stdin") or ""), "workdir": "/tmp"}
    if not layers["mount_namespace"]:  # a host folder, removed below whatever happens to the program
        fds["workdir"] = tempfile.mkdtemp(prefix=f"{HOST_DIR_PREFIX}{SERVER_PID}_")
        if uid is not None:
            os.chown(fds["workdir"], uid, uid)
    for name in ("out", "err", "rep", "st"):
        fds[f"{name}_r"], fds[f"{name}_w"] = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            _supervise(req, plan, fds)
        except BaseException:  # noqa: BLE001 - a trusted-side failure, reported as such
            try:
                write_frame(fds["st_w"], {"internal": traceback.format_exc()[-2000:]})
            finally:
                os._exit(harness.EXIT_INTERNAL)
    for key in ("stdin", "out_w", "err_w", "rep_w", "st_w"):
        os.close(fds[key])
    try:
        answer = _collect(pid, fds, lim, start)
    finally:
        if not layers["pid_namespace"] and uid is not None:
            _kill_uid(uid)
        if not layers["mount_namespace"]:
            shutil.rmtree(fds["workdir"], ignore_errors=True)
    return answer


def _frames(buf: bytes) -> list[dict]:
    out = []
    while len(buf) >= 4:
        size = struct.unpack(">I", buf[:4])[0]
        if len(buf) < 4 + size:
            break
        try:
            out.append(json.loads(buf[4:4 + size]))
        except ValueError:
            break
        buf = buf[4 + size:]
    return out


def _collect(pid: int, fds: dict, lim: dict, start: float) -> dict:
    """Read the program's pipes with caps until EOF. At a cap, kill the program (its supervisor then
    reports as usual); past the backstop deadline, kill the supervisor too. Either way keep reading
    until every pipe is closed: only then is every process of the program gone."""
    caps = {fds["out_r"]: ("stdout", lim["max_output_bytes"]), fds["err_r"]: ("stderr", lim["max_output_bytes"]),
            fds["rep_r"]: ("report", REPORT_CAP_BYTES), fds["st_r"]: ("status", STATUS_CAP_BYTES)}
    bufs = {name: bytearray() for name, _ in caps.values()}
    deadline = start + lim["wall_s"] + GRACE_S
    over, backstop, killed = None, False, False
    open_fds = set(caps)
    while open_fds:
        now = time.monotonic()
        if now >= deadline and not backstop:
            backstop = True
            deadline = now + 5.0  # for the pipes to close once everything is killed
            _kill(pid, _frames(bytes(bufs["status"])))
        elif now >= deadline:
            break
        if over and not killed:  # (the program's pid may not have arrived yet: then next round)
            killed = _kill(None, _frames(bytes(bufs["status"])))
        ready, _, _ = select.select(list(open_fds), [], [], min(deadline - now, 0.25))
        if os.getppid() != GRADER_PID:  # the grader died: so do we, and the supervisor and program with us
            _kill(pid, _frames(bytes(bufs["status"])))
            os.waitpid(pid, 0)
            raise GraderGone
        for fd in ready:
            data = os.read(fd, 65536)
            if not data:
                open_fds.discard(fd)
                continue
            name, cap = caps[fd]
            room = cap - len(bufs[name])
            bufs[name] += data[:max(room, 0)]
            if len(data) > room and name != "status":
                over = over or name
    os.waitpid(pid, 0)
    for fd in caps:
        os.close(fd)
    frames = _frames(bytes(bufs["status"]))
    status = {k: v for f in frames for k, v in f.items()}
    if backstop:
        status["timeout"] = True
    return {"status": status, "over": over, "backstop": backstop, "wall": time.monotonic() - start,
            "stdout": bufs["stdout"].decode("utf-8", "replace"), "stderr": bufs["stderr"].decode("utf-8", "replace"),
            "report": bufs["report"].decode("utf-8", "replace")}


def _kill(supervisor: int | None, frames: list[dict]) -> bool:
    """SIGKILL the program (its pid comes in the supervisor's first frame) and, if given, the
    supervisor; whether the program's pid was known."""
    program = [f["wpid"] for f in frames if "wpid" in f][:1]
    for pid in program + ([supervisor] if supervisor else []):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return bool(program)


def main() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    plan = setup()
    write_frame(1, {"hello": True, **plan})
    while True:
        req = read_frame(0, GRADER_PID)
        if req is None or req.get("op") == "exit":
            break
        try:
            answer = run_one(req, plan)
        except GraderGone:
            break
        write_frame(1, answer)
    os._exit(0)


if __name__ == "__main__":
    main()
