"Edge cases of sipf.simulate: label logic, strategies on a fake simulator, determinism, and a labeller killed mid-run."

import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from sipf.core import Path, Problem, StepLabels, read_jsonl
from sipf.simulate import (
    SimulateConfig,
    first_error,
    first_zero,
    hard_labels,
    label_paths,
    rollout_seed,
    step_decided,
    ROLLOUT_STRATEGIES,
)
from sipf.tasks import Task


# ---------------------------------------------------------------- fixtures: a toy task and a fake simulator
class LineTask(Task):
    "Steps are lines; the last line is `The answer is N`."

    name, kind, stop = 'lines', 'math', ['\n\n']

    def prompt(self, problem, style='instruct'):
        return f'Q: {problem.question}\nA:\n'

    def split_steps(self, text):
        return [l for l in text.split('\n') if l.strip()]

    def extract_answer(self, text):
        m = re.findall(r'The answer is (-?\d+)', text)
        return m[-1] if m else None

    def is_correct(self, problem, completion):
        return self.extract_answer(completion) == problem.answer


@dataclass
class Gen:
    text: str
    n_tokens: int
    finished: bool = True


def _h(*parts) -> int:
    return int(hashlib.sha256('|'.join(map(str, parts)).encode()).hexdigest()[:8], 16)


class FakeSim:
    """Deterministic in (prompt, seed): a prefix whose lines all say `ok` hits with probability 0.6, one with a `bad`
    line with probability `p_bad`. Counts calls and rows; optional sleep per call (for the kill test)."""

    def __init__(self, row_seeds=True, p_bad=0.05, sleep=0.0):
        self.row_seeds, self.p_bad, self.sleep, self.calls, self.rows, self.seeds = row_seeds, p_bad, sleep, 0, 0, []

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=64, stop=(), seed=None, **sampling):
        assert n == 1
        self.calls += 1
        self.rows += len(prompts)
        self.seeds.append(seed)
        if self.sleep:
            time.sleep(self.sleep)
        seeds = seed if isinstance(seed, list) else [_h(seed, i) for i in range(len(prompts))]
        out = []
        for p, s in zip(prompts, seeds):
            rate = self.p_bad if 'bad' in p.split('\nA:\n')[1] else 0.6
            hit = _h(p, s) % 1000 < rate * 1000
            out.append([Gen(f'x\nThe answer is {1 if hit else 0}', 1 + _h(p, s, 't') % 5)])
        return out


def make_paths(n_paths=20, seed=0):
    "Paths of 2-6 steps, each non-answer step `ok` or `bad`; the outcome is right unless a `bad` step precedes it."
    probs, paths = [], []
    for i in range(n_paths):
        probs.append(Problem(f'q{i}', f'question {i}', answer='1'))
        T = 2 + _h(seed, i, 'T') % 5
        steps = [f'step {t} ' + ('bad' if _h(seed, i, t) % 4 == 0 else 'ok') for t in range(T - 1)]
        correct = not any('bad' in s for s in steps) or _h(seed, i, 'c') % 5 == 0
        steps.append(f'The answer is {1 if correct else 0}')
        paths.append(Path(f'q{i}', '\n'.join(steps), steps=steps, answer='1' if correct else '0', correct=correct))
    return LineTask(probs), paths


# ---------------------------------------------------------------- pure label logic
def test_hard_labels_and_delta():
    assert hard_labels([0, 1, 2, 8]) == [0, 1, 1, 1]
    assert hard_labels([0, 1, 2, 8], delta=1) == [0, 0, 1, 1]
    assert hard_labels([]) == []


def test_step_decided_cases():
    assert step_decided(1, 1, 8) and not step_decided(0, 1, 8) and step_decided(0, 8, 8)
    assert not step_decided(2, 3, 8, delta=2) and step_decided(3, 3, 8, delta=2)
    assert step_decided(0, 6, 8, delta=2) and not step_decided(0, 5, 8, delta=2)  # 2 left: at most 2 hits, not > 2


def test_first_error():
    assert first_error([1, 1, 0, 1, 0]) == 2 and first_error([1, 1]) == 2 and first_error([0]) == 0


@pytest.mark.parametrize('n', range(0, 10))
def test_first_zero_on_every_monotone_oracle(n):
    for k in range(n + 1):
        labels = [1] * k + [0] * (n - k)
        first, probed = first_zero(lambda t: labels[t], 0, n)
        assert first == k == first_error(labels)
        assert len(probed) <= max(1, (n).bit_length()) and len(set(probed)) == len(probed)
        assert all(0 <= t < n for t in probed)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown strategy 'exhaustiv'"):
        SimulateConfig(strategy='exhaustiv')
    with pytest.raises(ValueError, match='delta=-1'):
        SimulateConfig(delta=-1)
    with pytest.raises(ValueError, match='chunk_size'):
        SimulateConfig(chunk_size=0)
    with pytest.raises(TypeError):
        SimulateConfig(n_rollout=4)


def test_rollout_seed_is_stable_and_distinct():
    assert rollout_seed(0, 'p', 1, 2) == rollout_seed(0, 'p', 1, 2)
    seeds = {rollout_seed(0, 'p', t, j) for t in range(5) for j in range(8)}
    assert len(seeds) == 40 and all(0 <= s < 2**31 for s in seeds)


# ---------------------------------------------------------------- labelling on hand-built cases
def test_hand_built_path_labels():
    task = LineTask([Problem('q', 'q', answer='1')])
    steps = ['step 0 ok', 'step 1 bad', 'step 2 ok', 'The answer is 0']
    path = Path('q', '\n'.join(steps), steps=steps, answer='0', correct=False)
    [lab] = label_paths(task, FakeSim(p_bad=0.0), [path], SimulateConfig())
    assert lab.n == [8, 8, 8, 8] and lab.hits[1:] == [0, 0, 0] and lab.hits[0] > 0
    assert lab.labels == [1, 0, 0, 0] and lab.meta['outcome_last']
    assert lab.tokens > 0 and lab.strategy == 'exhaustive' and lab.soft[1:] == [0.0, 0.0, 0.0]


def test_last_answer_step_labelled_by_outcome_without_rollouts():
    task = LineTask([Problem('q', 'q', answer='1')])
    for correct in (True, False):
        steps = ['The answer is ' + ('1' if correct else '0')]
        sim = FakeSim()
        [lab] = label_paths(
            task, sim, [Path('q', steps[0], steps=steps, correct=correct)], SimulateConfig(strategy='binary')
        )
        assert lab.labels == [int(correct)] and lab.hits == [8 * correct] and lab.tokens == 0 and sim.rows == 0


def test_unfinished_path_rolls_out_every_step():
    task = LineTask([Problem('q', 'q', answer='1')])
    steps = ['step 0 ok', 'step 1 ok']  # no answer line: cut by max_new_tokens
    [lab] = label_paths(task, FakeSim(), [Path('q', '\n'.join(steps), steps=steps)], SimulateConfig())
    assert lab.n == [8, 8] and not lab.meta['outcome_last']
    [lab] = label_paths(task, FakeSim(), [Path('q', '\n'.join(steps), steps=steps)], SimulateConfig(outcome_last=False))
    assert lab.n == [8, 8]


def test_code_task_last_step_is_rolled_out():
    class CodeTask(LineTask):
        kind = 'code'

    task = CodeTask([Problem('q', 'q', answer='1')])
    steps = ['step 0 ok', 'The answer is 1']
    [lab] = label_paths(task, FakeSim(), [Path('q', '\n'.join(steps), steps=steps, correct=True)], SimulateConfig())
    assert lab.n == [8, 8]


def test_empty_path_and_empty_input():
    task = LineTask([Problem('q', 'q', answer='1')])
    [lab] = label_paths(task, FakeSim(), [Path('q', '', steps=[])], SimulateConfig())
    assert lab.labels == [] and lab.tokens == 0
    assert label_paths(task, FakeSim(), [], SimulateConfig()) == []


def test_missing_problem_names_it():
    task = LineTask([Problem('q', 'q', answer='1')])
    with pytest.raises(KeyError, match='nope'):
        label_paths(task, FakeSim(), [Path('nope', 'a\nb', steps=['a', 'b'])], SimulateConfig())


# ---------------------------------------------------------------- strategies agree as specified
@pytest.mark.parametrize('delta', [0, 2])
def test_early_stop_identical_hard_labels_fewer_tokens(delta):
    task, paths = make_paths(40)
    exh = label_paths(task, FakeSim(), paths, SimulateConfig(delta=delta))
    es = label_paths(task, FakeSim(), paths, SimulateConfig(strategy='early_stop', delta=delta))
    assert [r.labels for r in es] == [r.labels for r in exh]
    assert sum(r.tokens for r in es) < sum(r.tokens for r in exh)
    for e, x in zip(es, exh):  # early_stop saw a prefix of the same rollout stream
        assert all(n <= 8 for n in e.n) and all(he <= hx for he, hx in zip(e.hits, x.hits))


def test_chunk_size_does_not_change_labels():
    task, paths = make_paths(15)
    ref = [r.labels for r in label_paths(task, FakeSim(), paths, SimulateConfig(strategy='early_stop'))]
    for k in (1, 3, 8):
        assert [
            r.labels for r in label_paths(task, FakeSim(), paths, SimulateConfig(strategy='early_stop', chunk_size=k))
        ] == ref


def test_binary_matches_exhaustive_on_monotone_labels():
    task, paths = make_paths(60)
    exh = label_paths(task, FakeSim(p_bad=0.0), paths, SimulateConfig())
    bi = label_paths(task, FakeSim(p_bad=0.0), paths, SimulateConfig(strategy='binary', after_error='zero'))
    monotone = [i for i, r in enumerate(exh) if r.labels == sorted(r.labels, reverse=True)]
    assert len(monotone) >= 40
    for i in monotone:
        assert first_error(bi[i].labels) == first_error(exh[i].labels), (paths[i].steps, exh[i], bi[i])
        assert bi[i].labels == exh[i].labels
    assert sum(r.tokens for r in bi) * 2 <= sum(r.tokens for r in exh)


def test_binary_labels_are_monotone_and_probe_few_steps():
    task, paths = make_paths(30)
    for r, p in zip(label_paths(task, FakeSim(), paths, SimulateConfig(strategy='binary', after_error='zero')), paths):
        assert r.labels == sorted(r.labels, reverse=True)
        probed = sum(1 for n in r.n[:-1] if n)
        assert probed <= max(1, (len(p.steps) - 1).bit_length())


def test_binary_trust_outcome():
    task = LineTask([Problem('q', 'q', answer='1')])
    steps = ['step 0 ok', 'step 1 bad', 'step 2 bad', 'The answer is 1']  # a right answer after a wrong step
    path = Path('q', '\n'.join(steps), steps=steps, answer='1', correct=True)
    [trust] = label_paths(task, FakeSim(p_bad=0.0), [path], SimulateConfig(strategy='binary'))
    assert trust.labels == [1, 1, 1, 1] and trust.tokens == 0
    [search] = label_paths(
        task, FakeSim(p_bad=0.0), [path], SimulateConfig(strategy='binary', trust_outcome=False, after_error='zero')
    )
    [exh] = label_paths(task, FakeSim(p_bad=0.0), [path], SimulateConfig())
    assert search.labels == exh.labels == [1, 0, 0, 1] and 0 < search.tokens < exh.tokens


# ---------------------------------------------------------------- batching and determinism
def test_rollouts_of_all_paths_share_generate_calls():
    task, paths = make_paths(20)
    sim = FakeSim()
    label_paths(task, sim, paths, SimulateConfig(batch_paths=64))
    assert sim.calls == 1 and sim.rows == sum(8 * (len(p.steps) - 1) for p in paths)
    sim = FakeSim()
    label_paths(task, sim, paths, SimulateConfig(batch_paths=5))
    assert sim.calls == 4


@pytest.mark.parametrize('strategy', ROLLOUT_STRATEGIES)
def test_deterministic_and_independent_of_batching(strategy):
    task, paths = make_paths(25)
    runs = [label_paths(task, FakeSim(), paths, SimulateConfig(strategy=strategy, batch_paths=b)) for b in (64, 64, 3)]
    assert runs[0] == runs[1] == runs[2]
    other = label_paths(task, FakeSim(), paths, SimulateConfig(strategy=strategy, seed=1))
    assert [r.hits for r in other] != [r.hits for r in runs[0]]


def test_backend_without_row_seeds_gets_int_seeds():
    task, paths = make_paths(10)
    sim = FakeSim(row_seeds=False)
    a = label_paths(task, sim, paths, SimulateConfig(strategy='early_stop', seed=7))
    assert all(isinstance(s, int) for s in sim.seeds)
    assert a == label_paths(task, FakeSim(row_seeds=False), paths, SimulateConfig(strategy='early_stop', seed=7))


def test_output_order_and_dedup():
    task, paths = make_paths(6)
    out = label_paths(task, FakeSim(), paths[::-1] + paths[:2], SimulateConfig())
    assert [r.path_id for r in out] == [p.id for p in paths[::-1]]


# ---------------------------------------------------------------- resume, torn lines, SIGKILL
def test_resume_skips_labelled_paths_and_survives_a_torn_line(tmp_path):
    task, paths = make_paths(12)
    out = tmp_path / 'labels.jsonl'
    full = label_paths(task, FakeSim(), paths, SimulateConfig())
    label_paths(task, FakeSim(), paths[:5], SimulateConfig(), out)
    with open(out, 'a') as f:
        f.write('{"path_id": "torn')
    sim = FakeSim()
    again = label_paths(task, sim, paths, SimulateConfig(), out)
    rows = read_jsonl(out, StepLabels)
    assert again == full and rows == full
    assert len(rows) == 12 and len({r.path_id for r in rows}) == 12
    assert sim.rows == sum(8 * (len(p.steps) - 1) for p in paths[5:])


def _worker(out_path, sleep):
    task, paths = make_paths(30)
    label_paths(task, FakeSim(sleep=sleep), paths, SimulateConfig(strategy='early_stop', batch_paths=2), out_path)


def test_sigkill_mid_run_then_resume(tmp_path):
    out = tmp_path / 'labels.jsonl'
    ref_out = tmp_path / 'ref.jsonl'
    _worker(ref_out, 0.0)
    ref = read_jsonl(ref_out)
    proc = subprocess.Popen([sys.executable, __file__, str(out), '0.05'], stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.read_text().count('\n') < 5):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_killed = len(read_jsonl(out))
    assert 5 <= n_killed < len(ref), n_killed
    subprocess.run([sys.executable, __file__, str(out), '0'], check=True, stderr=subprocess.DEVNULL)
    rows = read_jsonl(out)
    assert len(rows) == len(ref) == 30
    assert len({r['path_id'] for r in rows}) == 30

    def key(r):
        return r['path_id']

    assert sorted(rows, key=key) == sorted(ref, key=key)


# ---------------------------------------------------------------- labels past the first error; instruct simulators
def test_binary_masks_steps_past_the_first_error_by_default():
    task = LineTask([Problem('q', 'q', answer='1')])
    steps = ['step 0 ok', 'step 1 bad', 'step 2 ok', 'step 3 ok', 'The answer is 0']
    path = Path('q', '\n'.join(steps), steps=steps, answer='0', correct=False)
    [bi] = label_paths(task, FakeSim(p_bad=0.0), [path], SimulateConfig(strategy='binary'))
    assert bi.labels == [1, 0, None, None, 0] and bi.n[3] == 0  # the answer step keeps its outcome
    [zero] = label_paths(task, FakeSim(p_bad=0.0), [path], SimulateConfig(strategy='binary', after_error='zero'))
    assert zero.labels == [1, 0, 0, 0, 0]
    [exh] = label_paths(task, FakeSim(p_bad=0.0), [path], SimulateConfig())  # measured: kept as measured
    [masked] = label_paths(task, FakeSim(p_bad=0.0), [path], SimulateConfig(after_error='mask'))
    assert exh.labels[:2] == [1, 0] and masked.labels == exh.labels[:2] + [None, None, 0]
    with pytest.raises(ValueError, match="did you mean 'mask'"):
        SimulateConfig(after_error='masked')


def test_soft_label_of_an_unprobed_step_is_none():
    task = LineTask([Problem('q', 'q', answer='1')])
    steps = ['step 0 ok', 'step 1 bad', 'step 2 ok', 'step 3 ok', 'The answer is 0']
    path = Path('q', '\n'.join(steps), steps=steps, answer='0', correct=False)
    [bi] = label_paths(task, FakeSim(p_bad=0.0), [path], SimulateConfig(strategy='binary'))
    assert bi.n[3] == 0 and bi.soft[3] is None


class ChatSim:
    "An instruct simulator: a tokenizer with a chat template; it opens with a blank line and ends in \\boxed{1}."

    row_seeds = True

    def __init__(self, tokenizer):
        self.tokenizer, self.prompts, self.stops = tokenizer, [], []

    def generate(self, prompts, n=1, temperature=1.0, max_new_tokens=64, stop=(), seed=None, **sampling):
        self.prompts += prompts
        self.stops.append(list(stop))
        text = '\n\nLet me continue.\n\nSo the result is \\boxed{1}.'
        cut = min([text.index(s) for s in stop if s in text], default=len(text))
        return [[Gen(text[:cut], 9)] for _ in prompts]


def test_instruct_simulator_gets_a_chat_turn_and_its_boxed_answer_counts():
    from sipf.toy import toy_tokenizer
    from sipf.simulate import BOXED_PROMPT

    tok = toy_tokenizer()
    tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}<|assistant|>"
    task = LineTask([Problem('q', 'what is 1?', answer='1')])
    steps = ['step 0 ok', 'The answer is 1']
    path = Path('q', '\n'.join(steps), steps=steps, answer='1', correct=True)
    sim = ChatSim(tok)
    [lab] = label_paths(task, sim, [path], SimulateConfig())
    assert sim.prompts[0] == f'<|user|>what is 1?{BOXED_PROMPT}<|assistant|>step 0 ok\n'
    assert sim.stops[0] == [] and lab.hits[0] == 8  # no blank-line stop: every rollout reaches its answer
    plain = ChatSim(tok)
    [old] = label_paths(task, plain, [path], SimulateConfig(chat='never'))
    assert plain.stops[0] == ['\n\n'] and old.hits[0] == 0  # the policy's prompt and stop: false 0 labels


if __name__ == '__main__':
    _worker(sys.argv[1], float(sys.argv[2]))


# ---------------------------------------------------------------- the toy world's oracle labels
def test_truth_strategy_labels_the_first_slip_and_every_step_after(tmp_path):
    from sipf.tasks import load_task

    task = load_task('arith', split='train', n=20, seed=0)
    p = next(q for q in task.problems if q.solution.count('=') >= 2)
    lines = p.solution.split('\n')
    a, rest = lines[0].rsplit('= ', 1)
    slipped = '\n'.join([f'{a}= {int(rest) + 1}'] + lines[1:])  # the first equation off by one, carried nowhere
    paths = [
        Path(p.id, t, steps=task.split_steps(t), answer=task.extract_answer(t), correct=task.is_correct(p, t))
        for t in (p.solution, slipped)
    ]
    out = tmp_path / 'labels.jsonl'
    gold, slip = label_paths(task, None, paths, SimulateConfig(strategy='truth', n_rollouts=8), out)
    assert gold.labels == [1] * len(paths[0].steps) and gold.tokens == 0
    assert slip.labels == [0] * len(paths[1].steps) and slip.hits[0] == 0 and slip.n[0] == 8
    assert [r.path_id for r in read_jsonl(out, StepLabels)] == [paths[0].id, paths[1].id]
    assert (
        label_paths(task, None, paths, SimulateConfig(strategy='truth'), out)[1].labels == slip.labels
    )  # resumed, not redone
    assert len(read_jsonl(out, StepLabels)) == 2


def test_truth_strategy_needs_a_task_that_knows_the_truth():
    paths = [Path('p0', 'ok\nThe answer is 1', steps=['ok', 'The answer is 1'], answer='1', correct=True)]
    task = LineTask([Problem('p0', 'q', '1')])
    with pytest.raises(ValueError, match="strategy 'truth' needs a task"):
        label_paths(task, FakeSim(), paths, SimulateConfig(strategy='truth'))
