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


def test_world_study_runs_every_rung_on_study_yaml(study, monkeypatch, tmp_path):
    monkeypatch.setattr(study, 'WORLD', 'study')
    policy, strong = (study.rung_config(r, 1, str(tmp_path)) for r in ('sipf-policy', 'sipf-strong'))
    assert policy.task_options['min_steps'] == 3 and policy.m0.base == 'base-long' and policy.n_sample == 1000
    assert policy.simulator == '' and strong.simulator == 'arith-solver'  # the policy rung is its own simulator
    fresh = study.fresh_task(tmp_path).problems
    assert fresh[0].question != fresh[1].question
    assert all(3 <= len(p.solution.split('\n')) - 1 <= 4 for p in fresh)  # scored on the study's 3-4-step problems


def test_report_refuses_runs_of_another_world(study, tmp_path, capsys):
    run = tmp_path / 'seed0-gold'
    run.mkdir()
    run.joinpath('config.yaml').write_text('task_options: {seed: 0}\n')  # toy.yaml's world
    study.check_world(tmp_path, 'toy')  # its own world passes
    with pytest.raises(SystemExit) as e:
        study.check_world(tmp_path, 'study')
    assert e.value.code == 2 and "seed0-gold was run on another world than 'study'" in capsys.readouterr().out
