"The strong programmatic simulator (`simulator: arith-solver`) wired through the pipeline's simulate stage."

import random

import pytest

from sipf.config import load_config
from sipf.core import Path, read_jsonl, write_jsonl
from sipf.pipeline import Stages, check_run
from sipf.solver import continue_solution


def _labels(tmp_path, slip: float, paths):
    c = load_config('toy-quick', [f'simulate.slip={slip}', 'simulate.strategy=exhaustive'], runs_dir=str(tmp_path))
    stages = Stages(c)
    write_jsonl(tmp_path / 'samples.jsonl', paths)
    out = tmp_path / f'labels-{slip}.jsonl'
    stages.simulate(out, tmp_path / 'samples.jsonl', 'unused: the solver needs no model')
    return {r['path_id']: r for r in read_jsonl(out)}


def _gold_and_wrong(stages):
    "Each problem's gold solution and the same with its first equation off by one and the rest carried on."
    out = []
    for i, p in enumerate(stages.problems()[:12]):
        lines = p.solution.split('\n')
        wrong = [lines[0].rsplit('=', 1)[0] + f"= {int(lines[0].rsplit('=', 1)[1]) + 1}"]
        rest = continue_solution(p.question, wrong, random.Random(i)).split('\n')
        for steps in (lines, wrong + rest):
            text = '\n'.join(steps)
            out.append(Path(p.id, text, steps, correct=stages.task().is_correct(p, text)))
    return out


def test_slip_reaches_the_solver_and_labels_follow_the_truth(tmp_path):
    stages = Stages(load_config('toy-quick'))
    paths = [p for p in _gold_and_wrong(stages) if len(p.steps) > 2]
    exact, noisy = _labels(tmp_path, 0.0, paths), _labels(tmp_path, 1.0, paths)
    for p in paths:
        truth = stages.task().step_truth(stages.task().by_id(p.problem_id), p.text, cumulative=True)
        assert exact[p.id]['labels'] == [int(t) for t in truth], (p.text, exact[p.id])
    right = [p for p in paths if stages.task().is_correct(stages.task().by_id(p.problem_id), p.text)]
    # slip 1: every rolled-out equation is off, so a right prefix before the last equation never reaches the answer
    assert all(noisy[p.id]['hits'][0] < exact[p.id]['hits'][0] for p in right)


def test_the_solver_is_for_arith_only(tmp_path):
    c = load_config('toy-quick', runs_dir=str(tmp_path))
    check_run(c, Stages(c))  # arith: fine
    gsm = load_config('toy-quick', ['task=gsm8k', 'eval_tasks=[gsm8k]'], runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match="arith-solver' continues toy-world"):
        check_run(gsm, object())


def test_a_sampled_step_that_begins_question_is_labelled_not_refused(tmp_path):
    "A policy's first step can read 'Question: 12 - 7 = 5' (the stop sequence needs a newline before 'Question:')."
    stages = Stages(load_config('toy-quick'))
    p = stages.problems()[0]
    steps = ['Question: 12 - 7 = 5', *p.solution.split('\n')]
    path = Path(p.id, '\n'.join(steps), steps, correct=True)
    labels = _labels(tmp_path, 0.0, [path])[path.id]['labels']
    assert len(labels) == len(steps) and labels[-1] == 1  # every step labelled; the gold rest reaches the answer
