"`sipf plan`: counts a reader can check by hand, the orderings the plan must keep, the shipped GPU budgets, the CLI."

import json
import os
import re
import subprocess
import sys

import pytest

from sipf.cli import main
from sipf.config import LoraOptions, TrainConfig, config_file, load_config
from sipf.plan import ARCHS, Assumptions, iteration_hours, plan, plan_report, train_memory_gb, weight_bytes

GPU_CONFIGS = [f'{m}-{t}' for m in ('gemma2b', 'phi15', 'tinyllama') for t in ('gsm8k', 'mbpp')]


@pytest.fixture(autouse=True)
def no_local_data(monkeypatch):
    "Plans of hub tasks use KNOWN_TASKS (a `SIPF_DATA` in the environment would count its files instead)."
    monkeypatch.delenv('SIPF_DATA', raising=False)


def _stage(rows, stage, k):
    return next(r for r in rows if r['stage'] == stage and r['iteration'] == k)


def test_toy_quick_counts_by_hand():
    rows = plan(load_config('toy-quick'), 'cpu')
    m0, sample, sim = _stage(rows, 'm0', 0), _stage(rows, 'sample', 1), _stage(rows, 'simulate', 1)
    prm, align, ev = _stage(rows, 'prm', 1), _stage(rows, 'align', 1), _stage(rows, 'eval', 0)
    assert (m0['rows'], m0['steps']) == (1000, 10 * 63)  # n_train 1,000 in batches of 16 (63), 10 epochs
    assert (sample['questions'], sample['generations'], sample['tokens_max']) == (96, 96 * 8, 96 * 8 * 64)
    assert sim['generations'] == 96  # n_simulate paths labelled
    assert (prm['rows'], prm['steps']) == (96 - 8, 8 * 11)  # round(8 % of 96) held out; 88 rows / 8 = 11 a epoch
    assert (align['rows'], align['steps']) == (96 // 2, 3 * 3)  # pair_share 0.5 x 1 a question; 3 epochs of 48 / 16
    assert ev['questions'] == 100  # n_eval
    assert len(rows) == 2 + 3 * 6


def test_override_counts_by_hand():
    from sipf.tasks import load_task

    overrides = ['sample.n=6', 'n_sample=50', 'n_simulate=20', 'simulate.strategy=exhaustive', 'simulate.n_rollouts=3']
    c = load_config('toy-quick', overrides)
    rows = plan(c, 'cpu', assumptions=Assumptions(kept_share=1.0))
    sample, sim = _stage(rows, 'sample', 1), _stage(rows, 'simulate', 1)
    assert (sample['generations'], sample['tokens_max']) == (50 * 6, 50 * 6 * 64)
    task = load_task('arith', split='train', n=1000, **c.task_options)
    steps = sum(len(task.split_steps(p.solution)) for p in task.problems) / 1000 - 1  # answer line: outcome
    assert sim['rollouts'] == pytest.approx(20 * steps * 3, abs=0.5)
    assert _stage(rows, 'score', 1)['generations'] == 50 * 6  # every kept path: official quotas keep all (share 1)


def test_exhaustive_costs_more_rollouts_than_early_stop():
    ex = _stage(plan(load_config('gemma2b-gsm8k')), 'simulate', 1)
    early = _stage(plan(load_config('gemma2b-gsm8k', ['simulate.strategy=early_stop'])), 'simulate', 1)
    binary = _stage(plan(load_config('gemma2b-gsm8k', ['simulate.strategy=binary'])), 'simulate', 1)
    assert ex['rollouts'] > early['rollouts'] > binary['rollouts'] > 0
    assert ex['hours'] > early['hours'] > binary['hours']


def test_accumulated_alignment_grows_per_iteration():
    steps = [r['steps'] for r in plan(load_config('gemma2b-gsm8k')) if r['stage'] == 'align']
    assert len(steps) == 3 and steps[0] < steps[1] < steps[2]
    alone = [
        r['steps'] for r in plan(load_config('gemma2b-gsm8k', ['align.accumulate=false'])) if r['stage'] == 'align'
    ]
    assert alone == [steps[0]] * 3


def test_qlora_2b_needs_less_memory_than_full_bf16():
    gemma, r = ARCHS['google/gemma-2b'], LoraOptions(r=256, alpha=128)
    qlora = train_memory_gb(gemma, TrainConfig(adapter='qlora', batch_size=8, lora=r), 512)
    full = train_memory_gb(gemma, TrainConfig(adapter='none', batch_size=8), 512)
    assert qlora < full
    assert weight_bytes(gemma, 'qlora') < weight_bytes(gemma, 'none') / 1.5


@pytest.mark.parametrize('name', GPU_CONFIGS)
def test_gpu_config_iteration_fits_a_day_on_an_a100(name):
    c = load_config(name)
    hours = iteration_hours(plan(c, 'A100-80GB'))
    assert c.n_sample and c.n_simulate
    assert all(h <= 24 for k, h in hours.items() if k > 0), hours
    said = re.search(r'one iteration ≈ ([\d.]+) h on one A100-80GB by `sipf plan`', config_file(name).read_text())
    assert said, f'{name}.yaml does not state its plan'
    assert float(said.group(1)) == round(max(h for k, h in hours.items() if k > 0), 1)


def test_cli_plan_is_fast_and_imports_no_torch():
    code = (
        "import sys, time; t = time.perf_counter(); from sipf.cli import main; "
        "rc = main(['plan', 'gemma2b-gsm8k']); "
        "print('RESULT', rc, 'torch' in sys.modules, time.perf_counter() - t)"
    )
    env = {k: v for k, v in os.environ.items() if k != 'SIPF_DATA'}
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=60, env=env)
    rc, torch_loaded, seconds = r.stdout.strip().splitlines()[-1].split()[1:]
    assert (rc, torch_loaded) == ('0', 'False'), r.stderr[-2000:]
    assert float(seconds) < 2
    assert re.search(r'^stage +iter +model +questions +generations', r.stdout, re.M)
    assert 'sample       1' in r.stdout and 'assumptions' in r.stdout


def _one_line_error(capsys, args, needle):
    env = dict(os.environ)
    try:
        assert main(['-q', *args]) == 2
    finally:  # `-q` turns progress bars off for the whole process: not for the tests that follow
        os.environ.clear()
        os.environ.update(env)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('sipf: error: ') and needle in err[0], err


def test_cli_plan_typo_key_is_one_line(capsys):
    _one_line_error(capsys, ['plan', 'gemma2b-gsm8k', '--set', 'sample.nn=3'], "unknown 'sample' key 'nn'")


def test_cli_plan_bad_gpu_is_one_line(capsys):
    _one_line_error(capsys, ['plan', 'gemma2b-gsm8k', '--gpu', 'A100'], "unknown --gpu 'A100'")


def test_memory_warning_for_a_small_gpu():
    out = plan_report(load_config('gemma2b-gsm8k'), gpu='T4-16GB')
    assert re.search(r'^warning: align needs ~\d+ GB, more than 16 GB', out, re.M)
    assert 'warning' not in plan_report(load_config('gemma2b-gsm8k'), gpu='A100-80GB')


def test_local_model_directory_is_planned_from_its_config(tmp_path):
    shape = dict(hidden_size=256, num_hidden_layers=4, intermediate_size=688, num_attention_heads=4, vocab_size=1000)
    (tmp_path / 'config.json').write_text(json.dumps(dict(shape, model_type='llama', tie_word_embeddings=False)))
    rows = plan(load_config('toy-quick', model=str(tmp_path)), 'cpu')
    big = plan(load_config('toy-quick'), 'cpu')
    assert _stage(rows, 'm0', 0)['hours'] > _stage(big, 'm0', 0)['hours']  # 4.3M parameters vs the toy's 1.1M


def test_probe_measures_the_toy_on_cpu():
    from sipf.plan import probe_tokens_per_s

    c = load_config('toy-quick', ['sample.questions_per_round=4', 'threads=1'])
    assert probe_tokens_per_s(c, seconds=0.1) > 0


def test_probe_of_an_unreachable_hub_model_is_one_line():
    env = dict(os.environ, HF_HUB_OFFLINE='1')  # never a download, even where the hub is reachable
    code = "import sys; from sipf.cli import main; sys.exit(main(['-q', 'plan', 'gemma2b-gsm8k', '--probe']))"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300, env=env)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr[-2000:]
    assert err[0].startswith("sipf: error: unknown model id 'google/gemma-2b'"), err


def test_simulator_kv_cache_follows_the_configs_batch():
    "The simulator's peak memory counts the rollouts `simulate.batch_paths` puts in flight, not a fixed 64."
    import inspect

    from sipf.pipeline import Stages
    from sipf.plan import HF_BATCH, generate_memory_gb, simulate_sequences

    assert HF_BATCH == inspect.signature(Stages.backend).parameters['batch_size'].default  # what generate really gets
    c = load_config('gemma2b-gsm8k', ['simulate.batch_paths=1', 'simulate.strategy=exhaustive'])
    sim = _stage(plan(c, 'A100-80GB'), 'simulate', 1)
    big = _stage(plan(load_config('gemma2b-gsm8k'), 'A100-80GB'), 'simulate', 1)
    arch, seq = ARCHS[c.simulator], 71.8 + c.sample.max_new_tokens + c.simulate.max_new_tokens
    n = simulate_sequences(c.simulate, 3.58)
    assert n == 1 * 4 * 8  # one path in flight, 4 steps rolled out (ceil of GSM8K's 3.58), 8 rollouts each
    assert sim['peak_gb'] < big['peak_gb'] - 10  # 32 sequences of a 7B simulator's KV cache, not 64
    assert abs(sim['peak_gb'] - generate_memory_gb(arch, 'transformers', n, seq)) < 0.5
