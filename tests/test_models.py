"Edge cases of the model loaders, the toy tokenizer and models, SFT and the cached toy M0."

import json
import subprocess
import sys
import threading
import pytest
import torch
from sipf.models import SFTTrainConfig, LoraOptions, load_model, load_tokenizer, train_sft
from sipf.toy import ToyM0Config, recipe_key, toy_config, toy_m0, toy_model, toy_tokenizer, M0_RECIPES


def greedy_complete(model, tok, prompts, max_new_tokens=6):
    "Greedy completions through the one generation backend (what sampling, evaluation and the toy M0 use)."
    from sipf.sample import TransformersBackend, greedy_generate

    return greedy_generate(TransformersBackend(model.eval(), tok), prompts, max_new_tokens=max_new_tokens)


@pytest.fixture(scope='module')
def tok():
    return toy_tokenizer()


def test_tokenizer_deterministic_across_processes(tok):
    code = "from sipf.toy import toy_tokenizer as t; import json; print(json.dumps(t().get_vocab(), sort_keys=1))"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == tok.get_vocab()


def test_tokenizer_digits_and_roundtrip(tok):
    for s in ['Ben: 1234 + 56 = 1290', 'The answer is -7.', 'naïve ünïcode ∑ and\ttabs\n\nnewlines']:
        assert tok.decode(tok(s)['input_ids']) == s
    pieces = [t.lstrip('Ġ') for t in tok.tokenize('x 90817 y')]
    assert [p for p in pieces if p.isdigit()] == list('90817')
    assert tok.pad_token == '<pad>' and tok.padding_side == 'left' and tok.eos_token == '</s>'
    assert 300 < len(tok) <= 512


def test_tokenizer_from_texts():
    t = toy_tokenizer(['aaa bbb aaa bbb 123'] * 10, vocab_size=300)
    assert t.decode(t('aaa 9')['input_ids']) == 'aaa 9' and len(t) <= 300


def test_toy_sizes(tok):
    n = {s: toy_model(tok, s).num_parameters() for s in ('tiny', 'policy', 'simulator')}
    assert n['tiny'] < n['policy'] < n['simulator']
    assert 1.0e6 < n['policy'] < 1.2e6
    with pytest.raises(ValueError, match="unknown toy model size 'big'"):
        toy_config(tok, 'big')
    assert toy_config(tok, 'tiny', num_hidden_layers=3).num_hidden_layers == 3


def test_toy_model_seeded(tok):
    a, b, c = toy_model(tok, 'tiny', seed=1), toy_model(tok, 'tiny', seed=1), toy_model(tok, 'tiny', seed=2)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight) and not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_left_padding_generation_matches_unpadded(tok):
    m = toy_model(tok, 'tiny')
    prompts = [
        'Question: Ann has 5 apples.\nAnswer:\n',
        'Question: Ann has 5 apples. Ben has 3 more apples than Ann.\nAnswer:\n',
    ]
    batched = greedy_complete(m, tok, prompts, max_new_tokens=6)
    single = [greedy_complete(m, tok, [p], max_new_tokens=6)[0] for p in prompts]
    assert batched == single


def test_missing_pad_token_uses_eos(tmp_path, tok):
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer

    raw = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    raw.no_padding()
    t = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token='</s>', unk_token='<unk>')
    assert t.pad_token is None
    t.save_pretrained(tmp_path)
    t2 = load_tokenizer(tmp_path)
    assert t2.pad_token == '</s>' and t2.padding_side == 'left'
    t3 = PreTrainedTokenizerFast(tokenizer_object=raw)
    t3.save_pretrained(tmp_path / 'noeos')
    with pytest.raises(ValueError, match='neither a pad nor an eos'):
        load_tokenizer(tmp_path / 'noeos')


def test_load_model_errors(tmp_path, monkeypatch, tok):
    with pytest.raises(OSError, match='/no/such'):
        load_model('/no/such/dir')
    m = toy_model(tok, 'tiny')
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    monkeypatch.setitem(sys.modules, 'bitsandbytes', None)
    with pytest.raises(ImportError, match="qlora=True needs bitsandbytes"):
        load_model(tmp_path, qlora=True)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match='unsloth=True needs a CUDA GPU'):
            load_model(tmp_path, unsloth=True)


def test_load_model_token_classification_and_lora(tmp_path, tok):
    from transformers import AutoModelForTokenClassification

    m = toy_model(tok, 'tiny')
    m.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    prm, _ = load_model(tmp_path, auto_class=AutoModelForTokenClassification)
    assert prm(**tok(['a b'], return_tensors='pt')).logits.shape[-1] == 2
    lm, _ = load_model(tmp_path, lora_opts=LoraOptions(r=2, target_modules=['q_proj', 'v_proj']), lora=True)
    names = [n for n, p in lm.named_parameters() if p.requires_grad]
    assert names and all('lora_' in n for n in names) and all('q_proj' in n or 'v_proj' in n for n in names)


def test_train_sft_loss_on_completion_only(tmp_path, tok):
    "Trained on one repeated example, the model learns the completion but not the prompt text."
    prompts, comps = ['Question: apples apples apples\nAnswer:\n'] * 32, ['Ann: 3 + 4 = 7\nThe answer is 7'] * 32
    m = toy_model(tok, 'tiny')
    train_sft(
        m,
        tok,
        prompts,
        comps,
        SFTTrainConfig(max_steps=30, batch_size=8, lr=5e-3, logging_steps=5, save=False),
        tmp_path,
    )
    assert greedy_complete(m, tok, prompts[:1], max_new_tokens=20)[0].startswith('Ann: 3 + 4 = 7')
    ids = tok('Question:', return_tensors='pt')['input_ids']
    with torch.no_grad():
        p_prompt_word = m(input_ids=ids).logits[0, -1].softmax(-1)[tok.convert_tokens_to_ids('Ġapples')]
    assert p_prompt_word < 0.2, p_prompt_word  # with loss on the prompt it would be ~1
    assert (tmp_path / 'metrics.jsonl').exists() and not (tmp_path / 'model.safetensors').exists()


def test_train_sft_bad_input(tmp_path, tok):
    with pytest.raises(ValueError, match='equal, non-empty'):
        train_sft(toy_model(tok, 'tiny'), tok, ['a'], [], SFTTrainConfig(), tmp_path)


def test_recipe_key_and_unknown_recipe(tmp_path):
    assert recipe_key(ToyM0Config()) == recipe_key(ToyM0Config())
    assert recipe_key(ToyM0Config()) != recipe_key(ToyM0Config(seed=1))
    with pytest.raises(ValueError, match="unknown M0 recipe 'polcy'.*did you mean 'policy'"):
        toy_m0('polcy', cache_dir=tmp_path)
    assert set(M0_RECIPES) >= {'quick', 'policy', 'simulator'}


def test_recipe_key_follows_the_worlds_defaults(monkeypatch):
    "A changed arith default changes the toy world, so it must retrain M0, not reuse a cached one."
    import dataclasses
    import sipf.arith

    before = recipe_key(ToyM0Config())

    @dataclasses.dataclass
    class Harder(sipf.arith.ArithConfig):
        max_value: int = 99

    monkeypatch.setattr(sipf.arith, 'ArithConfig', Harder)
    assert recipe_key(ToyM0Config()) != before
    monkeypatch.undo()
    assert recipe_key(ToyM0Config()) == before


def test_train_sft_keeps_stdout_clean(tmp_path, tok, capfd):
    "Trainer log dicts go to metrics.jsonl, not stdout (TRL/transformers print them by default)."
    model = toy_model(tok, 'tiny')
    cfg = SFTTrainConfig(max_steps=2, batch_size=2, logging_steps=1, save=False)
    train_sft(model, tok, ['Question: 1+1?\nAnswer:\n'] * 4, ['1 + 1 = 2\nThe answer is 2'] * 4, cfg, tmp_path)
    out = capfd.readouterr().out
    assert "'loss'" not in out and 'train_runtime' not in out
    logged = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert any('loss' in r for r in logged)


def test_toy_m0_cached_and_race_free(tmp_path):
    cfg = ToyM0Config(n_train=64, epochs=1.0, batch_size=16, size='tiny', n_eval=8)
    paths = []
    ths = [threading.Thread(target=lambda: paths.append(toy_m0(cfg, cache_dir=tmp_path, n_test=16))) for _ in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    assert len(paths) == 2 and paths[0] == paths[1]
    ev = json.loads((paths[0] / 'eval.json').read_text())
    assert {'test_acc', 'train_acc', 'step_errors', 'train_seconds'} <= set(ev)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith('.')] == [paths[0].name]
    assert not [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith('.')]  # no temp dirs left
    model, t = load_model(paths[0])
    assert model.num_parameters() == toy_model(t, 'tiny').num_parameters()
    mtime = (paths[0] / 'eval.json').stat().st_mtime
    assert toy_m0(cfg, cache_dir=tmp_path, n_test=16) == paths[0] and (paths[0] / 'eval.json').stat().st_mtime == mtime
