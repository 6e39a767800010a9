"The official loop (issue 11 item 1): where each iteration's alignment starts, and the data it accumulates."

from pathlib import Path as FilePath

import pytest
from sipf.core import Pair, Path, read_jsonl, write_json, write_jsonl
from sipf.pipeline import load_config, run


class Recording:
    "Stand-in stages that record what every alignment stage started from and trained on."

    def __init__(self):
        self.aligned = []

    def m0(self, out, train=True):
        out.mkdir()
        (out / 'w').write_text('m0')

    def base(self, out):
        out.mkdir()
        (out / 'w').write_text('base')

    def sample(self, out, model, k, previous=()):
        self.previous = [FilePath(p).parent.name for p in previous]
        write_jsonl(out, [Path(f'q{k}', f'{k} right', correct=True), Path(f'q{k}', f'{k} wrong')])

    def pairs(self, out, data=None):
        rows = read_jsonl(data)
        write_jsonl(out, [Pair(rows[0]['problem_id'], 'Q', rows[0]['text'], rows[1]['text'])])

    def align(self, out, model, *pairs):
        self.aligned.append(((model / 'w').read_text(), sum(len(read_jsonl(p)) for p in pairs)))
        out.mkdir()
        (out / 'w').write_text(f'M{len(self.aligned)}')

    def evaluate(self, out, model):
        write_json(out, {'arith': {'score': 0.1}})


@pytest.mark.parametrize(
    'overrides,starts,rows',
    [
        ([], ['base', 'base', 'base'], [1, 2, 3]),  # the defaults: the official code
        (['align.init=previous', 'align.accumulate=false'], ['m0', 'M1', 'M2'], [1, 1, 1]),
        (['align.init=m0'], ['m0', 'm0', 'm0'], [1, 2, 3]),
    ],
    ids=['official', 'previous-own-rows', 'm0-accumulated'],
)
def test_alignment_start_and_accumulated_rows(tmp_path, overrides, starts, rows):
    stages = Recording()
    run(load_config(method='siof', runs_dir=str(tmp_path), overrides=overrides), stages)
    assert [s for s, _ in stages.aligned] == starts
    assert [n for _, n in stages.aligned] == rows
    # iteration 3 samples knowing the samples of iterations 1 and 2 (the official quotas count them)
    assert len(stages.previous) == 2 and all(n.startswith('sample-') for n in stages.previous)
