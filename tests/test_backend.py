"make_backend (transformers; vLLM against a stand-in module), LoRA merge on a tiny model, unsloth, stop strings, top-k."

import json
import sys
import types

import pytest
import torch

from sipf.sample import (
    Generation,
    TransformersBackend,
    cut_at_stop,
    greedy_generate,
    make_backend,
    merge_lora,
)


@pytest.fixture(scope='module')
def world():
    from sipf.toy import toy_model, toy_tokenizer

    torch.set_num_threads(1)
    tok = toy_tokenizer()
    return tok, toy_model(tok, size='tiny', seed=0).eval()


@pytest.fixture(scope='module')
def adapter(world, tmp_path_factory):
    "A tiny base model directory and a LoRA adapter on it with non-zero weights."
    from peft import LoraConfig, get_peft_model

    tok, model = world
    d = tmp_path_factory.mktemp('lora')
    model.save_pretrained(d / 'base')
    tok.save_pretrained(d / 'base')
    lora = get_peft_model(type(model).from_pretrained(d / 'base'), LoraConfig(r=4, target_modules=['q_proj', 'v_proj']))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if 'lora_B' in name:
                p.normal_(0, 0.5)
    lora.save_pretrained(d / 'adapter')
    return d, lora.eval()


class FakeVLLM:
    "A stand-in `vllm` package recording LLM(...) kwargs, SamplingParams kwargs and generate calls."

    def __init__(self):
        self.inits, self.calls = [], []
        rec = self

        class LLM:
            def __init__(self, **kw):
                rec.inits.append(kw)

            def get_tokenizer(self):
                return 'tok'

            def generate(self, prompts, params, use_tqdm=True, **kw):
                rec.calls.append(dict(prompts=prompts, params=params, **kw))
                n = (params[0] if isinstance(params, list) else params)['n']
                out = types.SimpleNamespace(text='x', token_ids=[1, 2], finish_reason='stop')
                return [types.SimpleNamespace(outputs=[out] * n) for _ in prompts]

        request = types.ModuleType('vllm.lora.request')
        request.LoRARequest = lambda name, i, path: ('lora', name, i, path)
        self.modules = {
            'vllm': types.SimpleNamespace(LLM=LLM, SamplingParams=lambda **kw: kw),
            'vllm.lora': types.ModuleType('vllm.lora'),
            'vllm.lora.request': request,
        }


@pytest.fixture
def fake_vllm(monkeypatch):
    fake = FakeVLLM()
    for k, v in fake.modules.items():
        monkeypatch.setitem(sys.modules, k, v)
    return fake


def test_transformers_kind_from_model_or_directory(world, adapter):
    tok, model = world
    be = make_backend('transformers', model, tok, batch_size=8)
    assert isinstance(be, TransformersBackend) and be.batch_size == 8
    d, _ = adapter
    tok.save_pretrained(d / 'adapter')
    assert isinstance(make_backend('transformers', d / 'adapter'), TransformersBackend)
    with pytest.raises(ValueError, match="did you mean 'transformers'"):
        make_backend('transformer', model, tok)
    with pytest.raises(ValueError, match='needs its tokenizer'):
        make_backend('transformers', model)


def test_vllm_options_seeds_stops_and_truncation(fake_vllm):
    be = make_backend('vllm', 'org/model', tensor_parallel_size=4, gpu_memory_utilization=0.6, max_model_len=4096)
    assert fake_vllm.inits == [
        dict(
            model='org/model',
            enable_prefix_caching=True,
            tensor_parallel_size=4,
            gpu_memory_utilization=0.6,
            max_model_len=4096,
        )
    ]
    out = be.generate(
        ['a', 'b'], n=3, temperature=1.0, max_new_tokens=7, stop=['\n\n'], seed=[5, 6], top_k=50, top_p=0.9
    )
    [call] = fake_vllm.calls
    assert call['params'] == [
        dict(n=3, temperature=1.0, max_tokens=7, stop=['\n\n'], seed=s, top_k=50, top_p=0.9) for s in (5, 6)
    ]
    assert 'lora_request' not in call and out[0] == [Generation('x', 2, True)] * 3
    be.generate(['a'], temperature=1.0, seed=1)
    assert 'top_k' not in fake_vllm.calls[-1]['params'] and 'top_p' not in fake_vllm.calls[-1]['params']
    with pytest.raises(ValueError, match='pass a model directory'):
        make_backend('vllm', object())


def test_vllm_merges_a_lora_adapter_for_real(fake_vllm, adapter, world):
    tok, _ = world
    d, lora = adapter
    be = make_backend('vllm', d / 'adapter')
    merged = d / 'adapter.merged'
    assert fake_vllm.inits[0]['model'] == str(merged) and be.lora_request is None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    x = torch.tensor([tok('Question: 2 + 2?')['input_ids']])
    with torch.no_grad():
        torch.testing.assert_close(
            AutoModelForCausalLM.from_pretrained(merged)(x).logits, lora(x).logits, atol=1e-4, rtol=1e-4
        )
    assert AutoTokenizer.from_pretrained(merged)('2 + 2')['input_ids'] == tok('2 + 2')['input_ids']
    stamp = json.loads((merged / 'sipf_merged_from.json').read_text())['stamp']
    mtime = (merged / 'sipf_merged_from.json').stat().st_mtime_ns
    merge_lora(d / 'adapter')
    assert (merged / 'sipf_merged_from.json').stat().st_mtime_ns == mtime  # cached while the adapter is unchanged
    lora.save_pretrained(d / 'adapter2')
    with torch.no_grad():
        next(p for n, p in lora.named_parameters() if 'lora_B' in n).add_(1.0)
    lora.save_pretrained(d / 'adapter')
    merge_lora(d / 'adapter')
    assert json.loads((merged / 'sipf_merged_from.json').read_text())['stamp'] != stamp  # re-merged when it changed


def test_vllm_serves_a_lora_adapter_with_its_rank(fake_vllm, tmp_path):
    (tmp_path / 'adapter_config.json').write_text(json.dumps({'r': 256, 'base_model_name_or_path': 'google/gemma-2b'}))
    be = make_backend('vllm', tmp_path, lora='serve')
    assert fake_vllm.inits[0] == dict(
        model='google/gemma-2b',
        enable_prefix_caching=True,
        tensor_parallel_size=1,
        gpu_memory_utilization=0.9,
        enable_lora=True,
        max_lora_rank=256,
    )
    be.generate(['q'], temperature=1.0, seed=3)
    assert fake_vllm.calls[0]['lora_request'] == ('lora', 'sipf', 1, str(tmp_path))
    (tmp_path / 'adapter_config.json').write_text(json.dumps({'r': 24, 'base_model_name_or_path': 'b'}))
    make_backend('vllm', tmp_path, lora='serve')
    assert fake_vllm.inits[1]['max_lora_rank'] == 32  # the next rank vLLM accepts
    with pytest.raises(ValueError, match="lora='keep'"):
        make_backend('vllm', tmp_path, lora='keep')


def test_unsloth_models_switch_to_inference(world, monkeypatch):
    tok, model = world
    seen = []
    monkeypatch.setitem(
        sys.modules,
        'unsloth',
        types.SimpleNamespace(FastLanguageModel=types.SimpleNamespace(for_inference=seen.append)),
    )
    make_backend('transformers', model, tok)
    assert seen == []
    make_backend('transformers', model, tok, unsloth=True)
    monkeypatch.setattr(model.config, 'unsloth_version', '2024.8', raising=False)
    make_backend('transformers', model, tok)  # detected from the config unsloth writes
    make_backend('transformers', model, tok, unsloth=False)
    assert seen == [model, model]


def _newline_first(tok):
    nl = tok('\n')['input_ids'][0]

    def hook(module, args, kwargs, out):
        if kwargs['input_ids'].shape[1] > 1:
            out.logits[:, -1, nl] += 1e4
        return out

    return hook


def test_stop_strings_never_match_across_the_prompt(world):
    tok, model = world
    prompts = ['Question: 1 + 2?\nAnswer:\n', 'Question: 5 + 7?\nAnswer:\n']
    be = TransformersBackend(model, tok)
    hook = model.register_forward_hook(_newline_first(tok), with_kwargs=True)
    try:
        gens = be.generate(prompts, n=3, temperature=1.0, max_new_tokens=10, stop=['\n\n'], seed=[1, 2])
        enc = tok(prompts, return_tensors='pt', padding=True, padding_side='left')
        hf = model.generate(
            **enc,
            max_new_tokens=10,
            do_sample=False,
            stop_strings=['\n\n'],
            tokenizer=tok,
            pad_token_id=tok.pad_token_id,
        )
    finally:
        hook.remove()
    assert all(g.text.startswith('\n') and g.n_tokens > 1 and '\n\n' not in g.text for gs in gens for g in gs)
    assert hf.shape[1] - enc['input_ids'].shape[1] == 1  # transformers' stop_strings: stopped after the newline


def test_top_k_reaches_both_samplers(world):
    tok, model = world
    be = TransformersBackend(model, tok)
    prompts = ['Question: 1 + 2?\nAnswer:\n', '12 + 5 = ']
    greedy = greedy_generate(be, prompts, max_new_tokens=10)
    for seed in ([3, 4], 3):
        top1 = be.generate(prompts, n=2, temperature=2.0, max_new_tokens=10, seed=seed, top_k=1)
        assert [[g.text for g in gs] for gs in top1] == [[t, t] for t in greedy]
    wide = be.generate(prompts, n=2, temperature=2.0, max_new_tokens=10, seed=[3, 4], top_k=50, top_p=0.95)
    assert [[g.text for g in gs] for gs in wide] != [[t, t] for t in greedy]


def test_one_cut_at_stop():
    import sipf.sample

    assert cut_at_stop.__module__ == 'sipf.sample' and sipf.sample.cut_at_stop is cut_at_stop
    assert cut_at_stop('a\n\nb', ['\n\n', 'b']) == ('a', True) and cut_at_stop('ab', ()) == ('ab', False)
