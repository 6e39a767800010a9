"The sipf command: `sipf demo --quick` end to end, and bad input failing fast with one clear line."

import json
import subprocess
import sys
import time
import pytest

SIPF = [sys.executable, '-c', 'import sys; from sipf.cli import main; sys.exit(main())']


def sipf(*args, cwd=None, timeout=900):
    "Run the `sipf` command in a subprocess (the real entry point)."
    return subprocess.run([*SIPF, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def sipf_inproc(capsys, *args):
    "`sipf.cli.main` in this process (fast: no interpreter start-up per error case)."
    import os

    from sipf.cli import main

    env = dict(os.environ)
    try:
        code = main(['-q', *args])
    finally:  # `-q` turns progress bars off for the process: not for the tests that follow
        os.environ.clear()
        os.environ.update(env)
    out = capsys.readouterr()
    return _Result(code, out.out, out.err)


def _one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('sipf: error: '), r.stderr[-2000:]
    assert 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles:
        assert n in last, last


def test_config_typo(tmp_path, capsys):
    r = sipf_inproc(capsys, 'run', 'toy-quick', '--set', 'itrations=2', '--set', f'runs_dir={tmp_path}')
    _one_line_error(r, "unknown config key 'itrations'", "did you mean 'iterations'")
    assert not list(tmp_path.iterdir())  # nothing started


def test_section_typo(tmp_path, capsys):
    r = sipf_inproc(capsys, 'run', 'toy-quick', '--set', 'align.bta=0.2', '--set', f'runs_dir={tmp_path}')
    _one_line_error(r, "'align' key 'bta'", "did you mean 'beta'")


def test_missing_config_file(capsys):
    _one_line_error(sipf_inproc(capsys, 'run', 'no-such-config.yaml'), "no config file 'no-such-config.yaml'")


def test_unknown_model_fails_before_work(tmp_path, capsys):
    t0 = time.time()
    r = sipf_inproc(capsys, 'run', 'toy-quick', '--set', 'model=./models/typo', '--set', f'runs_dir={tmp_path}')
    _one_line_error(r, "unknown model './models/typo'")
    assert not list(tmp_path.iterdir()) and time.time() - t0 < 120


def test_bad_data_fails_before_work(tmp_path, capsys):
    bad = tmp_path / 'train.jsonl'
    bad.write_text('{"id": "a", "question": "q"\n')
    r = sipf_inproc(capsys, 'run', 'toy-quick', '--set', f'data.arith={bad}', '--set', f'runs_dir={tmp_path / "runs"}')
    _one_line_error(r, 'train.jsonl')
    assert not (tmp_path / 'runs').exists()


def test_unknown_method_and_task(capsys):
    _one_line_error(sipf_inproc(capsys, 'run', 'toy-quick', '--set', 'method=sipff'), "did you mean 'sipf'")
    _one_line_error(sipf_inproc(capsys, 'eval', 'no/model', '--task', 'gsm8kk'), "unknown task 'gsm8kk'")


def test_console_entry_point_error():
    r = sipf('run', 'toy-quick', '--set', 'methd=sipf')
    _one_line_error(r, "unknown config key 'methd'", "did you mean 'method'")


def test_demo_quick_end_to_end(tmp_path):
    t0 = time.time()
    r = sipf('demo', '--quick', '--runs-dir', str(tmp_path), timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ('SFT', 'SIPF-Iter1', 'SIPF-Iter3', 'SIOF-Iter3', 'RFT', 'SFT-gold-Iter3'):
        assert f'| {name} |' in r.stdout, r.stdout
    res = json.loads((tmp_path / 'results.json').read_text())
    assert len(res['mean']) == 1 + 3 + 3 + 1 + 3
    assert (tmp_path / 'plots' / 'iterations.png').exists()
    _every_stage_has_data(tmp_path)
    print(f"demo --quick took {time.time() - t0:.0f} s")


def _weights(model_dir) -> str:
    import hashlib

    return hashlib.sha256((model_dir / 'model.safetensors').read_bytes()).hexdigest()


def _every_stage_has_data(runs):
    "The smoke run smoke-tests: each iteration of SIPF and SIOF trains on pairs and changes the model."
    for method in ('sipf', 'siof'):
        run = runs / f'seed0-{method}'
        for k in (1, 2, 3):
            it = run / f'iter_{k}'
            assert (it / 'pairs.jsonl').read_text().strip(), f"{method} iteration {k}: no pairs"
            assert _weights(it / 'model') != _weights(run / f'iter_{k - 1}' / 'model'), f"{method} M{k} == M{k - 1}"
    labels = (runs / 'seed0-sipf' / 'iter_1' / 'labels.jsonl').read_text().splitlines()
    assert labels and any('"labels": [1' in line for line in labels), 'the simulator labelled no step right'


BAD_INPUT = [  # each was a traceback (exit 1) before the typed config; now one line naming the key, file or model
    (['run', 'toy-quick', '--set', 'task.name=gsm9k'], "config key 'task' is 'arith', not a section"),
    (['run', 'toy-quick', '--set', 'sample=5', '--set', 'sample.n=3'], "config key 'sample' is 5, not a section"),
    (['run', 'toy-quick', '--set', 'align.lr.x=1'], "config key 'align.lr' is 0.0001, not a section"),
    (['run', 'toy-quick', '--set', 'align.lrr=1'], "unknown 'align' key 'lrr' (did you mean 'lr'?)"),
    (['run', 'toy-quick', '--set', 'sample.prompt_style=cot'], "set 'prompt_style' at the top level"),
    (['eval', '/nonexistent'], "unknown model '/nonexistent'"),
    (['eval', '/nonexistent', '--task', 'gsm8k'], "unknown model '/nonexistent'"),
]


@pytest.mark.parametrize('args,needle', BAD_INPUT, ids=[' '.join(a[2:] or a[:2]) for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_fast(args, needle, capsys):
    t0 = time.time()
    _one_line_error(sipf_inproc(capsys, *args), needle)
    assert time.time() - t0 < 1.0


BAD_FILES = [('align: {lr: 1e-4\nx: [\n', 'malformed YAML at line 2'), ('- a\n', 'got a list')]


@pytest.mark.parametrize('text,needle', BAD_FILES)
def test_bad_config_file_names_the_file(text, needle, tmp_path, capsys):
    f = tmp_path / 'my.yaml'
    f.write_text(text)
    _one_line_error(sipf_inproc(capsys, 'run', str(f)), 'my.yaml', needle)


def test_quiet_prints_no_progress_bars():
    "-q: only warnings and the final summary (library bars read TQDM_DISABLE; sipf's own bars ask progress_off)."
    code = (
        "from sipf.cli import quiet_progress; quiet_progress()\n"
        "from tqdm.auto import tqdm; from sipf.core import progress_off\n"
        "list(tqdm(range(3), desc='library')); list(tqdm(range(3), desc='ours', disable=progress_off(True)))"
    )
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.returncode == 0 and 'library' not in r.stderr and 'ours' not in r.stderr, r.stderr


def test_export_writes_hf_formats_and_an_unreachable_hub_is_one_line(tmp_path):
    "Issue 12: `sipf export RUN OUT --push-to REPO`: model + datasets on disk; no hub: one line, exit 2, export kept."
    from sipf.core import Pair, write_jsonl

    run = tmp_path / 'run'
    (run / 'iter_1' / 'model').mkdir(parents=True)
    (run / 'config.yaml').write_text('name: run\n')
    (run / 'iter_1' / 'model' / 'config.json').write_text('{}')
    write_jsonl(run / 'iter_1' / 'pairs.jsonl', [Pair('q1', 'Q', 'a', 'b')])
    env = {'HF_ENDPOINT': 'http://127.0.0.1:9', 'PATH': '/usr/bin:/bin'}
    r = subprocess.run(
        [*SIPF, '-q', 'export', str(run), str(tmp_path / 'out'), '--push-to', 'me/sipf-run'],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0, r.stderr
    assert "cannot push to the hub repository 'me/sipf-run'" in r.stderr and 'Traceback' not in r.stderr
    assert (tmp_path / 'out' / 'model' / 'config.json').exists() and (tmp_path / 'out' / 'datasets').is_dir()
