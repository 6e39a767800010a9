"Edge cases of the toy world's task generator and its ground-truth step checker."

import re
import subprocess
import sys
import pytest
from sipf.arith import ArithConfig, ArithTask, load_arith, question_split
from sipf.core import Problem, write_jsonl
from sipf.tasks import load_task


def test_deterministic_across_processes():
    code = (
        "from sipf.arith import load_arith; "
        "print([p.question for p in load_arith(split='train', n=30, seed=7).problems])"
    )
    outs = {
        subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    }
    assert len(outs) == 1
    assert outs.pop().strip() == str([p.question for p in load_arith(split='train', n=30, seed=7).problems])


def test_splits_disjoint_across_seeds_and_sizes():
    tests = {p.question for s in (0, 1) for p in load_arith(split='test', n=300, seed=s).problems}
    train = {p.question for s in (0, 1) for p in load_arith(split='train', n=3000, seed=s).problems}
    val = {p.question for p in load_arith(split='val', n=300).problems}
    assert not tests & train and not val & train and not val & tests
    assert all(question_split(q) == 'test' for q in tests)


def test_no_duplicate_questions_or_ids():
    ps = load_arith(split='train', n=3000).problems
    assert len({p.question for p in ps}) == len({p.id for p in ps}) == 3000


@pytest.mark.parametrize(
    'knobs',
    [
        {},
        dict(min_steps=1, max_steps=1),
        dict(min_steps=2, max_steps=4, max_value=40, base_max=20),
        dict(max_steps=6, max_value=60, max_distractors=4),
        dict(kinds=('total',), max_terms=2),
        dict(shuffle=False, named=False),
        dict(ops=('*',)),
    ],
)
def test_gold_is_correct_and_within_limits(knobs):
    task = load_arith(split='test', n=200, **knobs)
    cfg = ArithConfig(**knobs)
    for p in task.problems:
        assert task.is_correct(p, p.solution), p
        assert all(task.step_truth(p, p.solution)), (p.question, p.solution)
        assert cfg.min_steps <= p.meta['n_steps'] <= cfg.max_steps
        nums = [int(x) for x in re.findall(r'\d+', p.question + p.solution)]
        assert 1 <= min(nums) and max(nums) <= cfg.max_value, p
        assert p.meta['kind'] in cfg.kinds


def test_knobs_change_the_problems():
    no_d = load_arith(split='test', n=100, max_distractors=0).problems
    many = load_arith(split='test', n=100, min_distractors=2, max_distractors=2).problems
    assert all(p.meta['distractors'] == 0 for p in no_d)
    assert sum(p.meta['distractors'] for p in many) >= 150  # a draw may fail to add one
    unnamed = load_arith(split='test', n=20, named=False).problems
    assert all(':' not in l for p in unnamed for l in p.solution.splitlines())


def test_several_valid_orders_exist():
    "Some problems have independent chains: their relations can be resolved in more than one order."
    task = load_arith(split='test', n=300, min_steps=2, max_steps=4)
    multi = [p for p in task.problems if p.meta['kind'] == 'total' and p.meta['n_steps'] >= 3]
    assert multi
    # permuting the equation lines of the gold solution keeps every step valid for some problems
    ok = 0
    for p in multi:
        lines = p.solution.splitlines()
        eqs, ans = lines[:-1], lines[-1]
        alt = '\n'.join(list(reversed(eqs[:-1])) + eqs[-1:] + [ans])
        if alt != p.solution and all(task.step_truth(p, alt)):
            ok += 1
    assert ok > 0


def test_step_truth_any_completion():
    task = load_arith(split='test', n=50)
    p = task.problems[0]
    assert task.step_truth(p, '') == []
    assert task.step_errors(p, 'I do not know') == ['format']
    assert task.step_errors(p, f'The answer is {int(p.answer) + 1}') == ['answer']
    assert task.step_truth(p, f'The answer is {p.answer}') == [True]
    assert task.step_errors(p, '99 + 98 = 197') == ['unknown number']
    a, op, b, c = p.meta['valid'][0]
    first = [l for l in p.solution.splitlines() if f'{a} {op} {b} = {c}' in l]
    if first and a in p.meta['numbers'] and b in p.meta['numbers']:
        assert task.step_errors(p, first[0].replace(f'= {c}', f'= {c + 1}')) == ['arithmetic']
    bad = next(
        q
        for q in task.problems
        if q.meta['valid'][0][0] in q.meta['numbers'] and q.meta['valid'][0][2] in q.meta['numbers']
    )
    a, op, b, c = bad.meta['valid'][0]
    assert task.step_errors(bad, f'{a} {op} {b} = {c + 1}') == ['arithmetic']
    assert task.step_errors(bad, f'{a} {op} {b} = {c}') == [None]
    # steps after the answer line are ignored; lines with extra words still parse
    sol = p.solution + '\nQuestion: next one\n1 + 1 = 3'
    assert all(task.step_truth(p, sol)) and len(task.step_truth(p, sol)) == p.meta['n_steps'] + 1


def test_distractor_use_is_a_reasoning_error():
    q = Problem(
        'x',
        'Ann has 5 apples. Ben has 3 more apples than Ann. Dan has 9 apples. How many apples does Ben have?',
        answer='8',
        meta=dict(valid=[[5, '+', 3, 8], [3, '+', 5, 8]], numbers=[3, 5, 9]),
    )
    t = ArithTask([q])
    assert t.step_errors(q, 'Ben: 9 + 3 = 12\nThe answer is 12') == ['wrong quantity', 'answer']
    assert t.step_errors(q, 'Ben: 3 + 5 = 8\nThe answer is 8') == [None, None]
    assert t.step_errors(q, 'Ben: 5 x 3 = 15\nThe answer is 15') == ['wrong quantity', 'answer']
    assert t.step_truth(q, 'Ben: 5 - 3 = 2\nBen: 5 + 3 = 8\nThe answer is 8') == [False, True, True]
    assert t.step_truth(q, 'Ben: 5 - 3 = 2\nBen: 5 + 3 = 8\nThe answer is 8', cumulative=True) == [False, False, False]


def test_file_roundtrip_and_errors(tmp_path):
    task = load_arith(split='val', n=10, seed=2)
    write_jsonl(tmp_path / 'val.jsonl', task.problems)
    back = load_task('arith', path=tmp_path / 'val.jsonl', n=4)
    assert [p.id for p in back.problems] == [p.id for p in task.problems[:4]]
    assert back.step_truth(back.problems[1], back.problems[1].solution) == task.step_truth(
        task.problems[1], task.problems[1].solution
    )
    with pytest.raises(FileNotFoundError, match='arith file not found'):
        load_arith(path=tmp_path / 'nope.jsonl')
    (tmp_path / 'bad.jsonl').write_text('{"id": "a", "questio": "x"}\n')
    with pytest.raises(KeyError, match="questio"):
        load_arith(path=tmp_path / 'bad.jsonl')
    with pytest.raises(KeyError, match="did you mean 'max_distractors'"):
        load_arith(max_distractor=1)
    with pytest.raises(ValueError, match="unknown arith split 'dev'"):
        load_arith(split='dev')


def test_task_is_a_math_task():
    task = load_task('arith', n=3)
    assert isinstance(task, ArithTask) and task.name == 'arith' and task.kind == 'math'
    p = task.problems[0]
    assert task.prompt(p).startswith('Question: ') and task.prompt(p).endswith('Answer:\n')
    assert task.extract_answer(p.solution) == p.answer


def test_no_amount_stated_twice():
    "Every (person, item) amount is stated at most once, so no problem contradicts itself."
    for knobs in ({}, dict(min_distractors=3, max_distractors=4), dict(shuffle=False, max_distractors=3)):
        for p in load_arith(split='train', n=500, **knobs).problems:
            facts = [s.strip() for s in p.question.split('.')[:-1]]
            keys = [
                (f.split()[0], next(w for w in f.split() if w in __import__('sipf.arith', fromlist=['ITEMS']).ITEMS))
                for f in facts
            ]
            assert len(keys) == len(set(keys)), p.question


def test_dependency_order_when_not_shuffled():
    "With shuffle=False every relative fact comes after the fact it is relative to."
    for p in load_arith(split='test', n=200, shuffle=False, max_distractors=3).problems:
        stated = set()
        for sent in p.question.split('. ')[:-1] + [p.question.split('. ')[-1].split('?')[0].rsplit('.', 1)[0]]:
            rel = re.match(r'(\w+) has \d+ (?:more|fewer|times as many) (\w+) (?:than|as) (\w+)', sent)
            if rel:
                assert (rel[3], rel[2]) in stated, (p.question, sent)
                stated.add((rel[1], rel[2]))
            elif base := re.match(r'(\w+) has \d+ (\w+)$', sent.rstrip('.')):
                stated.add((base[1], base[2]))
        assert stated
