"""Checks/second on the 164 HumanEval canonical solutions: the sandbox vs a plain one-`python -c`-per-program loop.

Usage: python bench/sandbox.py [--n N] [--workers W]
Both are measured in this one run (timings on a shared machine are noisy; the ratio is what counts).
`sandbox` includes starting its workers (cold); `sandbox_warm` reuses the workers kept from the previous call.
Where the sandbox's time goes is shown by extra rows: 1 worker (no parallelism), worker start-up alone,
and the weaker `rlimits` mode (same fork-server, no namespaces) — the difference to it is the cost of isolation.
Isolation costs nothing measurable here: the namespaces mode is even faster than `rlimits`, which must scan the
host's /proc after each check to find escaped processes (inside a pid namespace that scan sees only the check).
The last line is one JSON object with all figures, including `speedup_vs_plain`.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from sipf.core import data_dir
from sipf.sandbox import check_programs, close_workers, _Worker


def humaneval_programs(n=None):
    "prompt + canonical_solution + test + check(entry_point) for each HumanEval problem."
    with gzip.open(data_dir() / 'humaneval' / 'HumanEval.jsonl.gz', 'rt') as f:
        rows = [json.loads(l) for l in f]
    return [r['prompt'] + r['canonical_solution'] + '\n' + r['test'] + f"\ncheck({r['entry_point']})\n" for r in rows][
        :n
    ]


def plain_loop(programs, timeout=10.0):
    "One fresh `python -c program` per program, one after another; passed = exit status 0."
    return [
        subprocess.run([sys.executable, '-c', p], capture_output=True, timeout=timeout).returncode == 0
        for p in programs
    ]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def sandbox_rows(programs, workers: int) -> dict:
    "Checks/second of the sandbox: cold, warm, one worker, rlimits only; and one worker's start-up."
    n, rows = len(programs), {}
    for name, kw in [
        ('sandbox', dict(n_workers=workers)),
        ('sandbox_warm', dict(n_workers=workers)),
        ('sandbox_1_worker', dict(n_workers=1)),
        ('rlimits_only', dict(n_workers=workers, isolation='rlimits')),
    ]:
        if name != 'sandbox_warm':
            close_workers()  # cold: worker start-up included; warm: workers kept from the last call
        res, t = timed(lambda: check_programs(programs, **kw))
        rows[name] = dict(
            checks_per_s=n / t,
            passed=sum(r.passed for r in res),
            seconds=t,
            mean_check_s=sum(r.seconds for r in res) / n,
        )
        print(
            f'{name:17s}: {n / t:7.1f} checks/s  ({rows[name]["passed"]}/{n} passed, {t:.2f}s, '
            f'mean time inside a check {rows[name]["mean_check_s"] * 1000:.1f} ms)'
        )
    for iso in ('namespaces', 'rlimits'):
        _, t = timed(lambda: _Worker(iso).start().close())
        rows[f'worker_start_{iso}_s'] = t
        print(
            f'start-up of one {iso} worker: {t * 1000:.0f} ms '
            '(paid once per worker; workers are then kept between calls)'
        )
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int)
    ap.add_argument('--workers', type=int, default=2)
    args = ap.parse_args()
    programs = humaneval_programs(args.n)
    n = len(programs)
    plain, t_plain = timed(lambda: plain_loop(programs))
    print(
        f'plain loop (python -c per program, sequential): {n / t_plain:7.1f} checks/s  '
        f'({sum(plain)}/{n} passed, {t_plain:.2f}s)'
    )
    rows = sandbox_rows(programs, args.workers)
    out = dict(
        n_programs=n,
        workers=args.workers,
        cpu_count=os.cpu_count(),
        plain_checks_per_s=n / t_plain,
        plain_passed=sum(plain),
        sandbox_checks_per_s=rows['sandbox']['checks_per_s'],
        sandbox_passed=rows['sandbox']['passed'],
        sandbox_warm_checks_per_s=rows['sandbox_warm']['checks_per_s'],
        sandbox_1_worker_checks_per_s=rows['sandbox_1_worker']['checks_per_s'],
        rlimits_only_checks_per_s=rows['rlimits_only']['checks_per_s'],
        worker_start_namespaces_s=rows['worker_start_namespaces_s'],
        worker_start_rlimits_s=rows['worker_start_rlimits_s'],
        speedup_vs_plain=rows['sandbox']['checks_per_s'] / (n / t_plain),
    )
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == '__main__':
    main()
