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


def test_m0_adapter_of_a_local_model_has_the_configured_rank(tmp_path, monkeypatch):
    "Item 2: M0 of a (non-toy) local model saves an adapter of the run's `lora` rank and an absolute base path."
    import json

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from sipf.pipeline import Stages
    from sipf.toy import toy_tokenizer

    tok, base = toy_tokenizer(), tmp_path / 'base'
    torch.manual_seed(0)
    shape = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2
    )
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **shape)).save_pretrained(base)
    tok.save_pretrained(base)
    sets = ['lora.r=12', 'lora.alpha=24', 'lora.dropout=0.0', 'm0.max_steps=1', 'm0.batch_size=4', 'm0.progress=false']
    monkeypatch.chdir(tmp_path)  # the model named by a relative path, as `model: base` in a config would
    c = load_config(model='base', adapter='lora', n_train=8, runs_dir='runs', overrides=sets)
    Stages(c).m0(FilePath('m0'))
    saved = json.loads((tmp_path / 'm0' / 'adapter_config.json').read_text())
    assert (saved['r'], saved['lora_alpha'], saved['lora_dropout']) == (12, 24, 0.0)
    assert saved['base_model_name_or_path'] == str(base.resolve())  # issue 12: never relative to the run's cwd
    monkeypatch.chdir('/')
    from sipf.models import load_model

    model, _ = load_model(tmp_path / 'm0')  # from another directory: base + adapter load
    assert type(model).__name__.startswith('Peft')
