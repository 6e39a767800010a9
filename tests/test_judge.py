"`sipf judge` (App. B): the truth judge on the toy world, position bias, a tiny HF model, an endpoint, the CLI."

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sipf.config import config_yaml, load_config
from sipf.core import write_jsonl
from sipf.judge import (
    DIMENSIONS,
    LMJudge,
    TruthJudge,
    endpoint_judge,
    hf_judge,
    judge_pairs,
    judge_runs,
    paired_completions,
    parse_verdicts,
    swap_verdict,
)
from sipf.pipeline import Stages


def misreason(solution: str) -> str:
    "The solution with its first equation over the wrong operation, computed right: an error, but not computational."
    a, op, b = re.search(r'(\d+) ([-+]) (\d+) = \d+', solution).groups()
    wrong = f'{a} - {b} = {int(a) - int(b)}' if op == '+' else f'{a} + {b} = {int(a) + int(b)}'
    return re.sub(r'\d+ [-+] \d+ = \d+', wrong, solution, count=1)


def miscalculate(solution: str) -> str:
    "The solution with its last equation's result off by one (its answer line untouched: still correct)."
    head, eq, result, tail = re.match(r'(?s)(.*)(=\s*)(\d+)(.*)', solution).groups()
    return f'{head}{eq}{int(result) + 1}{tail}'


def fake_run(root: Path, name: str, texts, overrides=()) -> Path:
    "A toy-world run directory laid out as `sipf run` leaves it: config, iter_1/eval.json linked into a cache."
    run, cache = root / name, root / '.cache' / f'eval-{name}'
    config = load_config('toy-quick', overrides, name=name)
    (run / 'iter_1').mkdir(parents=True)
    cache.mkdir(parents=True)
    (run / 'config.yaml').write_text(config_yaml(config))
    task = Stages(config).task('arith', 'test')
    rows = [dict(problem_id=q.id, text=t, correct=task.is_correct(q, t)) for q, t in zip(task.problems, texts)]
    write_jsonl(cache / 'arith.predictions.jsonl', rows)
    (cache / 'eval.json').write_text(json.dumps({'arith': {'score': 0.5}}))
    (run / 'iter_1' / 'eval.json').symlink_to(cache / 'eval.json')
    return run


@pytest.fixture(scope='module')
def gold():
    return [q.solution for q in Stages(load_config('toy-quick')).task('arith', 'test').problems[:7]]


@pytest.fixture
def runs(tmp_path, gold):
    "A: a miscalculation (q1), a no-work answer (q4), a wrong operation (q6); B: two miscalculations; q5: both wrong."
    a = [
        gold[0],
        miscalculate(gold[1]),
        gold[2],
        gold[3],
        gold[4].splitlines()[-1],
        'The answer is 0',
        misreason(gold[6]),
    ]
    b = [gold[0], gold[1], miscalculate(gold[2]), miscalculate(gold[3]), gold[4], 'The answer is 0', gold[6]]
    return fake_run(tmp_path, 'a', a), fake_run(tmp_path, 'b', b)


class AlwaysFirst:
    "A judge with nothing but position bias."

    name, dimensions = 'always-A', tuple(DIMENSIONS)

    def __call__(self, items):
        return [{d: 'A' for d in self.dimensions} for _ in items]


def test_truth_judge_gives_the_exact_computational_verdict(runs, tmp_path):
    out = tmp_path / 'report.json'
    rep = judge_runs(*runs, 'truth', out=out)
    assert rep['n'] == 6  # q5, wrong in both runs, is dropped as in the paper
    assert [r['verdict'] for r in rep['rows']] == [{'computational': v} for v in ('tie', 'B', 'A', 'A', 'tie', 'tie')]
    for r in rep['rows']:  # both orders were judged, the swapped one in its own frame
        assert r['ba']['computational'] == swap_verdict(r['ab']['computational'])
    assert rep['dimensions'] == {'computational': dict(n=6, win=2, tie=3, lose=1, inconsistent=0, unparsed=0)}
    assert rep['inconsistency'] == 0.0
    task = Stages(load_config('toy-quick')).task('arith', 'test')
    q6 = task.problems[6]
    assert task.step_errors(q6, misreason(q6.solution))[0] == 'wrong quantity'  # an error, not a computational one
    assert json.loads(out.read_text())['dimensions'] == rep['dimensions']
    assert '| Computational | 33.3% | 50.0% | 16.7% | 0.0% | 6 |' in out.with_suffix('.md').read_text()
    assert judge_runs(*runs[::-1], 'truth')['dimensions']['computational']['win'] == 1  # B's view: the mirror


def test_both_wrong_kept_and_first_n(runs):
    assert judge_runs(*runs, 'truth', skip_both_wrong=False)['n'] == 7
    assert [r['problem_id'] for r in judge_runs(*runs, 'truth', n=2)['rows']] == [
        r['problem_id'] for r in judge_runs(*runs, 'truth')['rows'][:2]
    ]


def test_position_biased_judge_is_all_ties_and_all_inconsistent(runs):
    rep = judge_runs(*runs, AlwaysFirst())
    assert rep['inconsistency'] == 1.0
    for d in DIMENSIONS:
        assert rep['dimensions'][d] == dict(n=6, win=0, tie=6, lose=0, inconsistent=6, unparsed=0)


def test_a_consistent_judge_counts_through_the_swap(runs):
    "A judge that prefers the longer response, whatever its position: verdicts hold in both orders."

    class Longer:
        name, dimensions = 'longer', ('completeness',)

        def __call__(self, items):
            return [
                {'completeness': 'A' if len(a) > len(b) else 'B' if len(b) > len(a) else 'tie'} for _, a, b in items
            ]

    rep = judge_runs(*runs, Longer())
    assert rep['inconsistency'] == 0.0
    assert rep['rows'][4]['verdict'] == {'completeness': 'B'}  # q4: A wrote the answer line only


def test_different_test_questions_fail(tmp_path, gold):
    a = fake_run(tmp_path, 'a', gold)
    b = fake_run(tmp_path, 'b', ['The answer is 1'] * 7, ['task_options.seed=1'])
    with pytest.raises(ValueError, match='different test questions'):
        paired_completions(a, b)


def test_truth_judge_needs_step_truth():
    with pytest.raises(ValueError, match="needs a task that knows its steps' truth"):
        TruthJudge(type('Task', (), {'name': 'gsm8k'})())


def test_parse_verdicts():
    got = parse_verdicts(
        '**Computational**: Response A\nOverall performance: Tie\nConcise: a little of both\nreasonable:B'
    )
    assert got == dict(
        computational='A', completeness=None, reasonable='B', concise=None, consistent=None, overall='tie'
    )


@pytest.fixture(scope='module')
def tiny_model_dir(tmp_path_factory):
    "A tiny random Llama with the toy tokenizer, saved as a model directory."
    from sipf.toy import toy_model, toy_tokenizer

    tok = toy_tokenizer()
    model = toy_model(tok, 'tiny', max_position_embeddings=4096)
    path = tmp_path_factory.mktemp('judge-model')
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, model, tok


def test_tiny_hf_model_judge_plumbing(runs, tiny_model_dir, tmp_path):
    "Garbage verdicts, sound plumbing: prompts built for both orders in one batch, unparsable replies count as ties."
    _, model, tok = tiny_model_dir
    judge = hf_judge(model, tok, max_new_tokens=6)
    prompts = []
    inner = judge.complete
    judge.complete = lambda ps: prompts.extend(ps) or inner(ps)
    rep = judge_runs(*runs, judge, n=2, out=tmp_path / 'hf.json')
    _, problems, comps_a, comps_b = paired_completions(*runs, n=2)
    assert len(prompts) == 4
    for i, (q, a, b) in enumerate(zip(problems, comps_a, comps_b)):
        assert q.question in prompts[i] and q.question in prompts[2 + i]
        assert f'[Response A]\n{a}\n' in prompts[i] and f'[Response B]\n{b}\n' in prompts[i]
        assert f'[Response A]\n{b}\n' in prompts[2 + i] and f'[Response B]\n{a}\n' in prompts[2 + i]
    assert all(len(r['replies']) == 2 for r in rep['rows'])
    for d in DIMENSIONS:
        assert rep['dimensions'][d] == dict(n=2, win=0, tie=2, lose=0, inconsistent=0, unparsed=4)
    assert json.loads((tmp_path / 'hf.json').read_text())['judge'] == 'LlamaForCausalLM'


def test_unparsable_reply_is_a_tie_against_a_verdict():
    judge = LMJudge(lambda ps: ['Computational: A' if 'first' in p.split('[Response B]')[0] else '???' for p in ps])
    rows = judge_pairs(judge, [type('P', (), {'id': 'q', 'question': 'Q?'})()], ['first'], ['second'])
    assert rows[0]['verdict']['computational'] == 'tie' and not rows[0]['consistent']['computational']
    assert rows[0]['verdict']['overall'] == 'tie' and rows[0]['consistent']['overall']


class Endpoint(BaseHTTPRequestHandler):
    "An OpenAI-compatible stand-in: lists one model; its chats prefer the response without a miscalculation."

    seen: list = []

    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.seen.append(('GET', self.path, self.headers.get('Authorization'), None))
        self._send({'object': 'list', 'data': [{'id': 'stand-in', 'object': 'model'}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        self.seen.append(('POST', self.path, self.headers.get('Authorization'), body))
        prompt = body['messages'][0]['content']
        a, b = re.search(r'\[Response A\]\n(.*?)\n\[End.*?\[Response B\]\n(.*?)\n\[End', prompt, re.S).groups()
        ok = [all(_holds(eq) for eq in re.findall(r'\d+ [-+*] \d+ = \d+', t)) for t in (a, b)]
        v = 'tie' if ok[0] == ok[1] else 'A' if ok[0] else 'B'
        content = f'Computational: {v}\nOverall: A'
        self._send(
            {
                'id': 'x',
                'object': 'chat.completion',
                'created': 0,
                'model': body['model'],
                'choices': [
                    {'index': 0, 'finish_reason': 'stop', 'message': {'role': 'assistant', 'content': content}}
                ],
            }
        )

    def log_message(self, *args):
        pass


def _holds(eq: str) -> bool:
    lhs, rhs = eq.split(' = ')
    return eval(lhs) == int(rhs)


@pytest.fixture
def endpoint():
    Endpoint.seen = []
    server = ThreadingHTTPServer(('127.0.0.1', 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_port}/v1'
    server.shutdown()
    server.server_close()


def test_endpoint_judge_against_a_local_server(runs, endpoint):
    rep = judge_runs(*runs, endpoint, api_key='k-test', workers=3)
    assert rep['judge'] == f'stand-in @ {endpoint}'
    gets = [s for s in Endpoint.seen if s[0] == 'GET']
    posts = [s for s in Endpoint.seen if s[0] == 'POST']
    assert [g[1] for g in gets] == ['/v1/models']
    assert len(posts) == 12 and {p[1] for p in posts} == {'/v1/chat/completions'}
    assert {p[2] for p in posts} == {'Bearer k-test'}
    assert all(p[3]['model'] == 'stand-in' and p[3]['temperature'] == 0 for p in posts)
    assert rep['dimensions']['computational'] == dict(n=6, win=2, tie=3, lose=1, inconsistent=0, unparsed=0)
    assert rep['dimensions']['overall'] == dict(n=6, win=0, tie=6, lose=0, inconsistent=6, unparsed=0)
    assert rep['dimensions']['concise']['unparsed'] == 12


def test_endpoint_model_named_and_unreachable(endpoint):
    judge = endpoint_judge(endpoint, model='my-judge', client='urllib')
    assert judge.name == f'my-judge @ {endpoint}' and not Endpoint.seen  # a named model: no listing asked
    with pytest.raises(ConnectionError, match='cannot reach the judge endpoint'):
        endpoint_judge('http://127.0.0.1:9/v1')
    with pytest.raises(ValueError, match="unknown endpoint client 'curl'"):
        endpoint_judge(endpoint, client='curl')


def sipf(capsys, *args):
    "`sipf.cli.main` in this process: (exit status, stdout, stderr)."
    import os

    from sipf.cli import main

    env = dict(os.environ)
    try:
        code = main(['-q', *args])
    finally:
        os.environ.clear()
        os.environ.update(env)
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(code, err, needle):
    assert code == 2, err
    assert err.startswith('sipf: error: ') and len(err.strip().splitlines()) == 1 and needle in err, err


def test_cli_truth(runs, tmp_path, capsys):
    out = tmp_path / 'j.json'
    code, stdout, err = sipf(capsys, 'judge', str(runs[0]), str(runs[1]), '--judge', 'truth', '--out', str(out))
    assert code == 0, err
    assert '| Computational | 33.3% | 50.0% | 16.7% | 0.0% | 6 |' in stdout
    assert '6 pairs judged by truth in both orders, 0.0% inconsistent' in stdout
    assert json.loads(out.read_text())['n'] == 6 and out.with_suffix('.md').exists()


def test_cli_tiny_hf_model_dir(runs, tiny_model_dir, tmp_path, capsys):
    path, _, _ = tiny_model_dir
    out = tmp_path / 'hf.json'
    code, stdout, err = sipf(capsys, 'judge', *map(str, runs), '--judge', str(path), '--n', '1', '--out', str(out))
    assert code == 0, err
    rep = json.loads(out.read_text())
    assert rep['judge'] == str(path) and rep['n'] == 1 and len(rep['rows'][0]['replies']) == 2


def test_cli_user_errors(runs, tmp_path, gold, capsys):
    a, b = map(str, runs)
    _one_line_error(*sipf(capsys, 'judge', a, str(tmp_path / 'nope'), '--judge', 'truth')[::2], 'not a sipf run')
    other = fake_run(tmp_path, 'c', gold, ['task_options.seed=1'])
    _one_line_error(*sipf(capsys, 'judge', a, str(other), '--judge', 'truth')[::2], 'different test questions')
    _one_line_error(*sipf(capsys, 'judge', a, b, '--judge', 'http://127.0.0.1:9/v1')[::2], 'cannot reach the judge')
    _one_line_error(*sipf(capsys, 'judge', a, b, '--judge', 'truth', '--task', 'gsm8k')[::2], "not 'gsm8k'")
    _one_line_error(
        *sipf(capsys, 'judge', a, b, '--judge', 'truth', '--iteration', '3')[::2], 'no evaluated iteration 3'
    )
