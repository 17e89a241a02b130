"""Run Python under the seccomp rule systemd installs for ``MemoryDenyWriteExecute=yes``.

    python tests/deploy/mdwe.py -c CODE | -m MODULE [ARGS...]

The rule (systemd 252, seccomp_memory_deny_write_execute) refuses with EPERM:
mmap() asking for memory both writable and executable, mprotect() and pkey_mprotect()
adding PROT_EXEC, and shmat() with SHM_EXEC. Whatever then runs (CPython, ctypes
callbacks through libffi, libmagic, cryptography, aiohttp) must do without such memory,
as it will have to under the unit. x86-64 Linux only: elsewhere it exits with 77.
"""

from __future__ import annotations

import ctypes
import os
import platform
import runpy
import struct
import sys

AUDIT_ARCH_X86_64 = 0xC000003E
NR_MMAP, NR_MPROTECT, NR_SHMAT, NR_PKEY_MPROTECT = 9, 10, 30, 329
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050000 | 1
LD_ABS_W, JEQ_K, AND_K, RET_K = 0x20, 0x15, 0x54, 0x06
ARG2 = 16 + 2 * 8  # offsetof(struct seccomp_data, args[2]), low 32 bits (little endian)
SKIPPED = 77


def _program() -> list[tuple[int, int, int, int]]:
    # Offsets of the jumps are counted from the next instruction.
    return [
        (LD_ABS_W, 0, 0, 4),                           # 0  A = arch
        (JEQ_K, 0, 15, AUDIT_ARCH_X86_64),             # 1  other ABI: allow (17)
        (LD_ABS_W, 0, 0, 0),                           # 2  A = syscall number
        (JEQ_K, 4, 0, NR_MMAP),                        # 3  → 8
        (JEQ_K, 6, 0, NR_MPROTECT),                    # 4  → 11
        (JEQ_K, 5, 0, NR_PKEY_MPROTECT),               # 5  → 11
        (JEQ_K, 7, 0, NR_SHMAT),                       # 6  → 14
        (RET_K, 0, 0, RET_ALLOW),                      # 7
        (LD_ABS_W, 0, 0, ARG2),                        # 8  mmap: prot
        (AND_K, 0, 0, PROT_WRITE | PROT_EXEC),         # 9
        (JEQ_K, 6, 7, PROT_WRITE | PROT_EXEC),         # 10 both → deny (17+…) / allow
        (LD_ABS_W, 0, 0, ARG2),                        # 11 mprotect: prot
        (AND_K, 0, 0, PROT_EXEC),                      # 12
        (JEQ_K, 3, 4, PROT_EXEC),                      # 13 → deny (17) / allow (18)
        (LD_ABS_W, 0, 0, ARG2),                        # 14 shmat: shmflg
        (AND_K, 0, 0, SHM_EXEC),                       # 15
        (JEQ_K, 0, 1, SHM_EXEC),                       # 16 → deny (17) / allow (18)
        (RET_K, 0, 0, RET_EPERM),                      # 17
        (RET_K, 0, 0, RET_ALLOW),                      # 18
    ]


def install() -> None:
    program = _program()
    # Jump targets, checked: every jump lands inside the program.
    for index, (code, jt, jf, _) in enumerate(program):
        if code == JEQ_K:
            assert index + 1 + max(jt, jf) < len(program)
    raw = b"".join(struct.pack("=HBBI", *insn) for insn in program)
    buffer = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program), ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p,
                           ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, None, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def main() -> None:
    if sys.platform != "linux" or platform.machine() != "x86_64":
        print("mdwe: only on x86-64 Linux", file=sys.stderr)
        sys.exit(SKIPPED)
    install()
    if len(sys.argv) >= 3 and sys.argv[1] == "-c":
        code, sys.argv = sys.argv[2], ["-c", *sys.argv[3:]]
        exec(compile(code, "<mdwe>", "exec"), {"__name__": "__main__"})  # noqa: S102
    elif len(sys.argv) >= 3 and sys.argv[1] == "-m":
        module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
