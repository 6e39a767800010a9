"""`sipf run CONFIG --rehearse` on every bundled GPU config, on the shared data (missing data fails, never skips):
every stage of every iteration produces non-empty output, the adapters keep the config's rank, 4-bit where it runs,
the stand-in tokenizers have their real family's special tokens (no pad token but Gemma's). Then one config through
the vllm stand-in (sampling, simulation and evaluation) and Phi through the unsloth stand-in.

bitsandbytes is not installed in CI: there the configs' `qlora` is rehearsed as `lora` (said in the run's log and
checked below); where bitsandbytes is installed (its CPU backend, >= 0.45) the same test loads every base in 4-bit."""

import importlib.util
import json
import os
import time
from pathlib import Path as FilePath

import pytest
import yaml

from transformers import AutoTokenizer

from sipf.cli import main
from sipf.config import load_config
from sipf.core import data_dir
from sipf.rehearse import remove_stand_ins

DATA = data_dir()
GPU_CONFIGS = [f'{m}-{t}' for m in ('gemma2b', 'phi15', 'tinyllama') for t in ('gsm8k', 'mbpp')]
HAS_BNB = importlib.util.find_spec('bitsandbytes') is not None
TIMES = {}
SPECIALS = {  # (pad, bos, eos) of the real tokenizers: Gemma pads with id 0; Llama-2 (TinyLlama) and Phi-1.5 cannot
    'google/gemma-2b': ('<pad>', '<bos>', '<eos>'),
    'microsoft/phi-1_5': (None, '<|endoftext|>', '<|endoftext|>'),
    'TinyLlama/TinyLlama_v1.1': (None, '<s>', '</s>'),
}


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    "One work directory for the six: the simulator / verifier stand-ins of a task are built once and shared."
    yield tmp_path_factory.mktemp('rehearse')
    print('rehearsal times (s):', TIMES)


def _nonempty_jsonl(path) -> int:
    rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    assert rows, f"{path} is empty"
    return len(rows)


def _rank(model_dir) -> int:
    return json.loads((model_dir / 'adapter_config.json').read_text())['r']


def _check_iteration(run, k: int, config):
    it = run / f'iter_{k}'
    if k > 1:  # the official loop drops paths an earlier iteration sampled, and memorising stand-ins repeat themselves:
        assert (it / 'samples.jsonl').exists(), f"iteration {k}: no sampling"  # may add nothing new (CI: gemma2b)
        assert _rank(it / 'model') == config.lora.r  # ORPO trained on the accumulated pairs
        return
    for name in ('samples', 'labels', 'scored', 'pairs'):
        _nonempty_jsonl(it / f'{name}.jsonl')
    assert not (it / 'prm' / 'EMPTY').exists(), f"iteration {k}: no PRM was trained"
    if HAS_BNB:  # a 4-bit PRM keeps its adapter; a LoRA PRM is saved merged (sipf.prm), as qlora is rehearsed in CI
        assert _rank(it / 'prm') == config.lora.r
    else:
        assert (it / 'prm' / 'config.json').exists() and not (it / 'prm' / 'adapter_config.json').exists()
    assert _rank(it / 'model') == config.lora.r
    assert json.loads((it / 'model' / 'adapter_config.json').read_text())['base_model_name_or_path'] != ''


def _rehearse(name, workdir, more=(), key=None) -> int:
    "`sipf -q run NAME --rehearse ...` in this process, timed under `key`; the exit code."
    t0 = time.time()
    env = dict(os.environ)
    try:
        return main(['-q', 'run', name, '--rehearse', '--data', str(DATA), '--workdir', str(workdir), *more])
    finally:  # `-q` and `--data` set the process's environment: not for the tests that follow
        os.environ.clear()
        os.environ.update(env)
        TIMES[key or name] = round(time.time() - t0)


def _check_run(run, real):
    c = yaml.safe_load((run / 'config.yaml').read_text())
    assert c['adapter'] == (real.adapter if HAS_BNB else 'lora') and real.adapter == 'qlora'
    assert _rank(run / 'iter_0' / 'model') == real.lora.r == 256
    for k in range(1, c['iterations'] + 1):
        _check_iteration(run, k, real)
    for k in range(c['iterations'] + 1):
        reports = json.loads((run / f'iter_{k}' / 'eval.json').read_text())
        assert sorted(reports) == sorted(real.eval_tasks)
        assert all(r['n'] > 0 for r in reports.values()), reports
    return c


@pytest.mark.parametrize('name', GPU_CONFIGS)
def test_rehearsal_runs_every_stage(name, workdir, capsys):
    real = load_config(name)
    more = [] if name == 'gemma2b-gsm8k' else ['--set', 'iterations=1']  # one config rehearses two iterations
    code = _rehearse(name, workdir, more)
    assert code == 0, capsys.readouterr().err[-2000:]
    c = _check_run(workdir / 'runs' / f'{name}-rehearsal', real)
    tok = AutoTokenizer.from_pretrained(c['model'])  # the policy's stand-in, as sipf finds it before padding it
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == SPECIALS[real.model]


def _calls(workdir) -> list[dict]:
    return [json.loads(l) for l in (workdir / 'stand_ins.jsonl').read_text().splitlines()]


VLLM_CONFIG = 'tinyllama-gsm8k'  # the cheapest rehearsal


def test_rehearsal_through_vllm(workdir, capsys):
    "backend=vllm, adapters served with LoRA: sampling, simulation and evaluation all generate through vLLM."
    real, name = load_config(VLLM_CONFIG), f'{VLLM_CONFIG}-vllm'
    more = ['iterations=1', 'backend=vllm', 'vllm.merge_adapters=false', f'name={name}']
    try:
        code = _rehearse(VLLM_CONFIG, workdir, [a for m in more for a in ('--set', m)], name)
    finally:
        remove_stand_ins()
    assert code == 0, capsys.readouterr().err[-2000:]
    run = workdir / 'runs' / name
    c = _check_run(run, real)
    assert (c['sample']['backend'], c['simulate']['backend'], c['eval']['backend']) == ('vllm',) * 3
    calls = _calls(workdir)
    inits = [r for r in calls if r['call'] == 'LLM']
    assert inits and all(r['enable_prefix_caching'] is True for r in inits)
    policy = [r for r in inits if r.get('enable_lora')]
    assert policy and all(r['max_lora_rank'] >= real.lora.r == 256 for r in policy)
    gens = [(r, _served(r), r['params'][0]) for r in calls if r['call'] == 'generate']
    m0, m1 = ((run / f'iter_{k}' / 'model').resolve() for k in (0, 1))
    sample = c['sample']
    assert any(lora == m0 and (p['temperature'], p['n']) == (sample['temperature'], sample['n']) for _, lora, p in gens)
    assert any(r['model'] == c['simulator'] and lora is None for r, lora, _ in gens)  # simulation: the simulator
    for m in (m0, m1):  # evaluation: greedy, M0 and M1 served
        assert any(lora == m and p['temperature'] == 0 for _, lora, p in gens), m


def _served(call: dict):
    "The adapter directory a vLLM `generate` call served (None: the model alone)."
    return FilePath(call['lora_request']['lora_path']).resolve() if call['lora_request'] else None


def test_rehearsal_through_unsloth(workdir):
    """unsloth=true on Phi, in a fresh `sipf` process (as a user runs it): unsloth comes before transformers, M0 trains
    through it with Phi's dense / fc1 / fc2 targeted, and every generation follows `for_inference`."""
    import subprocess
    import sys

    name = 'phi15-gsm8k-unsloth'
    args = ['-q', 'run', 'phi15-gsm8k', '--rehearse', '--data', str(DATA), '--workdir', str(workdir)]
    args += ['--set', 'iterations=1', '--set', 'unsloth=true', '--set', f'name={name}']
    t0 = time.time()
    code = 'import sys; from sipf.cli import main; sys.exit(main(sys.argv[1:]))'
    done = subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True, timeout=900)
    TIMES[name] = round(time.time() - t0)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count('replaced by CPU stand-ins') == 1 and 'imported after' not in done.stderr
    assert 'Unsloth should be imported before' not in done.stderr
    _check_run(workdir / 'runs' / name, load_config('phi15-gsm8k'))
    calls = [r for r in _calls(workdir) if r['package'] == 'unsloth']
    peft = [r for r in calls if r['call'] == 'get_peft_model']
    assert peft and all({'dense', 'fc1', 'fc2'} <= set(r['target_modules']) and r['r'] == 256 for r in peft)
    order = [r['call'] for r in calls]
    assert 'generate' in order and order.index('for_inference') < order.index('generate')
    assert all(r['mode'] == 'inference' for r in calls if r['call'] == 'generate')
