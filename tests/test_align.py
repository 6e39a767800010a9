"Edge cases of sipf.align: ORPO NLL fix on a tiny model, zero pairs, configs, every objective, determinism, torchrun."

import json
import logging
import os
import subprocess
import sys

os.environ.setdefault('TRL_EXPERIMENTAL_SILENCE', '1')
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from trl.experimental.orpo import ORPOTrainer

from sipf.config import LoraOptions
from sipf.align import (
    AlignConfig,
    CompletionORPOTrainer,
    align,
    align_preset,
    completion_nll,
    logp_traces,
    logp_trend,
    parse_sets,
    plot_logps,
    preference_rows,
    trl_args,
)
from sipf.core import Pair, read_jsonl, write_jsonl
from sipf.toy import toy_model, toy_tokenizer
from sipf.tasks import load_task


@pytest.fixture(scope='module')
def tok():
    return toy_tokenizer()


@pytest.fixture(scope='module')
def pairs():
    task = load_task('arith', split='train', n=8, seed=3, max_distractors=0, min_steps=1, max_steps=2)
    return [
        Pair(p.id, task.prompt(p), p.solution, p.solution.replace('The answer is', 'The answer is 1'))
        for p in task.problems
    ]


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory, tok):
    d = tmp_path_factory.mktemp('m0')
    toy_model(tok, 'tiny', seed=0).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def _cfg(**kw):
    return AlignConfig(**{**dict(max_steps=2, batch_size=4, lr=1e-3, logging_steps=1), **kw})


# ------------------------------------------------------------------ the NLL term of ORPO
def _first_batch(cls, model, tok, pair, tmp_path):
    ds = Dataset.from_dict(preference_rows([pair]))
    trainer = cls(model=model, args=trl_args(_cfg(), tmp_path, use_cpu=True), train_dataset=ds, processing_class=tok)
    return trainer, next(iter(trainer.get_train_dataloader()))


def test_orpo_nll_is_on_the_completion_only(tok, pairs, tmp_path):
    "TRL 1.16's ORPO NLL covers prompt + completion; ours equals a hand-computed completion-only cross entropy."
    model, pair = toy_model(tok, 'tiny', seed=1).eval(), pairs[0]
    stock, batch = _first_batch(ORPOTrainer, model, tok, pair, tmp_path / 'a')
    fixed, _ = _first_batch(CompletionORPOTrainer, model, tok, pair, tmp_path / 'b')
    ids = batch['chosen_input_ids'][:1]
    n_prompt = 1 + len(tok(pair.prompt, add_special_tokens=False)['input_ids'])  # BOS + prompt tokens
    assert ids[0, 0].item() == tok.bos_token_id and ids[0, -1].item() == tok.eos_token_id
    assert (batch['chosen_labels'][0] == -100).sum().item() == n_prompt  # TRL's labels mask exactly the prompt
    with torch.no_grad():
        logits = model(ids).logits[0]
        completion_ce = F.cross_entropy(logits[n_prompt - 1 : -1], ids[0, n_prompt:])  # tokens after the prompt
        full_ce = F.cross_entropy(logits[:-1], ids[0, 1:])  # every token after BOS
        nll_stock = stock.concatenated_forward(model, batch)[4]
        nll_fixed = fixed.concatenated_forward(model, batch)[4]
    assert torch.allclose(nll_stock, full_ce, atol=1e-5)  # the behaviour the fix exists for
    assert torch.allclose(nll_fixed, completion_ce, atol=1e-5)
    assert abs(nll_fixed - nll_stock) > 1e-3
    out_s, out_f = stock.concatenated_forward(model, batch), fixed.concatenated_forward(model, batch)
    for a, b in zip(out_s[:4], out_f[:4]):
        assert torch.equal(a, b)  # everything else untouched


def test_completion_nll_batch_of_different_lengths():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 1, 2, -100, -100]])
    want = F.cross_entropy(
        torch.stack([logits[0, 1], logits[0, 2], logits[0, 3], logits[1, 0], logits[1, 1]]),
        torch.tensor([3, 4, 5, 1, 2]),
    )
    assert torch.allclose(completion_nll(logits, labels), want)
    assert torch.allclose(
        completion_nll(logits, labels[:, :4]),
        F.cross_entropy(
            torch.stack([logits[0, 1], logits[0, 2], logits[1, 0], logits[1, 1]]), torch.tensor([3, 4, 1, 2])
        ),
    )


# ------------------------------------------------------------------ configs and empty input
def test_configs():
    with pytest.raises(ValueError, match="unknown objective 'orpo2'"):
        AlignConfig(objective='orpo2')
    with pytest.raises(KeyError, match="did you mean 'lr'"):
        align_preset('toy', lrr=1.0)
    with pytest.raises(KeyError, match="unknown AlignConfig key 'nll'"):
        parse_sets(['nll=1'])
    p = align_preset('paper')
    lora = (p.lora.r, p.lora.alpha, p.lora.dropout, p.adapter == 'qlora')
    assert (p.lr, p.warmup_ratio, p.max_grad_norm, p.beta, *lora) == (
        5e-5,
        0.1,
        0.3,
        0.1,
        256,
        128,
        0.05,
        True,
    )
    a = trl_args(p, '/tmp/x', use_cpu=True)
    assert (a.bf16, a.fp16, a.beta, a.max_grad_norm) == (False, False, 0.1, 0.3)  # bf16 never on CPU
    d = trl_args(AlignConfig(objective='dpo', beta=0.3), '/tmp/x', use_cpu=True)
    assert (d.loss_type, d.beta) == (['sigmoid'], 0.3)


def test_zero_pairs_skips_stage(model_dir, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger='sipf.align'):
        assert align(model_dir, [], AlignConfig(), tmp_path / 'out') is None
    assert 'no preference pairs' in caplog.text and 'stage skipped' in caplog.text
    assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------------ every objective trains, saves, traces
CASES = {
    'orpo': {},
    'dpo': dict(max_steps=4, trace_steps=2, trace_pairs=4),
    'rpo': dict(adapter='lora', lora=LoraOptions(r=4, alpha=8)),
    'sft': {},
}


@pytest.mark.parametrize('objective', list(CASES))
def test_objectives_save_model_and_metrics(objective, model_dir, pairs, tmp_path):
    out = align(model_dir, pairs, _cfg(objective=objective, **CASES[objective]), tmp_path / objective)
    assert out == tmp_path / objective and (out / 'tokenizer.json').exists()
    if objective == 'rpo':
        assert (out / 'adapter_config.json').exists()  # LoRA saves the adapter
        adapter = json.loads((out / 'adapter_config.json').read_text())
        assert (adapter['r'], adapter['lora_alpha']) == (4, 8)  # the rank the config says (issue 11 item 2)
    else:
        assert (out / 'config.json').exists() and any(out.glob('*.safetensors'))
    assert read_jsonl(out / 'metrics.jsonl')
    if objective == 'sft':
        return
    assert json.loads((out / 'align_config.json').read_text())['n_rows'] == len(pairs)
    t = logp_traces(out / 'metrics.jsonl')
    assert all(x < 0 for x in t['chosen'] + t['rejected'])
    if objective == 'dpo':  # the fixed trace set: at the start and every 2 steps
        assert t['step'] == [0, 2, 4] and len(logp_traces(out / 'metrics.jsonl', source='train')['step']) == 4
        assert set(logp_trend(out / 'metrics.jsonl')) == {'chosen', 'rejected'}
        fig = plot_logps([out / 'metrics.jsonl'] * 2, labels=['a', 'b'])
        assert [ax.get_title() for ax in fig.axes] == ['a', 'b']
    else:
        assert len(t['step']) == 2


def test_same_seed_same_model(model_dir, pairs, tmp_path):
    from safetensors.torch import load_file

    a = align(model_dir, pairs, _cfg(), tmp_path / 'a')
    b = align(model_dir, pairs, _cfg(), tmp_path / 'b')
    wa, wb = load_file(next(a.glob('*.safetensors'))), load_file(next(b.glob('*.safetensors')))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], load_file(next(model_dir.glob('*.safetensors')))[k]) for k in wa)  # it trained


# ------------------------------------------------------------------ two processes through torchrun (gloo, CPU)
def test_torchrun_two_processes(model_dir, pairs, tmp_path):
    write_jsonl(tmp_path / 'pairs.jsonl', pairs)
    cmd = [
        sys.executable,
        '-m',
        'torch.distributed.run',
        '--standalone',
        '--nproc_per_node',
        '2',
        '-m',
        'sipf.align',
        str(model_dir),
        str(tmp_path / 'pairs.jsonl'),
        str(tmp_path / 'out'),
        '--set',
        'objective=orpo',
        'max_steps=2',
        'batch_size=2',
        '--set',
        'logging_steps=1',
    ]
    env = {**os.environ, 'TRL_EXPERIMENTAL_SILENCE': '1', 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / 'out'
    cfg = json.loads((out / 'align_config.json').read_text())
    assert (cfg['world_size'], cfg['objective'], cfg['max_steps']) == (2, 'orpo', 2)
    assert any(out.glob('*.safetensors')) and (out / 'tokenizer.json').exists()
    assert len(logp_traces(out / 'metrics.jsonl')['step']) == 2  # one writer (rank 0), one record per step


def test_capped_steps_and_recorded_budget(tmp_path):
    "A stage with few rows is not trained on them for dozens of epochs; the steps really run are recorded."
    from sipf.align import capped_steps

    c = AlignConfig(objective='sft', max_steps=40, max_epochs=2, batch_size=4, lr=1e-3, logging_steps=1)
    assert [capped_steps(c, n) for n in (1, 6, 1000)] == [1, 3, 40]
    assert capped_steps(AlignConfig(max_steps=-1, max_epochs=2), 10) == -1  # epochs mode untouched
    from sipf.toy import toy_model, toy_tokenizer

    tok = toy_tokenizer()
    model_dir = tmp_path / 'm'
    toy_model(tok, 'tiny').save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rows = [{'prompt': 'Question: 1+1?\nAnswer:\n', 'completion': '1 + 1 = 2\nThe answer is 2'}] * 6
    out = align(str(model_dir), rows, c, tmp_path / 'out')
    rec = json.loads((out / 'align_config.json').read_text())
    assert rec['max_steps'] == 3 and rec['n_rows'] == 6
    assert max(json.loads(l).get('step', 0) for l in (out / 'metrics.jsonl').read_text().splitlines()) == 3


# ------------------------------------------------------------------ what the anchors' users hit (issue 12)
def test_orpo_odds_ratio_is_finite_on_near_deterministic_completions():
    "TRL #2564/#4763: near logp = 0 TRL 1.16's loss is finite but its gradient NaN; our trainer's both stay finite."
    from types import SimpleNamespace

    chosen = torch.tensor([-1e-9, -1e-7, -1e-4, -0.7], requires_grad=True)
    rejected = torch.tensor([-2.0, -1e-8, -3.0, -1e-9], requires_grad=True)
    fake = SimpleNamespace(beta=0.1, accelerator=SimpleNamespace(device='cpu'))
    losses = CompletionORPOTrainer.odds_ratio_loss(fake, chosen, rejected)[0]
    losses.sum().backward()
    assert torch.isfinite(losses).all() and torch.isfinite(chosen.grad).all() and torch.isfinite(rejected.grad).all()
    grads = chosen.grad.clone()
    chosen.grad = rejected.grad = None
    ORPOTrainer.odds_ratio_loss(fake, chosen, rejected)[0].sum().backward()  # TRL's own: the check can fail
    assert torch.isnan(chosen.grad).any()
    assert torch.allclose(grads[1:], chosen.grad[1:], rtol=1e-4)  # the same where TRL's is finite


def test_prompts_that_fill_max_length_are_dropped_by_id(model_dir, pairs, tmp_path, caplog):
    "TRL #1473: a prompt alone filling max_length leaves an empty completion (NaN); such rows go, named in the log."
    from sipf.align import fitting_rows

    long = Pair('q-long', pairs[0].prompt * 40, pairs[0].chosen, pairs[0].rejected)
    tok = toy_tokenizer()
    with caplog.at_level(logging.WARNING):
        kept = fitting_rows(tok, [*pairs, long], 128)
    assert kept == list(pairs) and 'q-long' in caplog.text and '1 of 9 rows dropped' in caplog.text
    out = align(model_dir, [*pairs, long], _cfg(max_length=128), tmp_path / 'm1')
    assert json.loads((out / 'align_config.json').read_text())['n_rows'] == len(pairs)
    losses = [r['loss'] for r in read_jsonl(out / 'metrics.jsonl') if 'loss' in r]
    assert losses and all(l == l for l in losses)  # no NaN
    with pytest.raises(ValueError, match='every prompt fills align.max_length=128'):
        align(model_dir, [long], _cfg(max_length=128), tmp_path / 'm2')


def test_a_frozen_adapter_is_refused_with_the_fix(model_dir, pairs, tmp_path):
    "A LoRA directory loaded with adapter 'none' has no trainable weight: M1 would equal M0 (grad_norm 0) - refused."
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    m = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(r=4, target_modules=['q_proj']))
    m.save_pretrained(tmp_path / 'lora')
    toy_tokenizer().save_pretrained(tmp_path / 'lora')
    with pytest.raises(ValueError, match='every weight of the model is frozen.*set adapter: lora'):
        align(tmp_path / 'lora', pairs, _cfg(adapter='none'), tmp_path / 'm1')
    assert (tmp_path / 'lora' / 'adapter_config.json').exists() and not (tmp_path / 'm1').exists()
