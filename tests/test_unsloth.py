"""unsloth's wiring against a stand-in module that records calls (unsloth needs CUDA; never installed in CI):
imported before transformers by `sipf run`, adapters on every linear layer of the architecture, dropout said."""

import logging
import subprocess
import sys
import types

import torch
from transformers import PhiConfig, PhiForCausalLM

import sipf.models
from sipf.config import LoraOptions

FAKE = '''
import json, os, sys
with open(os.environ['UNSLOTH_RECORD'], 'w') as f:
    json.dump({m: m in sys.modules for m in ('transformers', 'trl', 'peft', 'torch')}, f)
'''


def test_sipf_run_imports_unsloth_before_transformers(tmp_path):
    (tmp_path / 'fake' / 'unsloth').mkdir(parents=True)
    (tmp_path / 'fake' / 'unsloth' / '__init__.py').write_text(FAKE)
    record = tmp_path / 'record.json'
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path / 'fake')!r}); import sipf.pipeline as pl; "
        "pl.run = lambda c: []; from sipf.cli import main; "
        "sys.exit(main(['-q', 'run', 'toy-quick', '--set', 'unsloth=true']))"
    )
    env = {'UNSLOTH_RECORD': str(record), 'PATH': '/usr/bin:/bin'}
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    import json

    seen = json.loads(record.read_text())
    assert seen == {'transformers': False, 'trl': False, 'peft': False, 'torch': False}, seen


def _fake_unsloth(monkeypatch, model):
    calls = {}

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(model_name, load_in_4bit, dtype):
            calls['from_pretrained'] = dict(model_name=model_name, load_in_4bit=load_in_4bit)
            tok = types.SimpleNamespace(pad_token=None, eos_token='</s>', padding_side='right')
            return model, tok

        @staticmethod
        def get_peft_model(model, **kw):
            calls['get_peft_model'] = kw
            return model

    monkeypatch.setitem(sys.modules, 'unsloth', types.SimpleNamespace(FastLanguageModel=FastLanguageModel))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    return calls


def test_unsloth_adapters_cover_phi_and_say_that_dropout_slows_it(monkeypatch, caplog):
    phi = PhiForCausalLM(
        PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    )
    calls = _fake_unsloth(monkeypatch, phi)
    with caplog.at_level(logging.WARNING):
        model, tok = sipf.models.load_model(
            'microsoft/phi-1_5',
            adapter='qlora',
            unsloth=True,
            lora_opts=LoraOptions(r=256, alpha=128),
            dtype=torch.float32,
        )
    assert calls['from_pretrained'] == dict(model_name='microsoft/phi-1_5', load_in_4bit=True)
    kw = calls['get_peft_model']
    assert (kw['r'], kw['lora_alpha'], kw['lora_dropout']) == (256, 128, 0.05)
    assert {'dense', 'fc1', 'fc2', 'q_proj', 'k_proj', 'v_proj'} <= set(kw['target_modules'])
    assert 'lm_head' not in kw['target_modules']
    assert 'fast LoRA kernels off' in caplog.text
    assert (tok.pad_token, tok.padding_side) == ('</s>', 'left')


def test_sampling_loads_the_policy_through_unsloth_without_a_fresh_adapter(monkeypatch, tmp_path):
    from sipf.config import load_config
    from sipf.pipeline import Stages

    phi = PhiForCausalLM(
        PhiConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    )
    calls = _fake_unsloth(monkeypatch, phi)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    stages = Stages(load_config('toy-quick', ['unsloth=true']))
    model, tok = stages.load(tmp_path)  # an M_k directory, loaded to generate (Stages.sample / simulate / evaluate)
    assert model is phi
    assert calls['from_pretrained'] == dict(model_name=str(tmp_path.resolve()), load_in_4bit=False)
    assert 'get_peft_model' not in calls  # a saved adapter loads with its own LoRA; none is added to generate
    assert (tok.pad_token, tok.padding_side) == ('</s>', 'left')
    stages.load(tmp_path, four_bit=True)
    assert calls['from_pretrained']['load_in_4bit'] is True
