"The simulator in 4 bits by config (`simulate.load_in_4bit`): through HF generate and through vLLM (recorded calls)."

from pathlib import Path as FilePath

import torch

import sipf.models
import sipf.pipeline as pl
import sipf.sample
from sipf.config import load_config
from sipf.core import Path, write_jsonl


def test_load_model_four_bit_asks_bitsandbytes_without_an_adapter(monkeypatch):
    seen = {}
    monkeypatch.setattr(sipf.models, 'require_bnb', lambda: None)
    monkeypatch.setattr(sipf.models, 'load_tokenizer', lambda name: type('T', (), {'pad_token_id': 0})())

    def fake(name, auto_class, dtype, quant, trainable):
        seen.update(quant=quant, trainable=trainable)
        model = torch.nn.Linear(2, 2)
        model.config = type('C', (), {'pad_token_id': 0})()
        return model

    monkeypatch.setattr(sipf.models, '_from_pretrained', fake)
    sipf.models.load_model('deepseek-ai/deepseek-math-7b-instruct', four_bit=True, device='cpu', dtype=torch.float32)
    assert seen['quant'].load_in_4bit and seen['quant'].bnb_4bit_quant_type == 'nf4' and not seen['trainable']
    sipf.models.load_model('deepseek-ai/deepseek-math-7b-instruct', device='cpu', dtype=torch.float32)
    assert seen['quant'] is None


def test_the_simulate_stage_loads_its_simulator_in_4_bits(tmp_path, monkeypatch):
    c = load_config('toy-quick', ['simulate.load_in_4bit=true'], simulator='deepseek-ai/deepseek-math-7b-instruct')
    loads, backends = [], []
    monkeypatch.setattr(sipf.models, 'load_model', lambda *a, **k: loads.append((a, k)) or ('model', 'tok'))
    monkeypatch.setattr(sipf.sample, 'make_backend', lambda kind, *a, **k: backends.append((kind, k)) or 'backend')
    monkeypatch.setattr('sipf.simulate.label_paths', lambda task, backend, paths, cfg, out: backends.append(backend))
    samples = tmp_path / 'samples.jsonl'
    write_jsonl(samples, [Path('q0', 'x')])
    stages = pl.Stages(c)
    stages.task = lambda *a, **k: None
    stages.simulate(tmp_path / 'labels.jsonl', samples, FilePath('unused-policy'))
    assert loads[0][0] == ('deepseek-ai/deepseek-math-7b-instruct',) and loads[0][1]['four_bit'] is True
    assert backends[-1] == 'backend'
    stages.backend('deepseek-ai/deepseek-math-7b-instruct', 'vllm', 8, four_bit=True)
    assert backends[-1][0] == 'vllm' and backends[-1][1]['quantization'] == 'bitsandbytes'
    stages.backend('deepseek-ai/deepseek-math-7b-instruct', 'vllm', 8)
    assert 'quantization' not in backends[-1][1]
