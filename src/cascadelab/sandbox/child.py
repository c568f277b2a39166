"""Trusted bootstrap that runs inside the sandbox process before the untrusted code (stdlib only).

`runner` sends this file's source with ``python -I -S -c`` and a JSON payload on stdin. The
bootstrap sets its own resource limits, installs an audit hook that ends the process on a forbidden
action (sockets, process creation, signals to other processes, ctypes, files outside the scratch
directory, ...), runs the candidate code, then evaluates each test expression and sends its `repr`
back on a private pipe as JSON lines. Expected values never enter this process, so a program cannot
print or write its way to a pass: the parent compares.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import resource
import sys
import threading
from typing import Any

FORBIDDEN_EXIT = 86
MEMORY_EXIT = 87

# Network events and modules, refused unless the parent turned the hook's network barrier off (tests
# do, to prove the network namespace alone blocks).
NETWORK_EVENTS = frozenset(
    {
        "socket.__new__",
        "socket.bind",
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.gethostbyaddr",
        "socket.getnameinfo",
        "socket.sendto",
        "socket.sendmsg",
        "socket.sethostname",
        "http.client.connect",
        "urllib.Request",
        "ftplib.connect",
        "smtplib.connect",
        "webbrowser.open",
    }
)
NETWORK_MODULES = frozenset({"_socket", "socket"})
# Events refused outright: new processes, signals, native code, interpreter internals.
FORBIDDEN_EVENTS = frozenset(
    {
        "subprocess.Popen",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "os.kill",
        "os.killpg",
        "signal.pthread_kill",
        "os.symlink",
        "os.link",
        "os.chroot",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.cdata",
        "ctypes.cdata/buffer",
        "ctypes.addressof",
        "ctypes.call_function",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "ctypes.create_string_buffer",
        "ctypes.create_unicode_buffer",
        "ctypes.PyObj_FromPtr",
        "resource.setrlimit",
        "resource.prlimit",
        "mmap.__new__",
        "code.__new__",
        "function.__new__",
        "gc.get_objects",
        "gc.get_referrers",
        "gc.get_referents",
        "sys._current_frames",
        "shutil.make_archive",
        "shutil.unpack_archive",
        "os.add_dll_directory",
        "sys.remote_exec",
    }
)
FORBIDDEN_MODULES = frozenset({"ctypes", "_ctypes", "_posixsubprocess", "subprocess", "mmap"})
# Events that modify the file system: how many leading arguments are paths that must stay in scratch.
WRITE_EVENTS = {
    "os.remove": 1,
    "os.rmdir": 1,
    "os.mkdir": 1,
    "os.chmod": 1,
    "os.chown": 1,
    "os.truncate": 1,
    "os.utime": 1,
    "os.setxattr": 1,
    "os.removexattr": 1,
    "os.chflags": 1,
    "os.lchflags": 1,
    "os.rename": 2,
    "shutil.copyfile": 2,
    "shutil.copymode": 2,
    "shutil.copystat": 2,
    "shutil.copytree": 2,
    "shutil.rmtree": 1,
    "shutil.move": 2,
    "shutil.chown": 1,
}
READ_EVENTS = {"os.listdir": 1, "os.scandir": 1, "glob.glob": 1, "os.chdir": 1, "os.getxattr": 1, "os.listxattr": 1}
_TRUSTED_PATHS = (pathlib.PosixPath, pathlib.PurePosixPath)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


class Policy:
    """Decides whether an audit event is allowed; paths are resolved against the scratch directory."""

    def __init__(self, scratch: str, read_roots: list[str], result_fd: int, block_network: bool = True) -> None:
        self.events = FORBIDDEN_EVENTS | NETWORK_EVENTS if block_network else FORBIDDEN_EVENTS
        self.modules = FORBIDDEN_MODULES | NETWORK_MODULES if block_network else FORBIDDEN_MODULES
        self.scratch = os.path.realpath(scratch)
        self.read_roots = [os.path.realpath(root) for root in read_roots] + [self.scratch]
        self.result_fd = result_fd
        self._busy = threading.local()

    def _resolve(self, event: str, path: Any) -> str | None:
        # Only exact built-in types: a user subclass or __fspath__ would run untrusted code inside the hook.
        if path is None or type(path) is int:
            return None
        if type(path) in _TRUSTED_PATHS:
            path = str(path)
        if type(path) not in (str, bytes):
            self.deny(event, f"{event} with a path of type {type(path).__name__}")
        return os.path.realpath(os.path.join(self.scratch, os.fsdecode(path)))

    @staticmethod
    def _inside(path: str, root: str) -> bool:
        return path == root or path.startswith(root.rstrip("/") + "/")

    def _check_write(self, event: str, path: Any) -> None:
        resolved = self._resolve(event, path)
        if resolved is None:
            if isinstance(path, int) and event == "open":
                return
            self.deny(event, f"{event} on a file descriptor or None")
        elif not self._inside(resolved, self.scratch):
            self.deny(event, f"{event} outside the scratch directory: {resolved}")

    def _check_read(self, event: str, path: Any) -> None:
        resolved = self._resolve(event, path if path is not None else ".")
        if resolved is None:
            return
        if not any(self._inside(resolved, root) for root in self.read_roots):
            self.deny(event, f"{event} outside the allowed roots: {resolved}")

    def deny(self, event: str, detail: str) -> None:
        """Report the forbidden action on the result pipe and end the process (it cannot be caught)."""
        try:
            os.write(self.result_fd, (json.dumps({"forbidden": event, "detail": detail[:300]}) + "\n").encode())
        finally:
            os._exit(FORBIDDEN_EXIT)

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        """The audit hook."""
        if getattr(self._busy, "active", False):
            return
        self._busy.active = True
        try:
            self._decide(event, args)
        finally:
            self._busy.active = False

    def _decide(self, event: str, args: tuple[Any, ...]) -> None:
        if event in self.events:
            self.deny(event, f"{event} is not allowed in the sandbox")
        elif event == "import":
            name = str(args[0]).split(".")[0]
            if name in self.modules:
                self.deny(event, f"import of {args[0]} is not allowed in the sandbox")
        elif event == "open":
            path, mode, flags = args
            if mode is not None and type(mode) is not str:
                self.deny(event, f"open with a mode of type {type(mode).__name__}")
            writes = any(c in mode for c in "wax+") if mode is not None else bool(int(flags) & _WRITE_FLAGS)
            if writes:
                self._check_write(event, path)
            else:
                self._check_read(event, path)
        elif event in WRITE_EVENTS:
            for path in args[: WRITE_EVENTS[event]]:
                self._check_write(event, path)
        elif event in READ_EVENTS:
            self._check_read(event, args[0] if args else None)


def set_limits(limits: dict[str, int]) -> None:
    """Apply the resource limits (soft = hard, except CPU which gets one second of SIGXCPU grace)."""
    cpu = limits["cpu_seconds"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.get("processes", 0) > 0:
        resource.setrlimit(resource.RLIMIT_NPROC, (limits["processes"],) * 2)


def send(fd: int, record: dict[str, Any]) -> None:
    """One JSON line on the result pipe."""
    os.write(fd, (json.dumps(record) + "\n").encode())


def main() -> None:
    """Read the payload, lock the process down, run the candidate and its tests."""
    payload = json.loads(sys.stdin.read())
    sys.stdin.close()
    fd = int(payload["result_fd"])
    set_limits(payload["limits"])
    policy = Policy(payload["scratch"], payload["read_roots"], fd, bool(payload.get("block_network", True)))
    sys.addaudithook(policy.hook)
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    stage = "code"
    try:
        exec(compile(payload["code"], "<candidate>", "exec"), namespace)
        stage = "tests"
        for index, expression in enumerate(payload["tests"]):
            try:
                value = eval(compile(expression, f"<test {index}>", "eval"), namespace)
                send(fd, {"test": index, "repr": repr(value)[:2000]})
            except MemoryError:
                raise
            except Exception as error:
                send(fd, {"test": index, "error": f"{type(error).__name__}: {error}"[:300]})
    except MemoryError:
        send(fd, {"memory": stage})
        os._exit(MEMORY_EXIT)
    except BaseException as error:
        send(fd, {"error": f"{type(error).__name__}: {error}"[:300], "stage": stage})
        _flush()
        os._exit(1)
    send(fd, {"done": True})
    _flush()
    os._exit(0)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


if __name__ == "__main__":
    main()
