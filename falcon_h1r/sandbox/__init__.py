"""Run untrusted, model-generated Python and grade it (paper §3.2 code reward).

The paper graded code in SandboxFusion (Docker containers behind HTTP). There is no container engine
here, so this package builds the same kind of jail from Linux namespaces, read-only bind mounts,
seccomp and resource limits (:mod:`.jail`, driven by :mod:`.runner`), and keeps the verdict out of
the jail altogether (:mod:`.verdict`). The code reward is binary: 1.0 only if every test passes.

Per program, layer by layer (:func:`isolation_report` says which are active and why any is not; a
missing layer gives one RuntimeWarning, never silence):

1. **Its own processes.** A trusted server process forks, per program, a supervisor in new mount,
   pid, network, IPC and UTS namespaces, which forks the program as pid 1 of its pid namespace: it
   sees only its own processes in a private ``/proc``, and when it ends the kernel kills all it started.
2. **A read-only world with one private scratch folder.** The root is a tmpfs holding read-only
   binds of ``/usr`` and the interpreter's prefix, a few device nodes and nothing else of the host
   (no home, no ``/tmp``, no project files); ``/tmp`` is a fresh size- and file-capped tmpfs, the
   only writable place, gone with the program. Every file route (paths, ``dir_fd``, ``/proc/*/root``,
   symlinks) is resolved by the kernel inside that root, so no route leads out.
3. **Its own identity.** Each program runs as a uid of its own (no groups, no capabilities,
   no_new_privs), so concurrent programs cannot signal, trace or read each other even if they met,
   and ``RLIMIT_NPROC`` counts its processes alone.
4. **A narrower kernel.** A seccomp filter refuses ptrace, process_vm_*, mount, unshare/setns and
   namespace clones, bpf, perf, keyrings, io_uring, kernel modules, and sockets other than AF_UNIX.
   rlimits cap CPU, address space, processes, file size, open files and core dumps.
5. **Bounded in time, tied to the grader.** The supervisor enforces the wall limit inside the jail;
   the server, supervisor and program each die with their parent (the server watches the grader),
   so a killed grader leaves no program and, with a mount namespace, no folder behind. Without one,
   work folders are host folders named after their server; those of dead servers are swept.
6. **The verdict outside.** ``assert solve(3) == 9`` is split in the grader: the program evaluates
   ``solve(3)`` and returns the value as type-tagged plain data; the grader compares it with ``9``,
   type-strict. The expected values never enter the jail, so nothing the program does (walk frames,
   shadow builtins, return always-equal objects, forge report lines) can pass a test on its behalf.
   stdin/stdout tests are compared the same way, after whitespace normalisation.
7. **A guard for clear reasons.** An audit hook ends a run at the first attempt to start a process,
   open a network socket or load native code (``forbidden: process|network|native``). It is not a
   boundary (layers 1-5 are); it makes such runs fail fast and say why.

What it does NOT protect against: kernel bugs and hardware side channels; resource contention (a
busy program slows the host); a program that prints the right answers without computing them (use
held-out tests). The environment is built from scratch, so no secret of the grader's is visible.

Where the kernel refuses a layer (no root, no namespaces, another architecture for seccomp), the
program still runs with the layers left, the report lists the missing ones with the reason, and
the attack suite (:func:`run_attack_suite`) shows what that costs.
"""

from falcon_h1r.sandbox.api import (
    SandboxLimits,
    SandboxResult,
    grade_programs,
    run_python,
    run_python_tests,
    sample_tests,
    syntax_ok,
)
from falcon_h1r.sandbox.attacks import (
    ATTACK_CLASSES,
    ATTACK_EXPECTED,
    ATTACK_SUITE_LIMITS,
    ATTACKS,
    NOBODY_GID,
    NOBODY_UID,
    attack_tests,
    fill_attack,
    listener_was_contacted,
    run_attack_suite,
    summarize,
)
from falcon_h1r.sandbox.pool import (
    SandboxUnavailable,
    isolation_report,
    open_fd_count,
    sandbox_processes,
)
from falcon_h1r.sandbox.verdict import CallTest, StdioCase, parse_test

__all__ = [
    "ATTACKS", "ATTACK_CLASSES", "ATTACK_EXPECTED", "ATTACK_SUITE_LIMITS", "NOBODY_GID", "NOBODY_UID", "CallTest",
    "SandboxLimits", "SandboxResult", "SandboxUnavailable", "StdioCase", "attack_tests", "fill_attack",
    "grade_programs", "isolation_report", "listener_was_contacted", "open_fd_count", "parse_test",
    "run_attack_suite", "run_python", "run_python_tests", "sample_tests", "sandbox_processes", "summarize",
    "syntax_ok",
]
