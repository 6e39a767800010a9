"""Adversarial suite for sipf.sandbox: nothing a program does may fake a pass, outlive its limit or touch the host."""

import gzip
import json
import os
import secrets
import signal
import socket
import tempfile
import pytest
import sipf.sandbox as sb
from sipf.core import data_dir
from sipf.sandbox import check_programs, check_program, CheckResult, SandboxUnavailable

pytestmark = pytest.mark.timeout(120)  # a hung sandbox must fail CI, not stall it
T = 1.0  # wall-clock limit of the adversarial checks
SLACK = 2.0  # allowed on top of it (start-up of the check, kill and reap, a busy shared machine)


def run(programs, **kw):
    "Check `programs` with short limits; assert none took longer than its limit and no process was left behind."
    kw = dict(timeout=T, n_workers=2, memory_mb=512) | kw
    results = check_programs(programs, **kw)
    assert all(isinstance(r, CheckResult) for r in results)
    for p, r in zip(programs, results):
        assert r.seconds <= kw['timeout'] + SLACK, (p, r)
    assert leftover_processes() == [], 'processes of a check outlived it'
    return results


def parent_of(pid: int) -> int:
    return int(open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()[1])


def leftover_processes() -> list[int]:
    "Descendants of this process other than the idle workers themselves (`unshare` and the worker it forked)."
    workers = {w.proc.pid for ws in sb._IDLE.values() for w in ws}
    return [p for p in sb._descendants() if p not in workers and parent_of(p) not in workers]


def assert_no_pass(programs, **kw):
    results = run(programs, **kw)
    for p, r in zip(programs, results):
        assert not r.passed and r.status != 'passed', (p, r)
    return results


def host_processes_with(token: str) -> list[int]:
    "Host pids whose command line contains `token`."
    found = []
    for d in filter(str.isdigit, os.listdir('/proc')):
        try:
            if token in open(f'/proc/{d}/cmdline', 'rb').read().replace(b'\0', b' ').decode(errors='replace'):
                found.append(int(d))
        except OSError:
            pass
    return found


@pytest.fixture
def canary(tmp_path):
    "A host directory with one file the checks will try to change, delete or add to."
    (tmp_path / 'canary.txt').write_text('alive')
    yield tmp_path
    assert (tmp_path / 'canary.txt').read_text() == 'alive'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['canary.txt']


# ---- time ----------------------------------------------------------------------------------------------


def test_runaway_loops_are_killed_at_the_limit():
    progs = [
        'while True: pass',
        'import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: pass',
        'import time\ntime.sleep(1000)',  # wall clock, not CPU
        'import signal, time\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP): '
        'signal.signal(s, signal.SIG_IGN)\ntime.sleep(1000)',
        'def f(): return f()\nimport sys\nsys.setrecursionlimit(10**6)\nf()',
    ]
    res = assert_no_pass(progs)
    assert [r.status for r in res[:4]] == ['timeout'] * 4
    assert all(r.seconds >= T * 0.9 for r in res[:4])


def test_cpu_time_limit_is_separate_from_wall_clock():
    res = assert_no_pass(['while True: pass'], timeout=5, cpu_seconds=1)
    assert res[0].status == 'timeout' and res[0].seconds < 4, res


# ---- processes -----------------------------------------------------------------------------------------


def test_fork_storm_is_contained_and_leaves_nothing():
    token = f'{secrets.randbelow(10**6) + 10**6}.25'
    storm = 'import os\nwhile True:\n    try: os.fork()\n    except OSError: pass'
    escape = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
        f"    if os.fork() == 0: os.execv('/bin/sleep', ['sleep', '{token}'])\n"
        "    os._exit(0)\ntime.sleep(0.3)\nassert False"
    )
    res = assert_no_pass([storm, escape], max_processes=16)
    assert res[0].status == 'timeout'
    assert host_processes_with(f'sleep {token}') == []


def test_background_process_of_a_passing_check_is_killed():
    token = f'{secrets.randbelow(10**6) + 10**6}.5'
    prog = f"import subprocess\nsubprocess.Popen(['sleep', '{token}'], start_new_session=True)\nassert 1 + 1 == 2"
    assert run([prog])[0].passed
    assert host_processes_with(f'sleep {token}') == []


def test_check_cannot_see_or_signal_host_processes():
    prog = f"import os\nassert len([d for d in os.listdir('/proc') if d.isdigit()]) < 5\nos.kill({os.getpid()}, 9)"
    res = assert_no_pass([prog])
    assert res[0].status == 'failed'  # ProcessLookupError: the test process is not in the check's pid namespace


# ---- memory and output ---------------------------------------------------------------------------------


def test_memory_bombs():
    progs = ['x = bytearray(1 << 34)', 'l = []\nwhile True: l.append(" " * 10**6)', 'x = [0] * (1 << 31)']
    res = assert_no_pass(progs, memory_mb=256, timeout=5)  # faulting in 256 MB takes ~0.5 s on a busy machine
    assert [r.status for r in res] == ['memory'] * 3, res


def test_output_floods():
    progs = [
        'while True: print("x" * 10000)',
        'import sys\nwhile True: sys.stderr.write("y" * 10000)',
        'open("big", "w").write("z" * 10**8)',
    ]
    res = assert_no_pass(progs, max_output_bytes=100_000)
    assert [r.status for r in res] == ['output'] * 3, res


def test_filling_the_private_temp_dir_fails_and_is_cleaned():
    fill = "for i in range(1000): open(f'f{i}', 'w').write('x' * 900_000)"
    res = assert_no_pass([fill], tmp_mb=32)
    assert 'No space left' in res[0].detail, res
    # this check's own dir and output file, beside the read-only mounts of an interpreter installed under /tmp
    after = (
        "import os, sys\n"
        "mounts = {p.split('/')[2] for p in [sys.prefix, sys.base_prefix, *sys.path] if p.startswith('/tmp/')}\n"
        "left = [n for n in os.listdir('/tmp') if n not in mounts]\n"
        "assert len(left) == 2, left"
    )
    assert run([after], tmp_mb=32, n_workers=1)[0].passed


# ---- file system ---------------------------------------------------------------------------------------


def test_writes_and_deletes_outside_the_temp_dir_fail(canary):
    c = str(canary)
    progs = [
        f"open({c!r} + '/new.txt', 'w').write('x')",
        f"import os\nos.remove({c!r} + '/canary.txt')",
        f"open({c!r} + '/canary.txt', 'w').write('dead')",
        f"import shutil\nshutil.rmtree({c!r})",
        f"import os\nos.chmod({c!r} + '/canary.txt', 0)",
        f"import os\nos.rename({c!r} + '/canary.txt', {c!r} + '/moved')",
        f"open({os.getcwd()!r} + '/sipf_sandbox_escape.txt', 'w').write('x')",
        "import os\nos.system('mount -o remount,rw / 2>/dev/null; touch /sipf_sandbox_escape')\n"
        "assert os.path.exists('/sipf_sandbox_escape')",
    ]
    assert_no_pass(progs)
    assert not os.path.exists(os.path.join(os.getcwd(), 'sipf_sandbox_escape.txt')) and not os.path.exists(
        '/sipf_sandbox_escape'
    )


@pytest.mark.parametrize('isolation', ['namespaces', 'rlimits'])
def test_private_temp_dir_leaves_no_trace_on_host(isolation):
    name = f'sipf_escape_{secrets.token_hex(4)}'

    def ours():  # other people use /tmp too
        return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith('sipf')}

    before = ours()
    prog = (
        f"import os, tempfile\nopen('/tmp/{name}', 'w').write('x')\nopen('here.txt', 'w').write('y')\n"
        "assert open('here.txt').read() == 'y'\nwith tempfile.TemporaryDirectory() as d: open(d + '/f', 'w').write('z')"
    )
    assert run([prog], isolation=isolation)[0].passed  # a check may use its own temp space ...
    if isolation == 'namespaces':
        assert not os.path.exists(f'/tmp/{name}')  # ... which is not the host's
    else:
        os.remove(f'/tmp/{name}')  # the weaker mode does not hide the host's /tmp: documented
    sb.close_workers()  # a kept rlimits worker owns a directory in /tmp until it is closed
    assert ours() - before == set() and sb._descendants() == []


# ---- network -------------------------------------------------------------------------------------------


def test_cannot_connect_to_a_loopback_listener():
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        progs = [
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=0.5).sendall(b'hi')",
            f"import socket\nsocket.create_connection(('localhost', {port}), timeout=0.5)",
            "import urllib.request\nurllib.request.urlopen('http://example.com', timeout=0.5)",
        ]
        assert_no_pass(progs)
        with pytest.raises(BlockingIOError):
            server.accept()


# ---- fake passes ---------------------------------------------------------------------------------------


def test_early_exits_never_pass():
    tail = '\nassert False, "the tests"'
    progs = [
        p + tail
        for p in [
            'exit(0)',
            'quit()',
            'import sys\nsys.exit(0)',
            'raise SystemExit(0)',
            'import os\nos._exit(0)',
            'import os, signal\nos.kill(os.getpid(), signal.SIGKILL)',
            'import os\nos.abort()',
            'import os\nos._exit = lambda c: None\nimport sys\nsys.exit(0)',
        ]
    ]
    assert_no_pass(progs)


def test_fake_pass_markers_never_pass():
    progs = [
        'print("All tests passed!")\nprint("passed")\nimport os\nos._exit(0)',
        'import os\nfor fd in range(3, 64):\n    try: os.write(fd, b"passed")\n    except OSError: pass\nos._exit(0)',
        'import os\nfor fd in range(3, 64):\n    try: os.write(fd, b"0" * 32)\n'
        '    except OSError: pass\nraise SystemExit(0)',
        'import json\nprint(json.dumps({"passed": True, "status": "passed", "detail": "", "seconds": 0.0}))\nassert 0',
    ]
    assert_no_pass(progs)


def test_hooks_cannot_swallow_a_failure():
    progs = [
        'import sys\nsys.excepthook = lambda *a: None\nassert 1 == 2',
        'import atexit, os\natexit.register(lambda: os._exit(0))\nassert 1 == 2',
        'import sys, os\nsys.excepthook = lambda *a: os._exit(0)\nassert 1 == 2',
        'import threading, os\nthreading.excepthook = lambda *a: None\nassert 1 == 2',
        'import os, traceback\nos._exit = os.write = print\ntraceback.print_exc = None\nassert 1 == 2',
        'import builtins\nbuiltins.AssertionError = type("Fine", (Exception,), {})\nassert 1 == 2',
    ]
    res = assert_no_pass(progs)
    assert all(r.status == 'failed' for r in res), res


# ---- correct programs still pass ----------------------------------------------------------------------


def test_correct_programs_pass():
    progs = [
        'assert sorted([3, 1, 2]) == [1, 2, 3]',
        'import math, re, collections, heapq\nassert math.isqrt(17) == 4 and re.sub("a", "b", "aa") == "bb"',
        'from typing import List\ndef f(x: List[int]) -> int: return sum(x)\nassert f([1, 2]) == 3',
        'import subprocess\nassert subprocess.run(["echo", "hi"], capture_output=True, text=True).stdout == "hi\\n"',
        'print("lots of output " * 1000)\nassert True',
        'import random\nrandom.seed(0)\nassert 0 <= random.random() < 1',
        'if __name__ == "__main__":\n    assert True',
        'try:\n    input()\nexcept EOFError:\n    pass',
        'import os\nos.fork()\nassert True',  # both processes run off the end: still one clean pass
        'import multiprocessing as mp\nwith mp.Pool(2) as pool: assert pool.map(abs, [-1, 2]) == [1, 2]',
        'import xml.dom.minidom, sqlite3, subprocess, sys\n'
        'subprocess.run([sys.executable, "-c", "import json"], check=True)',
    ]
    res = run(progs)
    assert all(r.passed and r.status == 'passed' for r in res), res


def test_humaneval_canonical_solutions_pass_and_shuffled_fail():
    with gzip.open(data_dir() / 'humaneval' / 'HumanEval.jsonl.gz', 'rt') as f:
        rows = [json.loads(l) for l in f][:24]

    def prog(r, sol):
        return r['prompt'] + sol + '\n' + r['test'] + f"\ncheck({r['entry_point']})\n"

    good = [prog(r, r['canonical_solution']) for r in rows]
    shuffled = [prog(r, rows[(i + 1) % len(rows)]['canonical_solution']) for i, r in enumerate(rows)]
    res = run(good + shuffled, timeout=10)
    assert all(r.passed for r in res[: len(good)]), [r for r in res[: len(good)] if not r.passed]
    assert sum(r.passed for r in res[len(good) :]) <= 1


# ---- the pool and its contracts ------------------------------------------------------------------------


def test_order_progress_and_single_form(capsys):
    progs = [f'assert {i} % 2 == 0' for i in range(10)]
    res = check_programs(progs, timeout=T, n_workers=3, progress=True)
    assert [r.passed for r in res] == [i % 2 == 0 for i in range(10)]
    assert '10/10' in capsys.readouterr().err
    assert check_program('assert 1', timeout=T).passed and check_programs([]) == []


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match='program 1 is a bytes'):
        check_programs(['pass', b'pass'])
    with pytest.raises(KeyError, match="unknown sandbox limit key 'memory'"):
        check_programs(['pass'], memory=1)
    with pytest.raises(ValueError, match="unknown sandbox isolation 'vm'"):
        check_programs(['pass'], isolation='vm')
    r = check_program('def f(:\n  pass', timeout=T)
    assert r.status == 'failed' and 'SyntaxError' in r.detail


def test_dead_worker_is_an_error_then_replaced():
    w, cfg = sb._Worker(sb.resolve_isolation()).start(), sb.sandbox_config(timeout=T)
    try:
        assert w.check('assert 1', cfg).passed
        os.kill(w.proc.pid, signal.SIGKILL)
        w.proc.wait()
        assert w.check('assert 1', cfg).passed  # a worker found dead before a check is restarted
        w._send = lambda msg: os.kill(w.proc.pid, signal.SIGKILL)  # one that dies during a check
        r = w.check('assert 1', cfg)
        assert (r.passed, r.status) == (False, 'error')
        del w._send
        assert w.check('assert 1', cfg).passed
    finally:
        w.close()


def test_kept_workers_share_nothing_between_checks():
    sb.close_workers()
    first = run(
        [
            "open('/tmp/note', 'w').write('secret')\nopen('/dev/shm/note', 'w').write('secret')\n"
            "open('here', 'w').write('x')"
        ],
        n_workers=1,
    )
    pid = sb._IDLE[('namespaces', 256)][0].proc.pid
    second = run(
        [
            "import os\nassert not os.path.exists('/tmp/note') and not os.path.exists('/dev/shm/note')\n"
            "assert os.listdir('.') == []"
        ],
        n_workers=1,
    )
    assert first[0].passed and second[0].passed, (first, second)
    assert sb._IDLE[('namespaces', 256)][0].proc.pid == pid  # the same worker judged both
    sb.close_workers()
    assert sb._descendants() == []


def test_fails_closed_without_namespaces(monkeypatch):
    sb.close_workers()  # else the probe may reuse a kept namespaces worker
    monkeypatch.setattr(sb, '_PROBED', {})
    monkeypatch.delenv('SIPF_SANDBOX', raising=False)
    monkeypatch.setattr(sb, '_worker_command', lambda isolation: ['/nonexistent/unshare'])
    with pytest.raises(SandboxUnavailable, match='SIPF_SANDBOX=rlimits'):
        check_programs(['assert 1'])


def test_rlimits_mode_is_explicit_and_still_judges():
    progs = ['assert 1', 'assert 0', 'while True: pass', 'import os\nos._exit(0)', 'x = bytearray(1 << 34)']
    res = run(progs, isolation='rlimits')
    assert [r.status for r in res] == ['passed', 'failed', 'timeout', 'failed', 'memory'], res


def test_forked_copy_of_the_host_does_not_share_workers():
    assert run(['assert 1'], n_workers=1)[0].passed
    kept = [w.proc.pid for ws in sb._IDLE.values() for w in ws]
    pid = os.fork()
    if pid == 0:  # the copy gets workers of its own and leaves the parent's alone, also at exit
        ok = check_program('assert 1', timeout=T).passed
        sb.close_workers()
        os._exit(0 if ok else 1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert [w.proc.pid for ws in sb._IDLE.values() for w in ws] == kept
    assert run(['assert 1'], n_workers=1)[0].passed


# ---- the interpreter, the package, and what killed a check ---------------------------------------------
def _in_fresh_process(python: str, code: str, cwd=None) -> str:
    import subprocess

    out = subprocess.run([python, '-c', code], capture_output=True, text=True, timeout=90, cwd=cwd)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_interpreter_in_a_venv_under_tmp_stays_visible_read_only():
    "A venv under /tmp (hidden by the private /tmp): sys.executable still runs inside a check, and is read-only."
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(dir='/tmp') as d:
        venv = f'{d}/venv'
        subprocess.run([sys.executable, '-m', 'venv', '--without-pip', '--system-site-packages', venv], check=True)
        probe = (
            'import subprocess, sys\n'
            f'assert sys.prefix == {venv!r} and sys.executable.startswith({venv!r})\n'
            'subprocess.run([sys.executable, "-c", "import sipf.tasks, json"], check=True)\n'
        )
        writes = f'open({venv!r} + "/sipf-was-here", "w")'
        code = (
            'from sipf.sandbox import check_programs\n'
            f'res = check_programs([{probe!r}, {writes!r}], timeout=20, isolation="namespaces")\n'
            'print([(r.status, r.detail) for r in res])'
        )
        got = _in_fresh_process(f'{venv}/bin/python', code)
        assert not os.path.exists(f'{venv}/sipf-was-here')
    assert got.startswith("[('passed', ''), ('failed', ") and 'Read-only file system' in got, got


def test_worker_starts_when_a_folder_named_sipf_shadows_the_package(tmp_path):
    "In a directory holding a folder `sipf`, `sipf.__file__` is None: the worker is found without it."
    (tmp_path / 'sipf').mkdir()
    code = (
        'import sipf\nassert sipf.__file__ is None\nfrom sipf.sandbox import check_program\n'
        'print(check_program("assert 1 + 1 == 2", isolation="namespaces").status)'
    )
    import sys

    assert _in_fresh_process(sys.executable, code, cwd=tmp_path) == 'passed'


def test_a_check_killed_by_a_signal_is_not_a_timeout():
    res = assert_no_pass(
        [
            'import os, signal\nos.kill(os.getpid(), signal.SIGKILL)',
            'import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)',
            'while True: pass',
            'import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass',  # hard limit: SIGKILL
        ],
        timeout=6,
        cpu_seconds=1,
    )
    assert [(r.status, r.detail) for r in res[:2]] == [
        ('failed', 'killed by signal 9 (SIGKILL)'),
        ('failed', 'killed by signal 11 (SIGSEGV)'),
    ]
    assert [(r.status, r.detail) for r in res[2:]] == [('timeout', 'CPU-time limit of 1s')] * 2, res
    assert res[0].seconds < 1 and res[3].seconds < 4
