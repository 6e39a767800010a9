"sipf.pipeline: kill-and-resume equals an uninterrupted run, config errors, the table of methods."

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path as FilePath
import pytest
from sipf.core import Pair, Path, append_jsonl, read_jsonl, write_json, write_jsonl
from sipf.pipeline import PRESETS, load_config, run, check_config, run_step

HERE = FilePath(__file__).resolve()
DELAY = 0.03


def _h(*parts) -> str:
    return hashlib.sha256('|'.join(map(str, parts)).encode()).hexdigest()[:8]


class SlowStages:
    "Deterministic stand-in stages that take a little time per record, so a kill can land inside any of them."

    def m0(self, out, train=True):
        out.mkdir()
        time.sleep(5 * DELAY)
        (out / 'w.txt').write_text('m0')

    def _append(self, out, make, n):
        have = len(read_jsonl(out))  # resume: what a killed run already wrote
        for i in range(have, n):
            time.sleep(DELAY)
            append_jsonl(out, [make(i)])

    def sample(self, out, model, k, previous=()):
        w = (model / 'w.txt').read_text()
        self._append(
            out, lambda i: Path(f'q{i % 4}', f'{_h(w, k, i)}', steps=['a', 'b'], correct=int(_h(w, i), 16) % 3 == 0), 12
        )

    def simulate(self, out, samples, model):
        paths = read_jsonl(samples, Path)
        self._append(out, lambda i: {'path_id': paths[i].id, 'labels': [1, int(paths[i].correct)]}, 6)

    def train_prm(self, out, labels, samples, m0):
        out.mkdir()
        time.sleep(5 * DELAY)
        (out / 'w.txt').write_text(_h(labels.read_text()))

    def score(self, out, prm, samples):
        w = (prm / 'w.txt').read_text()
        write_jsonl(out, [dict(r, meta={'reward': int(_h(w, r['id']), 16) % 100 / 100}) for r in read_jsonl(samples)])

    def pairs(self, out, data=None):
        rows = read_jsonl(data) if data else [{'id': 'gold', 'problem_id': 'q0'}]
        write_jsonl(out, [Pair(r['problem_id'], 'Q', r['id'], 'x', 0.5) for r in rows[::2]])

    def base(self, out):
        out.mkdir()
        (out / 'w.txt').write_text('base')

    def align(self, out, model, *pairs):
        out.mkdir()
        time.sleep(5 * DELAY)
        (out / 'w.txt').write_text(_h((model / 'w.txt').read_text(), *(p.read_text() for p in pairs)))

    def evaluate(self, out, model):
        time.sleep(DELAY)
        write_json(
            out,
            {
                'arith': {
                    'score': int((model / 'w.txt').read_text()[:4], 16) % 1000 / 1000
                    if (model / 'w.txt').read_text() != 'm0'
                    else 0.1
                }
            },
        )


def _config(runs_dir, method='sipf', name='t'):
    return load_config(name=name, method=method, runs_dir=str(runs_dir))


def _start(runs_dir, method='sipf'):
    return subprocess.Popen([sys.executable, str(HERE), str(runs_dir), method], cwd=HERE.parent)


def _files(run_dir: FilePath) -> dict:
    "Every file of a run (through its links), by relative path -> bytes."
    out = {}
    for root, dirs, files in os.walk(run_dir, followlinks=True):
        for f in files:
            p = FilePath(root) / f
            out[str(p.relative_to(run_dir))] = p.read_bytes()
    return out


def _kill_when(proc, cond, timeout=60):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, "run finished before the kill point"
        assert time.time() - t0 < timeout, "kill point never reached"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _lines(cache, pattern):
    return max([len(p.read_text().splitlines()) for p in cache.glob(pattern)] or [0])


def test_kill_and_resume_equals_uninterrupted(tmp_path):
    ref = tmp_path / 'ref'
    assert subprocess.run([sys.executable, str(HERE), str(ref), 'sipf'], cwd=HERE.parent).returncode == 0
    runs = tmp_path / 'killed'
    cache = runs / '.cache'
    points = [
        lambda: _lines(cache, 'sample-*/samples.jsonl') >= 5,  # inside iteration-1 sampling
        lambda: any(cache.glob('prm-*/prm.partial')),  # inside PRM training
        lambda: (
            _lines(cache, 'simulate-*/labels.jsonl') >= 3 and len(list(cache.glob('simulate-*'))) >= 2
        ),  # iteration 2's labels
        lambda: len(list(cache.glob('align-*/model.partial'))) >= 1 and len(list(cache.glob('align-*/DONE'))) >= 2,
    ]  # iteration 3's alignment
    for cond in points:
        _kill_when(_start(runs), cond)
    assert _start(runs).wait() == 0
    got, want = _files(runs / 't'), _files(ref / 't')
    assert sorted(got) == sorted(want)
    for f in (got, want):
        f['config.yaml'] = f['config.yaml'].replace(str(runs).encode(), b'R').replace(str(ref).encode(), b'R')
    for k in want:
        assert got[k] == want[k], f"{k} differs after kill + resume"
    ids = [r['id'] for r in read_jsonl(runs / 't' / 'iter_1' / 'samples.jsonl')]
    assert len(ids) == len(set(ids)) == 12


def test_rerun_finished_is_a_noop_and_presets_share_prefix(tmp_path):
    rows = run(_config(tmp_path), SlowStages())
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / '.cache').rglob('*') if p.is_file()}
    assert run(_config(tmp_path), SlowStages()) == rows
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / '.cache').rglob('*') if p.is_file()}
    run(_config(tmp_path, 'siof', 't2'), SlowStages())
    assert len(list((tmp_path / '.cache').glob('m0-*'))) == 1  # one M0 for both
    assert len(list((tmp_path / '.cache').glob('sample-*'))) == 5  # iteration-1 samples shared
    assert (tmp_path / 't' / 'iter_1' / 'samples.jsonl').resolve() == (
        tmp_path / 't2' / 'iter_1' / 'samples.jsonl'
    ).resolve()
    assert (tmp_path / 't' / 'iter_2' / 'samples.jsonl').resolve() != (
        tmp_path / 't2' / 'iter_2' / 'samples.jsonl'
    ).resolve()


def test_same_name_different_config_refuses(tmp_path):
    run(_config(tmp_path, 'rft'), SlowStages())
    with pytest.raises(ValueError, match='different config'):
        run(_config(tmp_path, 'siof'), SlowStages())


def test_results_rows(tmp_path):
    rows = run(_config(tmp_path, 'sipf'), SlowStages())
    assert [r['name'] for r in rows] == ['SFT', 'SIPF-Iter1', 'SIPF-Iter2', 'SIPF-Iter3']
    assert rows[1]['samples'] == 12 and rows[1]['labelled'] == 6 and rows[1]['pairs'] == 6
    assert (tmp_path / 't' / 'plots' / 'iterations.png').stat().st_size > 1000
    assert 'SIPF-Iter3' in (tmp_path / 't' / 'results.md').read_text()


def test_config_typos_name_key_and_closest():
    with pytest.raises(KeyError, match=r"unknown config key 'iteratoins' \(did you mean 'iterations'\?\)"):
        load_config(overrides=['iteratoins=2'])
    with pytest.raises(KeyError, match="did you mean 'sipf'"):
        load_config(method='spif')
    with pytest.raises(KeyError, match=r"'eval' key 'batchsize' \(did you mean 'batch_size'\?\)"):
        check_config({'eval': {'batchsize': 2}})
    with pytest.raises(ValueError, match='not key=value'):
        load_config(overrides=['iterations'])
    with pytest.raises(ValueError, match="section 'sample' must be a mapping"):
        check_config({'sample': 3})
    with pytest.raises(FileNotFoundError, match="no config file 'nope'"):
        load_config('nope')


def test_section_typo_against_stage_config():
    pytest.importorskip('sipf.sample')
    with pytest.raises(KeyError, match=r"'sample' key 'temprature' \(did you mean 'temperature'\?\)"):
        load_config(overrides=['sample.temprature=0.5'])


def test_presets_cover_all_methods_and_ablations():
    for m in 'cot sft rft prft star srf psrf rpo siof sipf gold no-pf no-or no-pfor'.split():
        assert m in PRESETS
    p = PRESETS
    assert (p['sipf'].feedback, p['sipf'].objective, p['sipf'].iterations) == ('process', 'orpo', 3)
    assert (p['siof'].feedback, p['no-pf'].feedback) == ('outcome', 'outcome')
    assert (p['no-or'].objective, p['no-pfor'].objective, p['no-pfor'].feedback) == ('nll', 'nll', 'outcome')
    assert p['star'].restart and p['star'].sampling == 'greedy'
    assert (p['srf'].objective, p['psrf'].feedback, p['rpo'].objective) == ('dpo', 'process', 'rpo')
    assert p['cot'].iterations == 0 and p['gold'].feedback == 'gold'


def test_bundled_configs_load():
    from sipf.pipeline import bundled_configs

    names = bundled_configs()
    for n in ('toy', 'toy-quick'):
        assert n in names
    gpu = [n for n in names if load_config(n).gpu]
    assert len(gpu) >= 6, gpu
    for n in names:
        load_config(n)  # every shipped config passes the key checks


def test_step_failure_leaves_no_done(tmp_path):
    def boom(out):
        out.write_text('half')
        raise RuntimeError('stage failed')

    with pytest.raises(RuntimeError):
        run_step(tmp_path / 'c', tmp_path / 'r', 'iter_1/x.jsonl', 'sample', boom)
    assert not list((tmp_path / 'c').glob('*/DONE')) and not (tmp_path / 'r' / 'iter_1' / 'x.jsonl').exists()


if __name__ == '__main__':  # the subprocess the kill test starts and kills
    runs_dir, method = sys.argv[1], sys.argv[2]
    run(_config(runs_dir, method), SlowStages())


def test_stage_keys_follow_the_codes_defaults():
    "Every field of a stage's section is in its key: a default changed in the code (not in the YAML) changes the key."
    import dataclasses
    from sipf.pipeline import _settings, load_config

    c = load_config('toy')
    before = _settings(c, 'simulate')
    changed = dataclasses.replace(c, simulate=dataclasses.replace(c.simulate, chunk_size=3))
    assert _settings(changed, 'simulate') != before
    assert _settings(c, 'simulate') == before


def test_toy_train_set_is_n_train_for_m0_and_every_stage():
    "Generated arith splits have the sizes asked for (not the generator's 2,000 / 300); M0 trains on the run's set."
    from sipf.pipeline import Stages, _toy_m0_config
    from sipf.toy import toy_tasks

    c = load_config('toy', n_train=2500, n_eval=350)
    s = Stages(c)
    assert len(s.problems()) == 2500 and len(s.task('arith', 'test').problems) == 350
    m0_train, _ = toy_tasks(_toy_m0_config(c), n_test=0)
    assert [p.id for p in m0_train.problems] == [p.id for p in s.problems()]


def test_numbers_from_yaml_strings_and_clear_errors(tmp_path):
    "PyYAML reads `3e-5` as a string: it must reach the stage configs as a float; a non-number fails before any work."
    c = load_config('toy', ['align.lr=3e-5', 'prm.lr=1e-3', 'n_eval=100'])
    assert c.align.lr == 3e-5 and isinstance(c.align.lr, float) and c.prm.lr == 1e-3
    f = tmp_path / 'c.yaml'
    f.write_text('model: toy\nalign: {lr: 5e-5, max_steps: 10}\n')
    assert load_config(str(f)).align.lr == 5e-5
    for bad, msg in [
        ('align.lr=fast', "config key 'align.lr' must be a number, got 'fast'"),
        ('n_train=many', "config key 'n_train' must be an integer, got 'many'"),
        ('sample.n=true', "config key 'sample.n' must be an integer, got True"),
    ]:
        with pytest.raises(ValueError, match=msg):
            load_config('toy', [bad])
