"The trained toy simulator (`simulator: toy-simulator`): the recipe it trains, the stage key, and where it is refused."

import dataclasses

import pytest

import sipf.toy as st
from sipf.config import load_config
from sipf.core import Path, read_jsonl, write_jsonl
from sipf.pipeline import Stages, _settings, check_run


def _tiny_model_dir(tmp_path):
    "A stand-in for the trained simulator: a random tiny toy model (its labels do not matter here, its path does)."
    tok = st.toy_tokenizer()
    out = tmp_path / 'sim'
    st.toy_model(tok, 'tiny').save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_simulate_rolls_out_with_the_simulator_recipe_for_the_runs_world(tmp_path, monkeypatch):
    sim, asked, loaded = _tiny_model_dir(tmp_path), [], []
    monkeypatch.setattr(st, 'toy_m0', lambda recipe: asked.append(recipe) or sim)
    original = Stages.backend
    monkeypatch.setattr(Stages, 'backend', lambda self, d, *a, **k: loaded.append(d) or original(self, d, *a, **k))
    over = [
        'simulator=toy-simulator',
        'simulate.n_rollouts=2',
        'simulate.max_new_tokens=8',
        'task_options.max_value=20',
    ]
    stages = Stages(load_config('toy-quick', over, runs_dir=str(tmp_path)))
    p = stages.problems()[0]
    write_jsonl(tmp_path / 'samples.jsonl', [Path(p.id, p.solution, p.solution.split('\n'), correct=True)])
    stages.simulate(tmp_path / 'labels.jsonl', tmp_path / 'samples.jsonl', 'the policy: not this')
    world = {k: v for k, v in stages.c.task_options.items() if k != 'seed'}
    assert world['max_value'] == 20 and world['max_steps'] == 2  # the override and toy-quick's own knobs
    assert asked == [dataclasses.replace(st.M0_RECIPES['simulator'], knobs=world)]  # the run's world, not the default
    assert loaded == [sim]  # the rollouts came from the trained simulator, not from the policy's directory
    assert len(read_jsonl(tmp_path / 'labels.jsonl')) == 1


def test_the_simulate_key_names_the_simulators_recipe():
    key = _settings(load_config('toy', ['simulator=toy-simulator']), 'simulate')['simulator']
    other = _settings(load_config('toy', ['simulator=toy-simulator', 'task_options.max_value=20']), 'simulate')
    assert key == f"toy-simulator-{st.recipe_key(st.M0_RECIPES['simulator'])}"
    assert other['simulator'] != key  # another world trains (and caches) its own simulator


def test_the_simulator_recipe_trains_on_far_more_problems_than_the_policy():
    sim, policy = st.M0_RECIPES['simulator'], st.M0_RECIPES['policy']
    assert sim.n_train >= 10 * policy.n_train and sim.task_seed != policy.task_seed  # other problems, 10x as many
    assert sim.n_train * sim.epochs > policy.n_train * policy.epochs  # and more examples seen


@pytest.mark.parametrize(
    'over, message',
    [
        (['model=TinyLlama/TinyLlama-1.1B-Chat-v1.0'], "needs model 'toy'"),
        (['task=gsm8k', 'eval_tasks=[gsm8k]'], "needs model 'toy', task 'arith'"),
    ],
)
def test_the_toy_simulator_is_refused_outside_the_toy_world(tmp_path, over, message, monkeypatch):
    import sipf.pipeline as sp

    monkeypatch.setattr(sp, 'check_model', lambda name: None)  # no hub here: the model name itself is not the point
    c = load_config('toy-quick', ['simulator=toy-simulator', *over], runs_dir=str(tmp_path))
    with pytest.raises(ValueError, match=message):
        check_run(c, object())
