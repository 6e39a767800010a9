"bench/study.py's Table 1: each rung against M0 and against *its* gold control (the volume rungs: `gold-volume`)."

import importlib.util
import random
from pathlib import Path

import pytest

STUDY = Path(__file__).parent.parent / 'bench' / 'study.py'


@pytest.fixture(scope='module')
def study():
    spec = importlib.util.spec_from_file_location('study', STUDY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fresh(accs: dict, n: int = 200) -> dict:
    "Per-problem correctness of each (rung, k) for seeds 0 and 1, at the given accuracies."
    out = {}
    for (rung, k), acc in accs.items():
        for seed in (0, 1):
            rng = random.Random(f'{rung}{k}{seed}')
            out[f'{seed}/{rung}/{k}'] = [int(rng.random() < acc) for _ in range(n)]
    return out


def test_volume_rungs_are_compared_with_the_gold_control_at_their_budget(study):
    fresh = _fresh(
        {('m0', 0): 0.3, ('gold', 1): 0.3, ('gold-volume', 1): 0.1, ('sipf-volume', 1): 0.3, ('sipf-strong', 1): 0.3}
    )
    rows = {r['rung']: r for r in study.table(fresh)}
    assert rows['sipf-volume']['vs_gold'][0] > 10  # against gold-volume (10 %), not gold (30 %)
    assert abs(rows['sipf-strong']['vs_gold'][0]) < 10  # the ladder's rungs keep the 40-step gold control
    assert 'vs_gold' not in rows['gold-volume'] and 'vs_gold' not in rows['gold']  # a control is not its own rung
    assert rows['gold-volume']['vs_m0'][0] < -10


def test_every_rung_has_a_row_label_and_a_place_in_the_table(study):
    assert set(study.RUNGS) | {'m0'} == set(study.ROW_ORDER)
    assert set(study.CONTROL.values()) <= set(study.RUNGS)
    labels = [study.row_label(r, 1) for r in study.RUNGS]
    assert len(set(labels)) == len(labels)  # no two rungs print the same row name
