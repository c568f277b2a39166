"""Run untrusted, model-written Python in a locked-down subprocess and return a typed verdict.

One process per call, in layers:

- **OS**: a new session (the wall-clock timeout kills the whole process group); where `unshare` works,
  new network, PID and mount namespaces (no network at all; ending the namespace's init kills every
  process left in it; `/proc` shows only the sandbox); as root, the program runs as ``nobody`` so the
  file system's own permissions and ``RLIMIT_NPROC`` apply; a scratch working directory deleted
  afterwards; a scrubbed environment; stdout/stderr capped.
- **Interpreter** (`child`, always): ``RLIMIT_CPU/AS/FSIZE/NPROC`` and an audit hook that ends
  the process on sockets, process creation, signals, ctypes and file access outside the scratch
  directory. Where no namespace is possible the hook is the network barrier; `Isolation` says which
  layers ran.

Tests are expressions evaluated after the candidate's code; their `repr` comes back and is compared
here with the expected value, which never enters the sandbox (a program cannot print its way to a
pass). Call `warm_up()` once before the first reward: it probes the isolation layers and pays the
first-start costs, so the first real call is not a false failure.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import enum
import json
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from cascadelab.sandbox import child as sandbox_child

_CHILD_SOURCE = Path(sandbox_child.__file__).read_text()
RUN_MARKER = "CASCADELAB_SANDBOX_RUN"
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class Status(enum.Enum):
    """Why a sandboxed run ended the way it did."""

    OK = "ok"
    WRONG = "wrong"
    TIMEOUT = "timeout"
    MEMORY = "memory"
    CRASH = "crash"
    FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed run."""

    wall_seconds: float = 2.0
    cpu_seconds: int = 2
    memory_bytes: int = 256 * 1024**2
    file_bytes: int = 1024**2
    processes: int = 8
    output_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("wall_seconds", "cpu_seconds", "memory_bytes", "file_bytes", "processes", "output_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"sandbox limits.{name}: must be > 0")


@dataclass(frozen=True)
class TestCase:
    """An expression evaluated after the candidate's code, and the value it must equal."""

    __test__ = False  # not a pytest class

    expression: str
    expected: Any


@dataclass(frozen=True)
class Isolation:
    """Which isolation layers a run used."""

    network: str  # "namespace" (plus the audit hook) or "audit_hook"
    pid_namespace: bool
    user: str  # the account the program ran as
    interpreter: str


@dataclass(frozen=True)
class Verdict:
    """The typed result of one sandboxed run."""

    status: Status
    reason: str
    passed: int = 0
    total: int = 0
    stdout: str = ""
    stderr: str = ""
    wall_seconds: float = 0.0
    run_id: str = ""
    isolation: Isolation | None = None

    @property
    def ok(self) -> bool:
        """True when every test passed."""
        return self.status is Status.OK


@dataclass
class _Output:
    """What came back from the process."""

    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    results: bytearray = field(default_factory=bytearray)
    overflow: str = ""
    timed_out: bool = False


def find_leftovers(run_id: str) -> list[int]:
    """Pids of live processes that carry `run_id` in their environment (should always be empty)."""
    found = []
    for process in psutil.process_iter(["pid"]):
        try:
            if process.environ().get(RUN_MARKER) == run_id and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process.pid)
        except (psutil.Error, OSError):
            continue
    return found


class Sandbox:
    """Runs candidate code against test expressions, one locked-down process per call."""

    def __init__(
        self,
        limits: Limits | None = None,
        scratch_root: str | Path | None = None,
        hook_blocks_network: bool = True,
        hook_only: bool = False,
    ) -> None:
        self.limits = limits or Limits()
        self.hook_only = hook_only  # skip namespaces and the user switch: the weakest mode, for tests
        self.hook_blocks_network = hook_blocks_network  # False only to test the namespace on its own
        self.scratch_root = Path(scratch_root or tempfile.gettempdir())
        self.counts: Counter[str] = Counter()
        self._prefix: list[str] | None = None
        self._isolation: Isolation | None = None
        self._uid: int | None = None

    @property
    def isolation(self) -> Isolation:
        """The layers `warm_up` found; raises before it ran."""
        if self._isolation is None:
            raise RuntimeError("sandbox: call warm_up() before the first run")
        return self._isolation

    def warm_up(self) -> Isolation:
        """Probe the strongest isolation this machine allows and run a first program through it."""
        if self._isolation is not None:
            return self._isolation
        candidates = self._candidates()
        limits = self.limits
        # Generous probe limits: a loaded machine must not push warm_up into a weaker mode.
        self.limits = dataclasses.replace(limits, wall_seconds=max(limits.wall_seconds, 20.0))
        try:
            for prefix, isolation, uid in candidates[-1:] if self.hook_only else candidates:
                self._prefix, self._isolation, self._uid = prefix, isolation, uid
                try:
                    verdict = self.run("x = 6 * 7", [TestCase("x", 42)])
                except OSError:
                    continue
                if verdict.ok:
                    self.counts.clear()
                    return isolation
        finally:
            self.limits = limits
        self._prefix = self._isolation = self._uid = None
        raise RuntimeError("sandbox: no isolation mode could run a trivial program")

    def _candidates(self) -> list[tuple[list[str], Isolation, int | None]]:
        """Isolation modes from strongest to weakest."""
        own = sys.executable
        unshare, setpriv = shutil.which("unshare"), shutil.which("setpriv")
        # The project's interpreter may sit where `nobody` cannot reach it (e.g. under /root): try system ones.
        system = [path for path in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(path)]
        interpreters = list(dict.fromkeys([own, os.path.realpath(own), *system]))
        wrap = ["/bin/sh", "-c", '"$@"; exit $?', "sandbox"]  # the program is not PID 1: its own signals work
        namespaces = ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
        modes: list[tuple[list[str], Isolation, int | None]] = []
        if unshare and os.geteuid() == 0 and setpriv:
            nobody = pwd.getpwnam("nobody")
            drop = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
            for python in interpreters:
                isolation = Isolation("namespace", True, "nobody", python)
                modes.append(([unshare, *namespaces, *drop, *wrap, python], isolation, nobody.pw_uid))
        user = pwd.getpwuid(os.geteuid()).pw_name
        if unshare:
            userns = [] if os.geteuid() == 0 else ["--map-root-user"]
            modes.append(([unshare, *userns, *namespaces, *wrap, own], Isolation("namespace", True, user, own), None))
        modes.append(([own], Isolation("audit_hook", False, user, own), None))
        return modes

    def run(self, code: str, tests: Sequence[TestCase] = ()) -> Verdict:
        """Run `code`, then evaluate each test expression; the verdict names the outcome."""
        if self._prefix is None:
            raise RuntimeError("sandbox: call warm_up() before the first run")
        run_id = uuid.uuid4().hex
        scratch = Path(tempfile.mkdtemp(prefix="sandbox-", dir=self.scratch_root))
        started = time.monotonic()
        try:
            if self._uid is not None:
                os.chown(scratch, self._uid, -1)
            output, returncode = self._execute(code, tests, scratch, run_id)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        verdict = self._judge(output, returncode, tests)
        verdict = Verdict(
            verdict.status,
            verdict.reason,
            verdict.passed,
            len(tests),
            output.stdout[: self.limits.output_bytes].decode(errors="replace"),
            output.stderr[: self.limits.output_bytes].decode(errors="replace"),
            time.monotonic() - started,
            run_id,
            self._isolation,
        )
        self.counts[verdict.status.value] += 1
        return verdict

    def _payload(self, code: str, tests: Sequence[TestCase], scratch: Path, result_fd: int) -> bytes:
        limits = self.limits
        processes = limits.processes
        if self._uid is None and os.geteuid() != 0:  # RLIMIT_NPROC counts every process of the user
            processes += sum(1 for p in psutil.process_iter(["uids"]) if p.info["uids"].real == os.getuid())
        payload = {
            "code": code,
            "tests": [test.expression for test in tests],
            "scratch": str(scratch),
            "result_fd": result_fd,
            "block_network": self.hook_blocks_network,
            "read_roots": sorted(
                {
                    sys.base_prefix,
                    sys.prefix,
                    sys.exec_prefix,
                    sys.base_exec_prefix,
                    "/usr/lib",
                    "/usr/local/lib",
                    "/dev/null",
                    "/dev/urandom",
                }
            ),
            "limits": {
                "cpu_seconds": limits.cpu_seconds,
                "memory_bytes": limits.memory_bytes,
                "file_bytes": limits.file_bytes,
                "processes": processes,
            },
        }
        return json.dumps(payload).encode()

    def _execute(self, code: str, tests: Sequence[TestCase], scratch: Path, run_id: str) -> tuple[_Output, int]:
        assert self._prefix is not None
        read_end, write_end = os.pipe()
        env = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "HOME": str(scratch), "TMPDIR": str(scratch), RUN_MARKER: run_id}
        command = [*self._prefix, "-I", "-S", "-c", _CHILD_SOURCE]
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=scratch,
                env=env,
                pass_fds=(write_end,),
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(write_end)
        output = _Output()
        try:
            assert process.stdin is not None
            try:
                process.stdin.write(self._payload(code, tests, scratch, write_end))
                process.stdin.close()
            except BrokenPipeError:
                pass
            self._collect(process, read_end, output)
        finally:
            try:  # descendants, while they are still linked to the leader (a setsid() one leaves the group)
                descendants = psutil.Process(process.pid).children(recursive=True)
            except psutil.Error:
                descendants = []
            _kill_group(process.pid)
            for descendant in descendants:
                with contextlib.suppress(psutil.Error):
                    descendant.kill()
            returncode = process.wait()
            psutil.wait_procs(descendants, timeout=2.0)  # SIGKILL is asynchronous: return once they are gone
            if self._isolation is not None and not self._isolation.pid_namespace:
                self._sweep(run_id)
            for stream in (process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
            os.close(read_end)
        return output, returncode

    def _sweep(self, run_id: str) -> None:
        """Without a PID namespace, kill anything still carrying this run's marker (there should be none)."""
        for pid in find_leftovers(run_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            self.counts["swept"] += 1

    def _collect(self, process: subprocess.Popen[bytes], result_fd: int, output: _Output) -> None:
        """Read the three channels until the process exits, the deadline passes or output overflows."""
        assert process.stdout is not None and process.stderr is not None
        deadline = time.monotonic() + self.limits.wall_seconds
        stdout, stderr = process.stdout.fileno(), process.stderr.fileno()
        buffers = {stdout: output.stdout, stderr: output.stderr, result_fd: output.results}
        caps = {stdout: self.limits.output_bytes, stderr: self.limits.output_bytes, result_fd: 1024**2}
        with selectors.DefaultSelector() as selector:
            for fd in buffers:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    output.timed_out = True
                    return
                for key, _ in selector.select(min(remaining, 0.05)):
                    fd = key.fd
                    chunk = _read(fd)
                    if chunk is None:
                        continue
                    if not chunk:
                        selector.unregister(fd)
                        continue
                    buffers[fd].extend(chunk)
                    if len(buffers[fd]) > caps[fd]:
                        output.overflow = "stdout" if fd == stdout else ("stderr" if fd == stderr else "result channel")
                        return
                if _exited(process.pid):
                    for fd in buffers:  # what is left in the pipes (bounded by the caps)
                        while chunk := _read(fd):
                            buffers[fd].extend(chunk)
                            if len(buffers[fd]) > caps[fd]:
                                break
                    return
        # Every pipe closed (the program may have closed its own ends): wait for the exit or the deadline.
        while not _exited(process.pid):
            if time.monotonic() >= deadline:
                output.timed_out = True
                return
            time.sleep(0.01)

    def _judge(self, output: _Output, returncode: int, tests: Sequence[TestCase]) -> Verdict:
        """Turn what came back into a verdict."""
        if output.timed_out:
            return Verdict(Status.TIMEOUT, f"wall-clock limit of {self.limits.wall_seconds:g} s")
        if output.overflow:
            return Verdict(Status.CRASH, f"{output.overflow} exceeded {self.limits.output_bytes} bytes")
        records = _records(output.results)
        for record in records:
            if "forbidden" in record:
                return Verdict(Status.FORBIDDEN, str(record.get("detail", record["forbidden"])))
            if "memory" in record:
                return Verdict(
                    Status.MEMORY, f"MemoryError during the {record['memory']} (limit {self.limits.memory_bytes} bytes)"
                )
            if "error" in record and "test" not in record:
                return Verdict(Status.CRASH, f"{record['error']} (during the {record.get('stage', 'code')})")
        signal_number = -returncode if returncode < 0 else (returncode - 128 if returncode > 128 else 0)
        if signal_number in (signal.SIGXCPU, signal.SIGKILL) and not any("done" in r for r in records):
            name = signal.Signals(signal_number).name
            return Verdict(Status.TIMEOUT, f"CPU limit of {self.limits.cpu_seconds} s ({name})")
        if signal_number:
            try:
                name = signal.Signals(signal_number).name
            except ValueError:
                name = f"signal {signal_number}"
            if b"MemoryError" in output.stderr:
                return Verdict(Status.MEMORY, f"out of memory ({name})")
            return Verdict(Status.CRASH, f"killed by {name}")
        if not any(r.get("done") for r in records) or returncode != 0:
            return Verdict(Status.CRASH, f"exited with status {returncode} before the tests finished")
        return _score(records, tests)


def _score(records: list[dict[str, Any]], tests: Sequence[TestCase]) -> Verdict:
    """Compare each test's returned repr with its expected value."""
    results = {int(r["test"]): r for r in records if "test" in r}
    passed, first_failure = 0, ""
    for index, test in enumerate(tests):
        result = results.get(index)
        if result is not None and "repr" in result and _matches(str(result["repr"]), test.expected):
            passed += 1
        elif not first_failure:
            got = "no result" if result is None else result.get("error") or result.get("repr")
            first_failure = f"test {index} `{test.expression}`: expected {test.expected!r}, got {got}"
    if passed == len(tests):
        return Verdict(Status.OK, f"{passed}/{len(tests)} tests passed", passed)
    return Verdict(Status.WRONG, first_failure, passed)


def _matches(returned: str, expected: Any) -> bool:
    """True when the returned repr denotes the expected value (a literal) or equals its repr."""
    try:
        return bool(ast.literal_eval(returned) == expected)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return returned == repr(expected)


def _records(raw: bytearray) -> list[dict[str, Any]]:
    """The JSON lines of the result channel; garbage lines are skipped."""
    records = []
    for line in bytes(raw).splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _read(fd: int) -> bytes | None:
    """Up to 64 KiB; b"" at end of file, None when nothing is ready."""
    try:
        return os.read(fd, 65536)
    except (BlockingIOError, InterruptedError):
        return None


def _exited(pid: int) -> bool:
    """True once the process has exited (it stays a zombie, so its group id is not reused yet)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(pgid: int) -> None:
    """SIGKILL every process of the sandbox's group (the leader is not reaped yet)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
