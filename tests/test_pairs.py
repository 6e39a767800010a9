"Edge cases of sipf.pairs on hand-built paths: margins, strategies, caps, determinism, outcome feedback, SFT filters."

import random

import pytest

from sipf.core import Path, Problem
from sipf.pairs import (
    PairConfig,
    build_pairs,
    correct_examples,
    high_reward_examples,
    path_reward,
    prompt_fn,
)
from sipf.tasks import MathTask


def P(pid, text, correct, reward=None):
    return Path(pid, text, steps=text.split('\n'), correct=correct, meta={} if reward is None else {'reward': reward})


def PROMPT(pid):
    return f'Q {pid}\n'


def _paths():
    "q1: 3 correct (0.9, 0.6, 0.3) and 2 wrong (0.5, 0.1); q2: only correct; q3: only wrong."
    return [
        P('q1', 'c9', True, 0.9),
        P('q1', 'c6', True, 0.6),
        P('q1', 'c3', True, 0.3),
        P('q1', 'w5', False, 0.5),
        P('q1', 'w1', False, 0.1),
        P('q2', 'c8', True, 0.8),
        P('q2', 'c2', True, 0.2),
        P('q3', 'w7', False, 0.7),
        P('q3', 'w0', False, 0.0),
    ]


def _texts(pairs):
    return sorted((p.problem_id, p.chosen, p.rejected) for p in pairs)


def test_process_margin_is_strict_and_chosen_correct():
    pairs = build_pairs(PROMPT, _paths(), PairConfig(margin=0.3, max_pairs_per_question=100))
    # q1: c9 beats w5 (0.4), w1, c3 (0.6); c6 beats w1 (0.5); c3 - w1 = 0.2 no; 0.6-0.3 = 0.3 is NOT > 0.3
    assert _texts(pairs) == [
        ('q1', 'c6', 'w1'),
        ('q1', 'c9', 'c3'),
        ('q1', 'c9', 'w1'),
        ('q1', 'c9', 'w5'),
        ('q2', 'c8', 'c2'),
    ]
    assert all(p.margin > 0.3 for p in pairs)
    assert {p.meta['feedback'] for p in pairs} == {'process'}


def test_wrong_chosen_allowed_when_not_required():
    pairs = build_pairs(
        PROMPT, _paths(), PairConfig(margin=0.3, require_correct_chosen=False, max_pairs_per_question=100)
    )
    assert ('q3', 'w7', 'w0') in _texts(pairs)
    assert ('q1', 'w5', 'w1') in _texts(pairs)


def test_require_incorrect_rejected():
    pairs = build_pairs(
        PROMPT, _paths(), PairConfig(margin=0.0, require_incorrect_rejected=True, max_pairs_per_question=100)
    )
    assert all(not p.rejected.startswith('c') for p in pairs)
    assert {p.problem_id for p in pairs} == {'q1'}


def test_outcome_pairs_every_correct_with_every_wrong_ignoring_rewards_and_margin():
    paths = [P('q1', 'c', True), P('q1', 'c2', True), P('q1', 'w', False), P('q2', 'c', True)]  # no rewards needed
    pairs = build_pairs(PROMPT, paths, PairConfig(margin=5.0), feedback='outcome')
    assert _texts(pairs) == [('q1', 'c', 'w'), ('q1', 'c2', 'w')]
    assert all(p.margin == 1.0 for p in pairs)


def test_maxmin_one_pair_per_question_best_vs_worst():
    pairs = build_pairs(PROMPT, _paths(), PairConfig(strategy='maxmin'))
    assert _texts(pairs) == [('q1', 'c9', 'w1'), ('q2', 'c8', 'c2')]


def test_cap_per_question_and_determinism():
    paths = [P('q', f'c{i}', True, 0.5 + i / 100) for i in range(10)] + [P('q', f'w{i}', False, 0.0) for i in range(10)]
    cfg = PairConfig(max_pairs_per_question=3, seed=1)
    a = build_pairs(PROMPT, paths, cfg)
    assert len(a) == 3
    shuffled = paths[:]
    random.Random(0).shuffle(shuffled)
    assert _texts(build_pairs(PROMPT, shuffled, cfg)) == _texts(a)  # order of records does not matter
    assert [p.margin for p in a] == sorted((p.margin for p in a), reverse=True)
    seeds = {tuple(_texts(build_pairs(PROMPT, paths, PairConfig(max_pairs_per_question=3, seed=s)))) for s in range(5)}
    assert len(seeds) > 1  # the seed does choose


def test_duplicates_count_once():
    paths = [P('q', 'c', True, 0.9)] * 3 + [P('q', 'w', False, 0.1)] * 2
    assert len(build_pairs(PROMPT, paths, PairConfig(max_pairs_per_question=100))) == 1


def test_no_pairs_is_empty_not_error():
    assert build_pairs(PROMPT, [], PairConfig()) == []
    assert build_pairs(PROMPT, [P('q', 'c', True, 0.5), P('q', 'c2', True, 0.45)], PairConfig(margin=0.1)) == []


def test_missing_reward_named():
    with pytest.raises(ValueError, match="no meta\\['reward'\\]"):
        build_pairs(PROMPT, [P('q', 'c', True, 0.5), P('q', 'w', False)], PairConfig())


def test_bad_config():
    with pytest.raises(ValueError, match="unknown pair strategy"):
        PairConfig(strategy='best')
    with pytest.raises(ValueError, match="max_pairs_per_question"):
        PairConfig(max_pairs_per_question=0)
    with pytest.raises(ValueError, match="unknown feedback"):
        build_pairs(PROMPT, _paths(), feedback='result')
    with pytest.raises(TypeError, match="expected a task"):
        prompt_fn(42)


def test_prompt_from_task_and_meta_traces_paths():
    task = MathTask([Problem('q1', 'What is 3 + 4?', answer='7')], name='t')
    good, bad = P('q1', '3 + 4 = 7\nThe answer is 7', True, 0.9), P('q1', '3 + 4 = 8\nThe answer is 8', False, 0.1)
    [pair] = build_pairs(task, [good, bad])
    assert pair.prompt == task.prompt(task.problems[0]) and pair.chosen == good.text and pair.rejected == bad.text
    assert (pair.meta['chosen_id'], pair.meta['rejected_id']) == (good.id, bad.id)
    assert abs(pair.margin - 0.8) < 1e-9


def test_sft_filters():
    paths = _paths() + [P('q1', 'c9', True, 0.9)]
    rft = correct_examples(PROMPT, paths)
    assert sorted(e['completion'] for e in rft) == ['c2', 'c3', 'c6', 'c8', 'c9']
    assert rft[0].keys() == {'problem_id', 'prompt', 'completion'} and rft[0]['prompt'] == PROMPT(rft[0]['problem_id'])
    capped = correct_examples(PROMPT, paths, max_per_question=1)
    assert sorted(e['problem_id'] for e in capped) == ['q1', 'q2']
    assert capped == correct_examples(PROMPT, paths, max_per_question=1)
    assert sorted(e['completion'] for e in high_reward_examples(PROMPT, paths, min_reward=0.6)) == ['c6', 'c8', 'c9']
    assert [e['completion'] for e in high_reward_examples(PROMPT, paths, min_reward=None, top_k=2)] == [
        'c9',
        'c6',
        'c8',
        'c2',
    ]
    assert path_reward(P('q', 'x', True), 'outcome') == 1.0
