"""The vllm / unsloth stand-ins of `sipf run --rehearse` (sipf.rehearse) fail where the real packages would, and do
what they would otherwise: both run on CUDA only, so without the stand-ins these failures would first show on a GPU.
The stand-in tokenizers carry their real family's special tokens (Phi-1.5: no pad token)."""

import json
import logging
import warnings

import pytest
import torch
from transformers import AutoTokenizer

from sipf.config import LoraOptions
from sipf.core import data_dir, import_unsloth_first
from sipf.models import load_model, load_tokenizer
from sipf.rehearse import (
    LLM,
    RECORD,
    FastLanguageModel,
    LoRARequest,
    SamplingParams,
    install_stand_ins,
    remove_stand_ins,
    stand_in,
)
from sipf.sample import make_backend

PROMPT = ['Question: Tom has 3 apples and buys 4 more. How many apples does he have?\nAnswer:']
GREEDY = SamplingParams(temperature=0, max_tokens=8)


@pytest.fixture(scope='module')
def phi(tmp_path_factory):
    "A Phi-1.5 stand-in and, beside it, an r=32 LoRA adapter on it whose B matrices are not zero (it changes outputs)."
    d = tmp_path_factory.mktemp('phi')
    base = stand_in('microsoft/phi-1_5', d, data_dir())
    model, tok = load_model(base, adapter='lora', lora_opts=LoraOptions(r=32, alpha=64), device='cpu')
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if 'lora_B' in name:
            torch.nn.init.normal_(p, std=0.5)
    model.save_pretrained(d / 'm0')
    tok.save_pretrained(d / 'm0')
    return base, str(d / 'm0')


@pytest.fixture
def installed():
    "Stand-ins on the import path for one test, then off (the real packages, never installed here, are absent again)."
    yield install_stand_ins
    remove_stand_ins()


def test_phi_stand_in_has_no_pad_token_until_sipf_pads_with_eos(phi):
    tok = AutoTokenizer.from_pretrained(phi[0])
    assert tok.pad_token is None
    assert tok.bos_token == tok.eos_token == tok.unk_token == '<|endoftext|>'
    assert tok('1 + 1')['input_ids'][0] != tok.bos_token_id  # CodeGen's tokenizer adds no bos
    padded = load_tokenizer(phi[0])
    assert (padded.pad_token, padded.padding_side) == ('<|endoftext|>', 'left')


def test_vllm_refuses_an_adapter_directory(phi):
    with pytest.raises(ValueError, match="ensure the presence of a 'config.json'"):
        LLM(model=phi[1])
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_lora'"):
        LLM(model=phi[0], max_lora=256)
    with pytest.raises(ValueError, match=r'max_lora_rank \(200\) must be one of'):
        LLM(model=phi[0], enable_lora=True, max_lora_rank=200)


def test_vllm_serves_lora_only_when_enabled_and_within_max_lora_rank(phi):
    base, adapter = phi
    request = LoRARequest('sipf', 1, adapter)
    with pytest.raises(ValueError, match='LoRA is not enabled'):
        LLM(model=base).generate(PROMPT, GREEDY, lora_request=request)
    with pytest.raises(ValueError, match='LoRA rank 32 is greater than max_lora_rank 16'):
        LLM(model=base, enable_lora=True).generate(PROMPT, GREEDY, lora_request=request)
    served = LLM(model=base, enable_lora=True, max_lora_rank=32)
    with_lora = served.generate(PROMPT, GREEDY, lora_request=request)[0].outputs[0]
    plain = served.generate(PROMPT, GREEDY)[0].outputs[0]  # no request: the base alone
    assert with_lora.token_ids != plain.token_ids
    from sipf.sample import merge_lora

    merged = LLM(model=str(merge_lora(adapter))).generate(PROMPT, GREEDY)[0].outputs[0]
    assert merged.token_ids == with_lora.token_ids  # serving the adapter = merging it


def test_vllm_sampling_params_n_seed_stop_max_tokens(phi):
    llm = LLM(model=phi[0], enable_prefix_caching=True)
    params = [SamplingParams(n=3, temperature=1.0, max_tokens=8, seed=s) for s in (1, 2)]
    outs = llm.generate(PROMPT * 2, params, use_tqdm=False)
    assert [len(o.outputs) for o in outs] == [3, 3] and outs[0].outputs != outs[1].outputs
    assert all(len(c.token_ids) <= 8 for o in outs for c in o.outputs)
    assert llm.generate(PROMPT, params[0])[0].outputs == outs[0].outputs  # a seed gives the same samples in any batch
    full = llm.generate(PROMPT, SamplingParams(temperature=0))[0].outputs[0]  # vLLM's default: 16 tokens
    assert len(full.token_ids) == 16 and full.finish_reason == 'length'
    stop = full.text[len(full.text) // 2 :][:3]
    cut = llm.generate(PROMPT, SamplingParams(temperature=0, stop=[stop]))[0].outputs[0]
    assert cut.finish_reason == 'stop' and stop not in cut.text and full.text.startswith(cut.text)
    with pytest.raises(ValueError, match='lengths of prompts and sampling_params'):
        llm.generate(PROMPT, params)
    with pytest.raises(NotImplementedError, match='repetition_penalty'):
        llm.generate(PROMPT, SamplingParams(repetition_penalty=1.2))


def test_sipf_vllm_backend_through_the_stand_in(phi, installed, tmp_path):
    "sipf's `VLLMBackend` on the stand-in: an adapter served with the rank it needs, or merged; every call recorded."
    installed(['vllm'], tmp_path / 'calls.jsonl')
    served = make_backend('vllm', phi[1], lora='serve')
    merged = make_backend('vllm', phi[1], lora='merge')
    a, b = (be.generate(PROMPT, n=2, temperature=0.7, max_new_tokens=6, seed=[5]) for be in (served, merged))
    assert [g.text for g in a[0]] == [g.text for g in b[0]]
    rows = [json.loads(l) for l in (tmp_path / 'calls.jsonl').read_text().splitlines()]
    inits = [r for r in rows if r['call'] == 'LLM']
    assert [(r['enable_prefix_caching'], r.get('max_lora_rank')) for r in inits] == [(True, 32), (True, None)]
    assert rows == RECORD.calls and [r['call'] for r in rows] == ['LLM', 'LLM', 'generate', 'generate']


def test_unsloth_get_peft_model_refuses_a_missing_target_module(phi):
    model, tok = FastLanguageModel.from_pretrained(phi[0], dtype=None, load_in_4bit=False)
    assert model.config.unsloth_version and tok.pad_token is None
    with pytest.raises(ValueError, match=r"\['down_proj', 'gate_proj', 'o_proj', 'up_proj'\] not found"):
        FastLanguageModel.get_peft_model(model, r=8)  # unsloth's default list is Llama's
    peft = FastLanguageModel.get_peft_model(model, r=8, target_modules=['q_proj', 'dense', 'fc1', 'fc2'])
    assert {'dense', 'fc1', 'fc2', 'q_proj'} == set(peft.peft_config['default'].target_modules)


def test_unsloth_loads_an_adapter_directory_as_base_plus_trainable_adapter(phi):
    model, _ = FastLanguageModel.from_pretrained(phi[1], load_in_4bit=False)
    assert type(model).__name__.startswith('PeftModel') and model.peft_config['default'].r == 32
    assert any(p.requires_grad for n, p in model.named_parameters() if 'lora_' in n)
    assert model.get_base_model().config.unsloth_version


def test_unsloth_on_cpu_needs_the_stand_in_and_warns_when_imported_late(phi, installed, caplog):
    remove_stand_ins()
    with pytest.raises(RuntimeError, match='needs a CUDA GPU'):
        load_model(phi[0], unsloth=True, adapter='none')  # a real CPU run keeps its clear error
    installed(['unsloth'])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING, logger='sipf.core'):
        warnings.simplefilter('always')
        import_unsloth_first()  # transformers is imported in this process: the real unsloth warns, and so does sipf
    assert any('Unsloth should be imported before' in str(w.message) for w in caught)
    assert 'unsloth imported after transformers' in caplog.text
    model, tok = load_model(phi[0], unsloth=True, adapter='lora', lora_opts=LoraOptions(r=8))
    assert {'dense', 'fc1', 'fc2'} <= set(model.peft_config['default'].target_modules)
    assert tok.pad_token == tok.eos_token  # sipf pads unsloth's tokenizer (Phi's has none)
