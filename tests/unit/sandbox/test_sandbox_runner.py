"""The code sandbox: plain verdicts, and a battery of hostile programs that must not escape."""

from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cascadelab.sandbox import Limits, Sandbox, Status, TestCase, find_leftovers

HOSTILE_LIMITS = Limits(
    wall_seconds=1.5,
    cpu_seconds=1,
    memory_bytes=256 * 1024**2,
    file_bytes=256 * 1024,
    processes=8,
    output_bytes=16 * 1024,
)
DOUBLE = [TestCase("f(3)", 6), TestCase("f(-2)", -4)]
T, M, C, F, W, OK = Status.TIMEOUT, Status.MEMORY, Status.CRASH, Status.FORBIDDEN, Status.WRONG, Status.OK


@pytest.fixture(scope="module")
def scratch_root() -> Iterator[Path]:
    # Under /tmp (not pytest's 0700 tmp_path) so the sandbox's unprivileged user can reach its scratch.
    root = Path(tempfile.mkdtemp(prefix="cascadelab-sandbox-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module", params=["strongest", "hook_only"])
def sandbox(request: pytest.FixtureRequest, scratch_root: Path) -> Sandbox:
    # "strongest": what warm_up finds here (namespaces, nobody); "hook_only": the fallback without them.
    box = Sandbox(HOSTILE_LIMITS, scratch_root=scratch_root, hook_only=request.param == "hook_only")
    box.warm_up()
    return box


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "sentinel.txt").write_text("do not touch\n")
    (folder / "keep").mkdir()
    (folder / "keep" / "inner.txt").write_text("inner\n")
    return folder


def _snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    """Every path under `folder` with its mode and content hash."""
    state = {}
    for path in sorted(folder.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        state[str(path.relative_to(folder))] = (path.stat().st_mode, digest)
    return state


@dataclass(frozen=True)
class Hostile:
    """A hostile program and the verdicts that name its failure."""

    name: str
    code: str
    statuses: frozenset[Status]


def _h(name: str, code: str, *statuses: Status) -> Hostile:
    return Hostile(name, code, frozenset(statuses))


# SENTINEL, OUTSIDE and ESCAPE are replaced per test: a file and a folder outside the scratch directory,
# and a fresh path in the world-writable /tmp.
BATTERY = [
    _h("fork_bomb", "import os\nwhile True:\n    os.fork()", F),
    _h("fork_in_function", "import os\ndef f(x):\n    os.fork()\n    return 2 * x", F),
    _h("multiprocessing_pool", "import multiprocessing as mp\nmp.Process(target=print).start()", F, C),
    _h("infinite_loop", "while True:\n    pass", T),
    _h("infinite_loop_in_test", "def f(x):\n    while True:\n        pass", T),
    _h("sleep_past_timeout", "import time\ntime.sleep(60)", T),
    _h("memory_bomb", "x = bytearray(8 * 1024**3)", M),
    _h("memory_growth", "chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", M),
    _h("deep_recursion", "def g(n):\n    return g(n + 1)\ng(0)", C),
    _h(
        "deep_recursion_raised_limit",
        "import sys\nsys.setrecursionlimit(10**8)\ndef g(n):\n    return g(n + 1)\ng(0)",
        C,
        M,
        T,
    ),
    _h("huge_stdout", "while True:\n    print('x' * 10000)", C),
    _h("huge_stderr", "import sys\nwhile True:\n    sys.stderr.write('y' * 10000)", C),
    _h("huge_file_in_scratch", "with open('big.bin', 'wb') as out:\n    out.write(b'0' * 10**7)", C),
    _h("write_outside", "open('SENTINEL', 'w').write('pwned')", F),
    _h("append_outside", "with open('SENTINEL', 'a') as out:\n    out.write('pwned')", F),
    _h("os_open_outside", "import os\nos.open('OUTSIDE/new.txt', os.O_WRONLY | os.O_CREAT)", F),
    _h("write_world_writable_tmp", "open('ESCAPE', 'w').write('pwned')", F),
    _h("pathlib_write_outside", "import pathlib\npathlib.Path('OUTSIDE/p.txt').write_text('pwned')", F),
    _h("relative_escape", "open('../' * 12 + 'ESCAPE'.lstrip('/'), 'w').write('x')", F),
    _h("delete_outside", "import os\nos.remove('SENTINEL')", F),
    _h("rmtree_outside", "import shutil\nshutil.rmtree('OUTSIDE/keep')", F),
    _h("rename_outside", "import os\nos.rename('SENTINEL', 'stolen.txt')", F),
    _h("chmod_outside", "import os\nos.chmod('SENTINEL', 0o777)", F),
    _h("symlink_escape", "import os\nos.symlink('SENTINEL', 'link')\nopen('link', 'w').write('pwned')", F),
    _h("chdir_out", "import os\nos.chdir('/')\nopen('ESCAPE'.lstrip('/'), 'w')", F),
    _h("read_passwd", "data = open('/etc/passwd').read()", F),
    _h("read_root_home", "data = open('/root/.bashrc').read()", F),
    _h("read_parent_environ", "import os\ndata = open(f'/proc/{os.getppid()}/environ', 'rb').read()", F),
    _h("read_proc_self_mem", "data = open('/proc/self/mem', 'rb').read(1)", F),
    _h("list_root", "import os\nnames = os.listdir('/')", F),
    _h("socket_connect", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", F),
    _h("dns_lookup", "import socket\nsocket.getaddrinfo('example.com', 80)", F),
    _h("urllib_fetch", "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=1)", F),
    _h("kill_parent", "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", F),
    _h("kill_all", "import os, signal\nos.kill(-1, signal.SIGKILL)", F),
    _h("killpg_zero", "import os, signal\nos.killpg(0, signal.SIGKILL)", F),
    _h("subprocess_spawn", "import subprocess\nsubprocess.Popen(['sleep', '100'])", F),
    _h("os_system", "import os\nos.system('sleep 100 &')", F),
    _h("os_exec", "import os\nos.execv('/bin/sh', ['sh', '-c', 'sleep 100'])", F),
    _h("posix_spawn", "import os\nos.posix_spawn('/bin/sleep', ['sleep', '100'], {})", F),
    _h("import_ctypes", "import ctypes", F),
    _h("ctypes_segfault", "import ctypes\nctypes.string_at(0)", F),
    _h("dunder_import_ctypes", "__import__('_ctypes')", F),
    _h("mmap_anonymous", "import mmap\nm = mmap.mmap(-1, 4096)", F),
    _h("gc_introspection", "import gc\nobjs = gc.get_objects()", F),
    _h("code_object_forgery", "c = (lambda: 0).__code__.replace(co_code=b'\\x00' * 8)", F),
    _h("raise_rlimit", "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (100, 100))", F),
    _h(
        "ignore_sigterm_and_spin",
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True:\n    pass",
        T,
    ),
    _h(
        "ignore_sigxcpu_and_spin",
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass",
        T,
    ),
    _h("setsid_escape", "import os\nos.setsid()\nwhile True:\n    pass", T, C),
    _h("setpgid_escape", "import os\nos.setpgid(0, 0)\nimport time\ntime.sleep(60)", T, C),
    _h(
        "thread_bomb",
        "import threading, time\nfor _ in range(100000):\n"
        "    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()",
        C,
        M,
        T,
    ),
    _h("abort", "import os\nos.abort()", C),
    _h("real_segfault", "import faulthandler\nfaulthandler._sigsegv()", C),
    _h("self_segfault_signal", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", F),
    _h(
        "close_every_pipe_and_sleep",
        "import os, time\nfor fd in range(64):\n    try:\n        os.close(fd)\n"
        "    except OSError:\n        pass\ntime.sleep(60)",
        T,
    ),
    _h(
        "garbage_on_result_pipe",
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{not json\\n')\n"
        "    except OSError:\n        pass\nf = lambda x: 0",
        W,
        C,
    ),
    _h("exit_before_tests", "import os\nos._exit(0)", C),
    _h("sys_exit_before_tests", "import sys\nsys.exit(0)", C),
    _h("syntax_error", "def f(x) return 2 * x", C),
]


def _materialise(code: str, outside: Path, escape: Path) -> str:
    return (
        code.replace("SENTINEL", str(outside / "sentinel.txt"))
        .replace("OUTSIDE", str(outside))
        .replace("ESCAPE", str(escape))
    )


def test_battery_is_big_enough() -> None:
    assert len(BATTERY) >= 30
    assert len({case.name for case in BATTERY}) == len(BATTERY)


@pytest.mark.parametrize("case", BATTERY, ids=[case.name for case in BATTERY])
def test_hostile_program_is_contained(case: Hostile, sandbox: Sandbox, outside: Path, scratch_root: Path) -> None:
    escape = Path(tempfile.gettempdir()) / f"cascadelab-escape-{uuid.uuid4().hex}"
    before = _snapshot(outside)
    parent = psutil.Process()
    # Other tests in the same pytest process may leave helpers alive (multiprocessing's resource tracker):
    # the battery checks that the sandbox adds none.
    children_before = {child.pid for child in parent.children(recursive=True)}

    verdict = sandbox.run(_materialise(case.code, outside, escape), DOUBLE)

    assert verdict.status in case.statuses, (verdict.status, verdict.reason, verdict.stderr[-500:])
    assert verdict.reason
    assert parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE
    assert _snapshot(outside) == before
    assert not escape.exists()
    assert {child.pid for child in parent.children(recursive=True)} - children_before == set()
    assert find_leftovers(verdict.run_id) == []
    assert list(scratch_root.iterdir()) == []  # the scratch directory is gone


def test_parent_environment_is_not_passed(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASCADELAB_SECRET_TOKEN", "hunter2")
    verdict = sandbox.run(
        "import os\nenv = dict(os.environ)\nprint(env)", [TestCase("'CASCADELAB_SECRET_TOKEN' in env", False)]
    )
    assert verdict.status is OK, verdict.reason
    assert "hunter2" not in verdict.stdout
    assert "HOME" in verdict.stdout


def test_right_wrong_and_crash_verdicts(sandbox: Sandbox) -> None:
    right = sandbox.run("def f(x):\n    return 2 * x", DOUBLE)
    wrong = sandbox.run("def f(x):\n    return x + 3", DOUBLE)
    raises = sandbox.run("def f(x):\n    return 1 // 0", DOUBLE)
    assert (right.status, right.passed, right.total) == (OK, 2, 2)
    assert (wrong.status, wrong.passed) == (W, 1)
    assert "expected -4" in wrong.reason
    assert raises.status is W and "ZeroDivisionError" in raises.reason


def test_scratch_directory_is_the_working_directory(sandbox: Sandbox) -> None:
    code = "import os\nopen('note.txt', 'w').write('hi')\nf = lambda x: open('note.txt').read() + str(x)"
    assert sandbox.run(code, [TestCase("f(1)", "hi1")]).status is OK


def test_printed_or_forged_success_does_not_pass(sandbox: Sandbox) -> None:
    printed = sandbox.run("print('ok 2/2 tests passed')\nf = lambda x: 0", DOUBLE)
    forged = sandbox.run(
        "import json, os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, (json.dumps({'test': 0, 'repr': '6'}) + '\\n' + json.dumps({'done': True})).encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)",
        DOUBLE,
    )
    assert printed.status is W
    assert forged.status is not OK


def test_run_before_warm_up_is_refused(scratch_root: Path) -> None:
    with pytest.raises(RuntimeError, match="warm_up"):
        Sandbox(HOSTILE_LIMITS, scratch_root=scratch_root).run("x = 1")


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match=r"limits\.wall_seconds: must be > 0"):
        Limits(wall_seconds=0)


def test_isolation_is_reported_and_counts_kept(sandbox: Sandbox) -> None:
    verdict = sandbox.run("x = 1", [TestCase("x", 1)])
    assert verdict.isolation is sandbox.isolation
    assert sandbox.isolation.network in {"namespace", "audit_hook"}
    assert sandbox.counts["ok"] >= 1


def test_network_namespace_blocks_without_the_hook(scratch_root: Path) -> None:
    box = Sandbox(HOSTILE_LIMITS, scratch_root=scratch_root, hook_blocks_network=False)
    if box.warm_up().network != "namespace":
        pytest.skip("no network namespace on this machine: the audit hook is the only network barrier")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        code = (
            "import socket\ndef f(x):\n    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "        return 'connected'\n    except OSError:\n        return 'blocked'"
        )
        verdict = box.run(code, [TestCase("f(0)", "blocked")])
    assert verdict.status is OK, verdict.reason
