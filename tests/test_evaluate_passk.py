"sipf.evaluate: pass@k over MBPP's prompt formats, on hand-built results."

from math import comb

import pytest

from sipf.core import Problem
from sipf.evaluate import grouped_pass_at_k, pass_at_k, report


class _Gen:
    text, n_tokens, finished = 'x', 3, True


class _Code:
    name, kind = 'mbpp', 'code'


def _formats(task_id: int, passed: list[bool]) -> list[tuple[Problem, bool]]:
    return [(Problem(f'mbpp/{task_id}#{j}', 'q'), ok) for j, ok in enumerate(passed)]


def test_pass_at_k_estimator():
    assert pass_at_k(6, 3, 1) == 0.5
    assert pass_at_k(6, 3, 3) == pytest.approx(1 - comb(3, 3) / comb(6, 3)) == pytest.approx(0.95)
    assert pass_at_k(6, 3, 6) == 1.0 and pass_at_k(6, 1, 6) == 1.0 and pass_at_k(6, 0, 3) == 0.0
    assert pass_at_k(6, 1, 3) == pytest.approx(0.5)  # 1 - C(5,3)/C(6,3) = 1 - 10/20
    with pytest.raises(ValueError, match='n=6, c=7'):
        pass_at_k(6, 7, 1)


def test_report_groups_formats_by_source_problem():
    rows = _formats(11, [True, False, True, False, True, False]) + _formats(12, [True] * 6) + _formats(13, [False] * 6)
    problems, correct = [p for p, _ in rows], [c for _, c in rows]
    rep = report(_Code(), problems, [_Gen()] * len(rows), correct)
    assert (rep['n'], rep['n_problems'], rep['correct']) == (18, 3, 9)
    assert rep['pass@1'] == pytest.approx((0.5 + 1 + 0) / 3) == rep['score']
    assert rep['pass@3'] == pytest.approx((0.95 + 1 + 0) / 3)
    assert rep['pass@6'] == pytest.approx((1 + 1 + 0) / 3)
    shuffled = list(reversed(rows))  # grouping is by id, not by position
    assert grouped_pass_at_k([p for p, _ in shuffled], [c for _, c in shuffled]) == grouped_pass_at_k(problems, correct)


def test_single_format_and_math_reports_have_no_pass_at_k():
    rows = _formats(11, [True]) + _formats(12, [False])
    rep = report(_Code(), [p for p, _ in rows], [_Gen()] * 2, [c for _, c in rows])
    assert 'pass@3' not in rep and 'n_problems' not in rep and rep['score'] == 0.5
    math = type('M', (), {'name': 'gsm8k', 'kind': 'math'})()
    rows = _formats(11, [True, False])
    assert 'pass@1' not in report(math, [p for p, _ in rows], [_Gen()] * 2, [c for _, c in rows])
