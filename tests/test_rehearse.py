"""`sipf run CONFIG --rehearse` on every bundled GPU config, on the shared data (missing data fails, never skips):
every stage of every iteration produces non-empty output, the adapters keep the config's rank, 4-bit where it runs.

bitsandbytes is not installed in CI: there the configs' `qlora` is rehearsed as `lora` (said in the run's log and
checked below); where bitsandbytes is installed (its CPU backend, >= 0.45) the same test loads every base in 4-bit."""

import importlib.util
import json
import os
import time

import pytest
import yaml

from sipf.cli import main
from sipf.config import load_config
from sipf.core import data_dir

DATA = data_dir()
GPU_CONFIGS = [f'{m}-{t}' for m in ('gemma2b', 'phi15', 'tinyllama') for t in ('gsm8k', 'mbpp')]
HAS_BNB = importlib.util.find_spec('bitsandbytes') is not None
TIMES = {}


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


@pytest.mark.parametrize('name', GPU_CONFIGS)
def test_rehearsal_runs_every_stage(name, workdir, capsys):
    real = load_config(name)
    t0 = time.time()
    more = [] if name == 'gemma2b-gsm8k' else ['--set', 'iterations=1']  # one config rehearses two iterations
    env = dict(os.environ)
    try:
        code = main(['-q', 'run', name, '--rehearse', '--data', str(DATA), '--workdir', str(workdir), *more])
    finally:  # `-q` and `--data` set the process's environment: not for the tests that follow
        os.environ.clear()
        os.environ.update(env)
    TIMES[name] = round(time.time() - t0)
    assert code == 0, capsys.readouterr().err[-2000:]
    run = workdir / 'runs' / f'{name}-rehearsal'
    c = yaml.safe_load((run / 'config.yaml').read_text())
    assert c['adapter'] == (real.adapter if HAS_BNB else 'lora') and real.adapter == 'qlora'
    assert _rank(run / 'iter_0' / 'model') == real.lora.r == 256
    for k in range(1, c['iterations'] + 1):
        _check_iteration(run, k, real)
    for k in range(c['iterations'] + 1):
        reports = json.loads((run / f'iter_{k}' / 'eval.json').read_text())
        assert sorted(reports) == sorted(real.eval_tasks)
        assert all(r['n'] > 0 for r in reports.values()), reports
