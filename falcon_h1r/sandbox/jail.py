"""Kernel isolation layers for the sandbox: namespaces, a read-only root, seccomp, process settings.

Standard library plus ``ctypes`` only: this module is imported by the in-sandbox runner, which runs
under ``python -S -I`` without site-packages. Why hand-written: there is no container engine,
bubblewrap or nsjail on the machines this package targets, and no Python binding for these system
calls in the venv; the calls used here (unshare, mount, pivot_root, prctl) are the ones those tools
make, in the same order.

Nothing here decides a verdict. Every function either succeeds or raises ``OSError`` naming the
call, so the runner can record which layer is unavailable instead of failing silently.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP = 0x10000000, 0x20000000, 0x40000000, 0x02000000
NAMESPACE_FLAGS = {"mount": CLONE_NEWNS, "pid": CLONE_NEWPID, "network": CLONE_NEWNET, "ipc": CLONE_NEWIPC,
                   "uts": CLONE_NEWUTS}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 32, 4096, 8192, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_SECCOMP, PR_SET_NO_NEW_PRIVS = 1, 4, 22, 38
SECCOMP_MODE_FILTER = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {fstype or source} on {target}")


def umount(target: str) -> None:
    _check(_libc.umount2(_b(target), MNT_DETACH), f"umount {target}")


def prctl(option: int, arg: int = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(option, arg, arg3, 0, 0), f"prctl({option})")


def die_with_parent(signum: int, parent: int) -> None:
    """Be killed with ``signum`` when the parent exits; exit now if it already has (fork race)."""
    prctl(PR_SET_PDEATHSIG, signum)
    if os.getppid() != parent:
        os._exit(1)


# ----------------------------------------------------------------------------- the read-only root
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}


def _pivot_root(new_root: str, put_old: str) -> None:
    nr = _PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise OSError(38, f"pivot_root: no system call number for {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root")


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def _bind_readonly(source: str, target: str) -> None:
    if os.path.isdir(source):
        _mkdirs(target)
    else:
        _mkdirs(os.path.dirname(target))
        with open(target, "w"):
            pass
    mount(source, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _bind_device(source: str, target: str) -> None:
    with open(target, "w"):
        pass
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC)


def _copy_symlink(path: str, root: str) -> None:
    target = root + path
    _mkdirs(os.path.dirname(target))
    os.symlink(os.readlink(path), target)


def build_root(mountpoint: str, readonly_paths: list[str], devices: list[str]) -> None:
    """Make ``mountpoint`` the root of this (already private) mount namespace.

    The new root is an empty tmpfs holding read-only bind mounts of ``readonly_paths`` (system
    libraries and the interpreter's prefix, at their own paths; top-level symlinks such as
    ``/lib -> usr/lib`` are copied as symlinks), the listed character devices, and empty ``/tmp`` and
    ``/proc`` mount points for each program's private mounts. The host's root is detached afterwards:
    nothing else of the host is reachable by any path.
    """
    mount("/", "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
    mount("tmpfs", mountpoint, "tmpfs", MS_NOSUID, "size=1m,nr_inodes=4096,mode=0755")
    for path in readonly_paths:
        if os.path.islink(path) and os.path.dirname(path) == "/":
            _copy_symlink(path, mountpoint)
        elif os.path.exists(path):
            _bind_readonly(os.path.realpath(path), mountpoint + path)
    for d in ("tmp", "proc", "dev", "dev/shm", ".old"):
        _mkdirs(os.path.join(mountpoint, d))
    for dev in devices:
        _bind_device(dev, mountpoint + dev)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(mountpoint, "dev", name))
    os.chdir(mountpoint)
    _pivot_root(".", ".old")
    os.chdir("/")
    umount("/.old")
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def mount_private_tmp(size_bytes: int, inodes: int, uid: int, gid: int) -> None:
    """A fresh tmpfs on /tmp, owned by the program's user: its only writable place, bounded in size."""
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={max(size_bytes, 65536)},nr_inodes={inodes},mode=0700,uid={uid},gid={gid}")


def mount_private_proc() -> str:
    """A /proc of the current pid namespace, hiding other users' processes; returns the options used."""
    for options in ("hidepid=invisible,subset=pid", "hidepid=2", ""):
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, options or None)
            return options
        except OSError:
            continue
    raise OSError(1, "mount proc: refused with every option set")


# ----------------------------------------------------------------------------- seccomp
AUDIT_ARCH_X86_64 = 0xC000003E
_X86_64_DENIED = {  # name -> number; calls a graded program never needs and that widen the kernel surface
    "ptrace": 101, "syslog": 103, "vhangup": 153, "pivot_root": 155, "adjtimex": 159, "chroot": 161,
    "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "clock_settime": 227, "kexec_load": 246,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
    "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442,
}
_X86_64_SOCKET, _X86_64_CLONE, _X86_64_CLONE3 = 41, 56, 435
_EPERM, _ENOSYS, _EAFNOSUPPORT = 1, 38, 97
_LD_ABS_W, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16


def seccomp_filter() -> bytes:
    """The classic-BPF program: deny the calls above with EPERM, sockets other than AF_UNIX, clone
    with namespace flags, and clone3 (ENOSYS, so libc falls back to clone, whose flags we can see)."""
    if platform.machine() != "x86_64":
        raise OSError(38, f"seccomp: no system call table for {platform.machine()} (x86_64 only)")
    ins: list[tuple[int, int, int, int]] = [
        (_LD_ABS_W, 0, 0, _OFF_ARCH),
        (_JEQ, 1, 0, AUDIT_ARCH_X86_64),
        (_RET, 0, 0, _RET_KILL_PROCESS),
        (_LD_ABS_W, 0, 0, _OFF_NR),
        (_JGE, 0, 1, 0x40000000),  # the x32 ABI: another table, refused as a whole
        (_RET, 0, 0, _RET_ERRNO | _EPERM),
        (_JEQ, 0, 1, _X86_64_CLONE3),
        (_RET, 0, 0, _RET_ERRNO | _ENOSYS),
    ]
    for nr in sorted(_X86_64_DENIED.values()):
        ins += [(_JEQ, 0, 1, nr), (_RET, 0, 0, _RET_ERRNO | _EPERM)]
    ns_flags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP
    ins += [
        (_JEQ, 0, 3, _X86_64_SOCKET),
        (_LD_ABS_W, 0, 0, _OFF_ARG0),
        (_JEQ, 1, 0, 1),  # AF_UNIX: socketpair-style local pipes (asyncio) stay possible
        (_RET, 0, 0, _RET_ERRNO | _EAFNOSUPPORT),
        (_LD_ABS_W, 0, 0, _OFF_NR),
        (_JEQ, 0, 3, _X86_64_CLONE),
        (_LD_ABS_W, 0, 0, _OFF_ARG0),
        (_JSET, 0, 1, ns_flags),
        (_RET, 0, 0, _RET_ERRNO | _EPERM),
        (_RET, 0, 0, _RET_ALLOW),
    ]
    return b"".join(struct.pack("HBBI", *i) for i in ins)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_seccomp() -> int:
    """no_new_privs, then the filter (for this process and everything it starts); returns its length."""
    program = seccomp_filter()
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))
    return len(program) // 8
