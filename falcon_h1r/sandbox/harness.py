"""The part of the sandbox that shares a process with the graded program.

Runs after the kernel layers are in place (see :mod:`jail` and :mod:`runner`): it loads the code,
evaluates the tests' call expressions (``solve(3)`` of ``assert solve(3) == 9``) and writes their
results to the report pipe as plain, type-tagged data. It never sees an expected value and decides
nothing: the trusted grader (:mod:`falcon_h1r.sandbox.verdict`) compares outside. So whatever the
program does here (rewrite this module, walk its frames, forge lines on the pipe) it can only change
what it reports as its own outputs, which is what a program does anyway.

The audit hook (:func:`install_guard`) is not a boundary either (PEP 578 says so, and ``ctypes`` is
reachable from ``object.__subclasses__()``). It ends a run at the first obvious attempt to start a
process, open a network socket or load native code, so such runs fail fast with a clear reason;
containment is the kernel's job.

Standard library only: it is imported by the runner under ``python -S -I``.
"""

from __future__ import annotations

import os
import sys

EXIT_FORBIDDEN, EXIT_CPU, EXIT_ERROR, EXIT_SYNTAX, EXIT_INTERNAL = 113, 114, 115, 116, 117
REPORT_FD = 3
MAX_DEPTH = 64
MAX_NODES = 200_000

BLOCKED_MODULES = {
    "ctypes": "native", "_ctypes": "native", "cffi": "native", "_cffi_backend": "native",
    "_testcapi": "native", "_testinternalcapi": "native", "_testbuffer": "native",
    "_testmultiphase": "native", "_testimportmultiple": "native", "_testsinglephase": "native",
    "_xxsubinterpreters": "native", "_xxinterpchannels": "native", "_xxtestfuzz": "native",
    "_posixsubprocess": "process",
}


# ----------------------------------------------------------------------------- plain data out
def encode_value(value: object) -> object:
    """A JSON-able, type-tagged copy of ``value`` built from exact builtin types only.

    ``{"t": "int", "v": "-1f"}`` (hex, so no digit limit), ``float`` as ``repr``, ``str``, ``bytes``
    as hex, ``bool``, ``None``, and ``list``/``tuple``/``set``/``frozenset``/``dict`` of those.
    Anything else, subclasses included (an ``int`` subclass whose ``__eq__`` is always true), becomes
    ``{"t": "unsupported", "type": <name>}``, which never equals an expected value.
    """
    budget = [MAX_NODES]

    def enc(v: object, depth: int) -> object:
        budget[0] -= 1
        if budget[0] < 0 or depth > MAX_DEPTH:
            return {"t": "unsupported", "type": "too large or too deep"}
        t = type(v)
        if t is bool:
            return {"t": "bool", "v": v}
        if t is int:
            return {"t": "int", "v": format(v, "x")}
        if t is float:
            return {"t": "float", "v": float.__repr__(v)}
        if t is str:
            return {"t": "str", "v": v}
        if v is None:
            return {"t": "none"}
        if t is bytes:
            return {"t": "bytes", "v": bytes.hex(v)}
        if t is complex:
            return {"t": "complex", "v": [float.__repr__(v.real), float.__repr__(v.imag)]}
        if t in (list, tuple, set, frozenset):
            return {"t": t.__name__, "v": [enc(x, depth + 1) for x in t.__iter__(v)]}
        if t is dict:
            return {"t": "dict", "v": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in dict.items(v)]}
        name = getattr(t, "__name__", "?")
        return {"t": "unsupported", "type": name if type(name) is str else "?"}

    return enc(value, 0)


# ----------------------------------------------------------------------------- the guard
def preload_modules() -> None:
    """Import every built-in module (but the blocked ones) and ``subprocess`` once, in the server.

    Programs then find them in ``sys.modules``; :func:`harden` can remove the un-audited way to
    re-create a built-in module (``_imp.create_builtin``) without breaking any import.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sys.builtin_module_names:
            if name not in BLOCKED_MODULES and name not in sys.modules:
                try:
                    __import__(name)
                except ImportError:
                    pass
        import subprocess  # noqa: F401 - loads _posixsubprocess; starting a process stays audited


def harden() -> None:
    """In the program's process, before its code: no un-audited process start, no module re-creation."""
    import _imp

    spawner = sys.modules.get("_posixsubprocess")
    if spawner is not None:
        def fork_exec(*args, _audit=sys.audit):  # reached only by calling it directly
            _audit("sandbox.process", "_posixsubprocess.fork_exec")
            raise PermissionError("forbidden: process")
        spawner.fork_exec = fork_exec
    if hasattr(_imp, "create_builtin"):
        del _imp.create_builtin



def install_guard(report, exit_now) -> None:
    """Audit hook that ends the run on process, network or native-code events (see module docstring).

    Everything it uses is bound here as a closure cell or default, so monkeypatching modules or
    builtins does not change what it does (a test reads its bytecode for global lookups).
    """
    import types as _types

    _type, _str, _int, _len = type, str, int, len
    af_unix, forbidden_exit = 1, EXIT_FORBIDDEN
    net_prefixes = ("socket.", "urllib.", "http.", "ftplib.", "smtplib.", "poplib.", "imaplib.", "nntplib.",
                    "telnetlib.", "webbrowser.")
    process_events = frozenset({"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                                "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "os.startfile",
                                "pty.spawn", "resource.prlimit", "os.setsid", "sandbox.process"})
    native_events = frozenset({"cpython._PySys_ClearAuditHooks", "sandbox.native"})
    code_makers = (_types.coroutine.__code__,)  # asyncio builds this one code object; no other may
    getframe = sys._getframe
    blocked = dict(BLOCKED_MODULES)

    def on_import(args):
        name = args[0]
        names = name.split(".") if _type(name) is _str else []
        filename = args[1] if _len(args) > 1 else None
        if _type(filename) is _str:
            names = names + [filename.rsplit("/", 1)[-1].split(".", 1)[0]]
        for n in names:
            if n in blocked:
                return blocked[n]
        return None

    def hook(event, args):
        if event == "import":
            what = on_import(args)
        elif event in process_events:
            what = "process"
        elif event == "socket.__new__" and _len(args) > 1 and _type(args[1]) is _int and args[1] == af_unix:
            what = None
        elif event.startswith(net_prefixes):
            what = "network"
        elif event == "code.__new__":
            caller = getframe(1).f_code
            what = "native"
            for c in code_makers:
                if caller is c:
                    what = None
        elif event in native_events or event.startswith("ctypes."):
            what = "native"
        else:
            return
        if what is not None:
            first = args[0] if _len(args) else ""
            report("forbidden", what=what, detail=event + " " + (first if _type(first) is _str else ""))
            exit_now(forbidden_exit)

    sys.addaudithook(hook)


# ----------------------------------------------------------------------------- the program
def run(config: dict, guard: bool = True) -> None:
    """Run ``config["code"]`` as ``__main__``, then each call expression; never returns.

    ``config["mode"]`` is ``"calls"`` (evaluate ``config["calls"]`` after the code, one report line
    each) or ``"program"`` (stdin/stdout: just run it). Report lines are JSON objects on fd 3.
    """
    import builtins
    import json
    import types

    write, exit_now, dumps = os.write, os._exit, json.dumps
    _exec, _eval, _compile, _enumerate, _str, _type, _repr = exec, eval, compile, enumerate, str, type, repr
    _BaseException, _MemoryError, _SystemExit, _int = BaseException, MemoryError, SystemExit, int
    encode = encode_value

    def report(kind, **fields):
        try:
            data = (dumps({"e": kind, **fields}, ensure_ascii=True) + "\n").encode()
        except _BaseException:
            data = (b'{"e": "internal", "detail": "unencodable report"}\n')
        while data:
            try:
                data = data[write(REPORT_FD, data):]
            except InterruptedError:
                continue
            except OSError:
                return

    def describe(exc):
        try:
            return (_type(exc).__name__ + ": " + _str(exc))[:300]
        except _BaseException:
            return _type(exc).__name__

    def flush():
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except _BaseException:
                pass

    code, mode, calls = config["code"], config["mode"], list(config.get("calls") or [])
    path = os.path.join(os.getcwd(), "solution.py")
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(code)  # so tracebacks and open(__file__) see the source
    except OSError:
        pass
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [path]
    g = module.__dict__
    del config
    if guard:
        harden()
        install_guard(report, exit_now)
    try:
        compiled = _compile(code, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        report("syntax_error", detail=describe(exc))
        exit_now(EXIT_SYNTAX)
    program = mode == "program"
    try:
        _exec(compiled, g)
    except _SystemExit as exc:
        status = exc.code
        if program and (status is None or status == 0):
            flush(); report("done"); exit_now(0)
        report("error", type="SystemExit", message=("SystemExit(" + _repr(status) + ")")[:300])
        flush(); exit_now(status if program and _type(status) is _int and 0 < status < 256 else EXIT_ERROR)
    except _MemoryError:
        g.clear()
        report("error", type="MemoryError", message="MemoryError")
        exit_now(EXIT_ERROR)
    except _BaseException as exc:
        report("error", type=_type(exc).__name__, message=describe(exc),
               errno=getattr(exc, "errno", None) if isinstance(exc, OSError) else None)
        try:
            import traceback
            traceback.print_exception(exc)
        except _BaseException:
            pass
        flush(); exit_now(EXIT_ERROR)
    report("loaded")
    for i, src in _enumerate(calls):
        try:
            value = _eval(_compile(src, "<test " + _str(i) + ">", "eval", dont_inherit=True), g)
            report("result", i=i, v=encode(value))
        except _MemoryError:
            report("result", i=i, error="MemoryError")
        except _BaseException as exc:
            report("result", i=i, error=describe(exc))
        value = None
    flush()
    report("done")
    exit_now(0)
