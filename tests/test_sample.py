"Edge cases of sipf.sample: kill-and-resume, determinism, quotas, dedup, time budget, stop strings, errors."

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path as FilePath

import pytest
import torch

from sipf.core import Path, Problem, read_jsonl
from sipf.tasks import Task
from sipf.sample import (
    Generation,
    SampleConfig,
    TransformersBackend,
    VLLMBackend,
    equation_key,
    near_duplicate,
    quota,
    sample_paths,
)

HERE = FilePath(__file__).resolve().parent


def toy_world(seed=0):
    "The toy world's tokenizer and its smallest Llama (random weights)."
    from sipf.toy import toy_tokenizer, toy_model

    tok = toy_tokenizer()
    return tok, toy_model(tok, size='tiny', seed=seed).eval()


class Sums(Task):
    "Minimal math task: steps are lines, the answer is the last word."

    name, kind, stop = 'sums', 'math', ['\n\n']

    def prompt(self, p, style='instruct'):
        return f"{p.question}\n"

    def split_steps(self, text):
        return [l for l in text.split('\n') if l.strip()]

    def extract_answer(self, text):
        return text.split()[-1] if text.split() else None

    def is_correct(self, p, text):
        return self.extract_answer(text) == p.answer


def arith_parity(n):
    "Toy arith questions judged by the parity of the text length: about half of a random model's samples are 'correct'."
    from sipf.arith import load_arith

    task = load_arith(split='test', n=n)
    task.is_correct = lambda p, text: len(text) % 2 == 0
    return task


class Code(Sums):
    kind = 'code'

    def extract_answer(self, text):
        return None

    def is_correct(self, p, text):
        return 'return a + b' in text


class Scripted:
    "A backend cycling through fixed texts; counts calls and prompts."

    def __init__(self, texts, delay=0.0):
        self.texts, self.delay, self.calls, self.i, self.prompts = texts, delay, 0, 0, 0

    def generate(self, prompts, n=1, temperature=0.0, max_new_tokens=256, stop=(), seed=None, **sampling):
        self.calls += 1
        self.prompts += len(prompts)
        time.sleep(self.delay)
        out = []
        for _ in prompts:
            out.append([Generation(self.texts[(self.i + j) % len(self.texts)], 3, True) for j in range(n)])
            self.i += n
        return out


def problems(k, answer='7'):
    return [Problem(f'q{i}', f'{i} + 3 = ?', answer) for i in range(k)]


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    "Tiny models: extra threads only add contention on a shared box; restored afterwards."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope='module')
def world():
    return toy_world()


# ---------- the sampler killed with SIGKILL, then resumed ----------

KILL_CFG = dict(
    n=4,
    max_new_tokens=8,
    n_pos=2,
    n_neg=2,
    max_rounds=6,
    time_budget=0,
    questions_per_round=2,
    seed=1,
    quota_mode='fixed',
)


def run_sampler(model_dir, out_path, n_questions=12):
    "What the subprocess runs (and the uninterrupted reference): the saved toy model on toy arith questions."
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, model = AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir).eval()
    task = arith_parity(n_questions)
    return sample_paths(
        task, TransformersBackend(model, tok, batch_size=16), task.problems, SampleConfig(**KILL_CFG), out_path
    )


def _spawn(model_dir, out_path):
    code = (
        f"import sys, torch; torch.set_num_threads(1); sys.path.insert(0, {str(HERE)!r}); import test_sample; "
        f"test_sample.run_sampler({str(model_dir)!r}, {str(out_path)!r})"
    )
    env = {**os.environ, 'TOKENIZERS_PARALLELISM': 'false', 'TQDM_DISABLE': '1'}
    return subprocess.Popen([sys.executable, '-c', code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _lines(p):
    return p.read_text().count('\n') if p.exists() else 0


def test_kill_and_resume_matches_uninterrupted(tmp_path, world):
    tok, model = world
    model.save_pretrained(tmp_path / 'model')
    tok.save_pretrained(tmp_path / 'model')
    ref = run_sampler(tmp_path / 'model', tmp_path / 'ref.jsonl')
    out = tmp_path / 'killed.jsonl'
    proc = _spawn(tmp_path / 'model', out)
    deadline = time.time() + 120
    while _lines(out) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"sampler ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_at_kill = _lines(out)
    assert 6 <= n_at_kill < len(ref), (n_at_kill, len(ref))
    resumed = _spawn(tmp_path / 'model', out)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    rows = read_jsonl(out, Path)
    assert len(rows) == len(ref) == 12 * 4
    assert len({p.id for p in rows}) == len(rows)
    assert sorted(l for l in out.read_text().splitlines()) == sorted((tmp_path / 'ref.jsonl').read_text().splitlines())


def test_rerun_of_finished_run_adds_nothing(tmp_path):
    task, be = Sums(problems(3)), Scripted(['1 + 3 = 4\nThe answer is 4', '3 + 4 = 7\nThe answer is 7'])
    cfg = SampleConfig(n=2, n_pos=1, n_neg=1, time_budget=0, max_rounds=4, quota_mode='fixed')
    first = sample_paths(task, be, task.problems, cfg, tmp_path / 's.jsonl')
    calls = be.calls
    assert sample_paths(task, be, task.problems, cfg, tmp_path / 's.jsonl') == first
    assert be.calls == calls


def test_existing_paths_count_toward_quotas(tmp_path):
    task = Sums(problems(1))
    out = tmp_path / 's.jsonl'
    from sipf.core import append_jsonl

    append_jsonl(out, [Path('q0', '3 + 4 = 7\nThe answer is 7', ['3 + 4 = 7', 'The answer is 7'], '7', True, 1)])
    be = Scripted(['a = 7\nThe answer is 7', 'b = 7\nThe answer is 7', 'wrong 8'])
    paths = sample_paths(
        task,
        be,
        task.problems,
        SampleConfig(n=3, n_pos=2, n_neg=1, time_budget=0, max_rounds=4, dedup='text', quota_mode='fixed'),
        out,
    )
    assert sum(p.correct for p in paths) == 2 and sum(not p.correct for p in paths) == 1
    assert paths[0].text == '3 + 4 = 7\nThe answer is 7'


# ---------- determinism ----------


def test_same_seed_same_jsonl(tmp_path, world):
    tok, model = world
    task = arith_parity(4)

    def run(name, seed, per_round=4):
        cfg = SampleConfig(
            n=4, max_new_tokens=12, max_rounds=2, seed=seed, questions_per_round=per_round, quota_mode='fixed'
        )
        sample_paths(task, TransformersBackend(model, tok, batch_size=8), task.problems, cfg, tmp_path / name)
        return (tmp_path / name).read_text()

    a = run('a.jsonl', 0)
    assert a and a == run('b.jsonl', 0)
    assert a != run('c.jsonl', 1)
    assert sorted(a.splitlines()) == sorted(run('d.jsonl', 0, per_round=1).splitlines())


def test_backend_seeded_and_batch_independent(world):
    tok, model = world
    prompts = ['Question: 1 + 2?\nAnswer:\n', 'Question: Ann has 12 pears and 13 more.\nAnswer:\n', '5 = ']
    be = TransformersBackend(model, tok, batch_size=2)
    kw = dict(n=3, temperature=1.0, max_new_tokens=10)
    assert be.generate(prompts, seed=5, **kw) == be.generate(prompts, seed=5, **kw)
    row = be.generate(prompts, seed=[1, 2, 3], **kw)
    assert TransformersBackend(model, tok, batch_size=64).generate(prompts[1:2], seed=[2], **kw)[0] == row[1]
    greedy = be.generate(prompts, n=2, max_new_tokens=10)
    assert all(gs[0] == gs[1] for gs in greedy)


# ---------- quotas, dedup, time budget ----------


def test_quota_schedule():
    assert [quota(8, 0.5, k) for k in (1, 2, 3, 4)] == [8, 4, 2, 1]
    assert [quota(8, 0.25, k) for k in (1, 2, 3)] == [8, 2, 1]
    assert quota(0, 0.5, 3) == 0


@pytest.mark.parametrize('iteration,decay,want', [(1, 0.5, (4, 2)), (2, 0.5, (2, 1)), (2, 0.25, (1, 1))])
def test_quotas_are_met_and_never_exceeded(tmp_path, iteration, decay, want):
    texts = [f'{i} + 3 = {i + 3}\nThe answer is {7 if i % 3 == 0 else i}' for i in range(60)]
    task = Sums(problems(5))
    cfg = SampleConfig(n=4, n_pos=4, n_neg=2, quota_decay=decay, max_rounds=50, time_budget=0, quota_mode='fixed')
    paths = sample_paths(task, Scripted(texts), task.problems, cfg, tmp_path / 's.jsonl', iteration=iteration)
    for p in task.problems:
        mine = [x for x in paths if x.problem_id == p.id]
        assert (sum(x.correct for x in mine), sum(not x.correct for x in mine)) == want
        assert all(x.iteration == iteration for x in mine)


def test_unmet_quotas_stop_at_max_rounds(tmp_path):
    be = Scripted(['3 + 4 = 8\nThe answer is 8'])
    task = Sums(problems(2))
    paths = sample_paths(
        task,
        be,
        task.problems,
        SampleConfig(n=2, max_rounds=3, time_budget=0, quota_mode='fixed'),
        tmp_path / 's.jsonl',
    )
    assert len(paths) == 2 and not any(p.correct for p in paths)  # one distinct wrong text per question
    assert be.calls == 3
    assert [r['problem_ids'] for r in read_jsonl(tmp_path / 's.rounds.jsonl')] == [['q0', 'q1']] * 3


def test_time_budget_stops_a_question(tmp_path):
    be = Scripted([f'{i} = 8\nThe answer is 8' for i in range(1000)], delay=0.05)
    task = Sums(problems(2))
    cfg = SampleConfig(n=2, max_rounds=1000, time_budget=0.1, questions_per_round=2)
    sample_paths(task, be, task.problems, cfg, tmp_path / 's.jsonl')
    assert 1 <= be.calls <= 5  # each round charges >= 0.025 s per question: at most ~4 rounds, never 1000


def test_rounds_keep_batches_full(tmp_path):
    be = Scripted(['3 + 4 = 7\nThe answer is 7', '9\nThe answer is 9'])
    task = Sums(problems(10))
    sample_paths(
        task,
        be,
        task.problems,
        SampleConfig(n=2, n_pos=1, n_neg=1, questions_per_round=4, time_budget=0, max_rounds=4, quota_mode='fixed'),
        tmp_path / 's.jsonl',
    )
    assert be.calls == 3 and be.prompts == 10


def test_equation_dedup():
    a = equation_key(['Tom has 3 + 4 = 7 apples.', 'He eats 2: 7 - 2 = 5.', 'The answer is 5'], '5')
    assert a == equation_key(['3+4=7', 'so 7 - 2 = 5', 'The answer is 5'], '5')
    assert a != equation_key(['3 + 4 = 7', '7 - 2 = 5', 'The answer is 6'], '6')
    assert a != equation_key(['4 + 3 = 7', '7 - 2 = 5', 'The answer is 5'], '5')
    assert equation_key(['(12 - 2) * 3 = 30'], '30') == (('(12-2)*3=30',), '30')


def test_dedup_in_sample_paths(tmp_path):
    texts = [
        '3 + 4 = 7\nThe answer is 7',
        'So 3 + 4 = 7\nThe answer is 7',
        '3+4 = 7\nThe answer is 7',
        '4 + 3 = 7\nThe answer is 7',
    ]
    task = Sums(problems(1))
    cfg = SampleConfig(n=4, n_pos=10, n_neg=10, max_rounds=2, time_budget=0, quota_mode='fixed')
    eq = sample_paths(task, Scripted(texts), task.problems, cfg, tmp_path / 'eq.jsonl')
    assert [p.text for p in eq] == [texts[0], texts[3]]
    exact = sample_paths(
        task, Scripted(texts), task.problems, SampleConfig(**{**vars(cfg), 'dedup': 'text'}), tmp_path / 't.jsonl'
    )
    assert len(exact) == 4 and len({p.id for p in exact}) == 4


def test_code_dedup_by_edit_distance(tmp_path):
    progs = [
        'def f(a, b):\n    return a + b\n',
        'def f(x, y):\n    return x + y\n',
        'def f(a, b):\n    return a + b \n',
        'def f(a, b):\n    t = [a, b]\n    s = 0\n    for v in t:\n        s += v\n    return s\n',
    ]
    assert near_duplicate(progs[1], progs[:1], 0.8) and not near_duplicate(progs[3], progs[:1], 0.8)
    task = Code(problems(1))
    paths = sample_paths(
        task,
        Scripted(progs),
        task.problems,
        SampleConfig(n=4, edit_threshold=0.8, max_rounds=1, time_budget=0),
        tmp_path / 'c.jsonl',
    )
    assert [p.text for p in paths] == [progs[0], progs[3]]
    assert [p.correct for p in paths] == [True, False]


# ---------- stop strings ----------


def test_stop_strings_cut_text_and_stop_rows(world):
    tok, model = world
    be = TransformersBackend(model, tok, batch_size=8)
    prompts = ['1 + 2 = ', '12 + 13 + 14 = ', '5 = ', '7 + 7 = ']
    full = be.generate(prompts, n=4, temperature=1.0, max_new_tokens=16, seed=[1, 2, 3, 4])
    letters = [ch for gs in full for g in gs for ch in g.text[2:] if ch.isascii() and ch.isalpha()]
    stop = ['\n', *list(dict.fromkeys(letters))[:2]]  # stop strings that the samples do contain
    cut = be.generate(prompts, n=4, temperature=1.0, max_new_tokens=16, stop=stop, seed=[1, 2, 3, 4])
    n_cut = 0
    for fs, cs in zip(full, cut):
        for f, c in zip(fs, cs):
            assert not any(s in c.text for s in stop)
            assert f.text.startswith(c.text)
            hit = min([f.text.index(s) for s in stop if s in f.text], default=None)
            if hit is not None:
                n_cut += 1
                assert c.text == f.text[:hit] and c.finished and c.n_tokens <= f.n_tokens
            else:
                assert c == f
    assert n_cut >= 2


# ---------- errors ----------


def test_errors(tmp_path, world):
    tok, model = world
    be = TransformersBackend(model, tok)
    with pytest.raises(ValueError, match='empty prompt list'):
        be.generate([])
    with pytest.raises(ValueError, match='single str'):
        be.generate('1 + 2 = ')
    with pytest.raises(ValueError, match='2 seeds for 1 prompts'):
        be.generate(['1'], seed=[1, 2])
    from transformers import PreTrainedTokenizerFast

    with pytest.raises(ValueError, match='has no pad token'):
        TransformersBackend(model, PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer))
    task = Sums(problems(2))
    with pytest.raises(ValueError, match='empty problem list'):
        sample_paths(task, be, [], SampleConfig(), tmp_path / 'x.jsonl')
    with pytest.raises(ValueError, match="did you mean 'edit'"):
        sample_paths(task, be, task.problems, SampleConfig(dedup='edits'), tmp_path / 'x.jsonl')
    with pytest.raises(ValueError, match='quota_decay'):
        sample_paths(task, be, task.problems, SampleConfig(quota_decay=2), tmp_path / 'x.jsonl')
    with pytest.raises(ValueError, match="duplicate problem id 'q0'"):
        sample_paths(task, be, task.problems * 2, SampleConfig(), tmp_path / 'x.jsonl')
    assert not (tmp_path / 'x.jsonl').exists()


def test_vllm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, 'vllm', None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match='VLLMBackend needs vllm'):
        VLLMBackend('some/model')


def test_vllm_mapping_with_a_fake_module(monkeypatch):
    seen = {}

    class LLM:
        def __init__(self, **kw):
            seen['init'] = kw

        def generate(self, prompts, params, use_tqdm=True):
            seen['params'] = params
            one = params[0] if isinstance(params, list) else params
            return [
                types.SimpleNamespace(
                    outputs=[
                        types.SimpleNamespace(
                            text=f'{p}:{j}', token_ids=[0] * (j + 1), finish_reason='length' if j else 'stop'
                        )
                        for j in range(one.n)
                    ]
                )
                for p in prompts
            ]

    monkeypatch.setitem(
        sys.modules, 'vllm', types.SimpleNamespace(LLM=LLM, SamplingParams=lambda **kw: types.SimpleNamespace(**kw))
    )
    be = VLLMBackend('m')
    assert seen['init'] == {'model': 'm', 'enable_prefix_caching': True}
    out = be.generate(['a', 'b'], n=2, temperature=1.0, max_new_tokens=5, stop=('\n\n',), seed=9)
    assert vars(seen['params']) == dict(n=2, temperature=1.0, max_tokens=5, stop=['\n\n'], seed=9)
    assert out == [
        [Generation('a:0', 1, True), Generation('a:1', 2, False)],
        [Generation('b:0', 1, True), Generation('b:1', 2, False)],
    ]
    assert be.generate(['a'], n=3)[0] == [Generation('a:0', 1, True)] * 3  # greedy: one draw repeated
    be.generate(['a', 'b'], n=2, temperature=1.0, seed=[4, 5])
    assert [p.seed for p in seen['params']] == [4, 5]


def test_greedy_gets_one_round(tmp_path):
    be = Scripted(['3 + 4 = 8\nThe answer is 8'])
    task = Sums(problems(3))
    paths = sample_paths(
        task, be, task.problems, SampleConfig(n=1, temperature=0.0, max_rounds=4), tmp_path / 's.jsonl'
    )
    assert be.calls == 1 and len(paths) == 3


def test_row_seeds_switch(tmp_path):
    seen = []

    class Seeded(Scripted):
        row_seeds = True

        def generate(self, prompts, seed=None, **kw):
            seen.append(seed)
            return super().generate(prompts, seed=seed, **kw)

    task = Sums(problems(2))
    cfg = SampleConfig(n=1, max_rounds=1, time_budget=0)
    sample_paths(task, Seeded(['x 7']), task.problems, cfg, tmp_path / 'a.jsonl')
    sample_paths(
        task, Seeded(['x 7']), task.problems, SampleConfig(**{**vars(cfg), 'row_seeds': False}), tmp_path / 'b.jsonl'
    )
    sample_paths(task, Scripted(['x 7']), task.problems, cfg, tmp_path / 'c.jsonl')  # a backend without row_seeds
    assert isinstance(seen[0], list) and len(seen[0]) == 2 and len(set(seen[0])) == 2
    assert isinstance(seen[1], int)


# ---------- official quotas (self_sampling.py), on a scripted backend with a fake clock ----------


class FakeClock:
    "Advances `step` seconds per reading; the sampler reads it before and after each call: `step` s per call."

    def __init__(self, step):
        self.now, self.step = 0.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def test_official_until_positive_quota_keeps_every_unique_negative(tmp_path):
    negs = [f'{i} + 100 = {i + 100}\nThe answer is {i + 100}' for i in range(39)]
    texts = negs[:20] + ['3 + 4 = 7\nThe answer is 7'] + negs[20:] + ['   ', '2 + 5 = 7\nThe answer is 7']
    be = Scripted(texts)  # 42 texts, 30 per call: one positive in each of the first two calls
    task = Sums(problems(1))
    cfg = SampleConfig(n=30, n_pos=2, n_neg=1, time_budget=1000)
    paths = sample_paths(task, be, task.problems, cfg, tmp_path / 's.jsonl', clock=FakeClock(1.0))
    assert sum(p.correct for p in paths) == 2 and be.calls == 2  # calls until the second positive
    assert sum(not p.correct for p in paths) == 39  # every unique negative, far over n_neg; the blank one skipped
    assert all(p.answer is not None for p in paths)


def test_official_time_is_the_whole_call_per_question(tmp_path):
    task = Sums(problems(2))
    for mode, calls in [('official', 4), ('fixed', 7)]:  # 10 s per call: > 30 s after 4 calls, or 7 halves
        be = Scripted([f'{i} = 8\nThe answer is 8' for i in range(1000)])
        cfg = SampleConfig(n=2, n_pos=1, n_neg=1000, time_budget=30, quota_mode=mode)
        sample_paths(task, be, task.problems, cfg, tmp_path / f'{mode}.jsonl', clock=FakeClock(10.0))
        assert be.calls == calls, (mode, be.calls)
        log = read_jsonl(tmp_path / f'{mode}.rounds.jsonl')
        assert [r['seconds'] for r in log] == [10.0] * calls and log[-1]['done'] == ['q0', 'q1']


def test_official_later_iteration_quota_and_dedup_from_previous(tmp_path):
    task = Sums(problems(1))
    prev = [
        Path('q0', f'{i} + 4 = 7\nThe answer is 7', [f'{i} + 4 = 7', 'The answer is 7'], '7', True, 1) for i in range(3)
    ]  # 3 kept positives: the next quota is ceil(3 / 2) = 2
    be = Scripted(
        [
            '0 + 4 = 7\nThe answer is 7',
            '1 + 4 = 7\nThe answer is 7',
            '5 + 2 = 7\nThe answer is 7',
            '9\nThe answer is 9',
            '6 + 1 = 7\nThe answer is 7',
        ]
    )
    cfg = SampleConfig(n=1, time_budget=1000)
    paths = sample_paths(
        task, be, task.problems, cfg, tmp_path / 's.jsonl', iteration=2, previous=prev, clock=FakeClock(1.0)
    )
    assert [p.text.split('\n')[0] for p in paths] == ['5 + 2 = 7', '9', '6 + 1 = 7']  # repeats of previous dropped
    assert be.calls == 5


def test_official_code_quota_counts_unique_programs(tmp_path):
    import hashlib

    def salt(i):
        return hashlib.sha256(str(i).encode()).hexdigest()[:48]

    progs = [f'def f(a, b):\n    return a + b\n    # {salt(i)}\n' for i in range(29)]  # far apart in edit distance
    task = Code(problems(1))
    be = Scripted(progs)
    paths = sample_paths(
        task,
        be,
        task.problems,
        SampleConfig(n=4, n_code=10, time_budget=1000),
        tmp_path / 'c.jsonl',
        clock=FakeClock(1.0),
    )
    assert len(paths) == 12 and be.calls == 3  # 10 unique wanted: whole calls of 4, both kinds count
    prev = sample_paths(
        task,
        Scripted(progs),
        task.problems,
        SampleConfig(n=4, time_budget=1000),
        tmp_path / 'd.jsonl',
        iteration=2,
        previous=paths,
        clock=FakeClock(1.0),
    )
    assert len(prev) == 8  # ceil(12 / 2) = 6 more wanted, in calls of 4; the 12 already kept are duplicates


def test_sampling_that_never_gives_up_is_refused(tmp_path):
    task = Sums(problems(1))
    with pytest.raises(ValueError, match='never give up'):
        sample_paths(task, Scripted(['x']), task.problems, SampleConfig(time_budget=0), tmp_path / 's.jsonl')


# ---------- GSM8K dedup with calculator annotations (official reasoning_path_selection) ----------

GSM8K_TRAIN = HERE.parent.parent / 'shared' / 'data' / 'gsm8k' / 'train.jsonl'


def test_dedup_key_sees_every_gsm8k_equation():
    import json
    import re

    from sipf.sample import annotations, written_equations

    rows = [json.loads(line) for line in GSM8K_TRAIN.read_text().splitlines()]  # fails, not skips, without the data
    assert len(rows) == 7473
    n_ann = n_keyed = n_written = 0
    for r in rows:
        body = r['answer'].rpartition('####')[0]
        ann = [a.replace(' ', '') for a in re.findall(r'<<([^>]*)>>', body)]
        key, _ = equation_key(body.split('\n'), None)
        if ann:
            assert list(key) == ann == annotations(body), body
            n_keyed += len(key)
        n_ann += len(ann)
        stripped = re.sub(r'<<[^>]*>>', '', body)
        n_written += min(len(written_equations(stripped)), len(ann))
    assert n_ann == n_keyed == 23716
    assert n_written >= 23544  # stripped of annotations: every equation written with '=' (172 are in words)


def test_wrong_annotation_dropped_and_repeat_kept_if_farther(tmp_path):
    texts = [
        '2 * 3 = <<2*3=6>>6\nThe answer is 6',
        '2 * 3 = <<2*3=5>>5\nThe answer is 5',
        '1 + 5 = <<1+5=6>>6\nThe answer is 6',
        'First of all, twice three makes <<2*3=6>>6 in all.\nThe answer is 6',
    ]
    task = Sums(problems(1, answer='6'))
    paths = sample_paths(task, Scripted(texts), task.problems, SampleConfig(n=4, max_rounds=1), tmp_path / 's.jsonl')
    assert [p.text for p in paths] == [texts[3], texts[2]]
