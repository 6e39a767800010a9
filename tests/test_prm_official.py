"""The PRM on the new config: adapters and their rank, 4-bit QLoRA, device and precision, the official inputs, labels
that reach the loss, the longest batch first, progress bars."""

import importlib.util
import json
import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import sipf.models
from sipf.config import LoraOptions, PRMConfig
from sipf.core import Path, Problem, StepLabels
from sipf.toy import toy_tokenizer
from sipf.prm import (
    example_row,
    is_answer_line,
    load_prm,
    longest_first,
    prm_examples,
    prm_model,
    prm_placement,
    prm_rows,
    prm_trainer,
    read_prm_config,
    score_paths,
    separator_id,
    simulated_labels,
    step_inputs,
    synthetic_paths,
    tokenize_steps,
    train_prm,
)
from sipf.tasks import load_task

torch.set_num_threads(1)  # tiny models on a shared 2-core CPU

HAS_BNB = importlib.util.find_spec('bitsandbytes') is not None


@pytest.fixture(scope='module')
def tok():
    return toy_tokenizer()


@pytest.fixture(scope='module')
def llama_cfg(tok):
    "A tiny Llama; hidden 64 so bitsandbytes' 4-bit blocks (64) fit its weights."
    return LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
    )


@pytest.fixture(scope='module')
def arith():
    "8 arith train problems, one slipped copy each (the gold paths come from `gold_paths`), synthetic MC labels."
    task = load_task('arith', split='train', n=8)
    paths = [p for p in synthetic_paths(task, n_wrong=1, seed=0) if p.meta]
    return task, paths, simulated_labels(task, paths, seed=0)


def _base_dir(llama_cfg, tok, path):
    torch.manual_seed(0)
    LlamaForCausalLM(llama_cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------- 1. adapters from config.adapter / config.lora


def test_saved_adapter_has_the_configured_rank(llama_cfg, tmp_path):
    lora = LoraOptions(r=4, alpha=8, dropout=0.0, target_modules='q_proj, v_proj')
    prm = prm_model(llama_cfg, PRMConfig(adapter='lora', lora=lora))
    prm.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / 'adapter_config.json').read_text())
    assert (saved['r'], saved['lora_alpha'], saved['lora_dropout']) == (4, 8, 0.0)
    assert set(saved['target_modules']) == {'q_proj', 'v_proj'}
    trainable = {n for n, p in prm.named_parameters() if p.requires_grad}
    assert any('score' in n for n in trainable) and not any('mlp' in n for n in trainable)


# ---------------------------------------------------------------- 2. progress bars, no log dicts on stdout


def test_progress_bars_and_no_log_dicts_on_stdout(arith, llama_cfg, tok, tmp_path, capsys):
    task, paths, labels = arith
    cfg = PRMConfig(max_steps=2, batch_size=4, logging_steps=1, progress=True)
    prm = train_prm(llama_cfg, tok, prm_examples(task, paths, labels), cfg, tmp_path)
    score_paths(prm, tok, task, paths)  # progress from the PRM's own config
    out, err = capsys.readouterr()
    assert "'loss'" not in out and "'train_runtime'" not in out, out
    assert '2/2' in err and 'PRM scoring' in err, err
    score_paths(prm, tok, task, paths, progress=False)
    assert 'PRM scoring' not in capsys.readouterr().err


# ---------------------------------------------------------------- 3. QLoRA PRM: the head stays out of 4 bits


@pytest.mark.skipif(
    not HAS_BNB, reason='bitsandbytes is not installed (not a dev dependency): pip install bitsandbytes'
)
def test_qlora_prm_trains_one_step_and_reloads_on_cpu(arith, llama_cfg, tok, tmp_path):
    import bitsandbytes as bnb

    task, paths, labels = arith
    base = _base_dir(llama_cfg, tok, tmp_path / 'base')
    cfg = PRMConfig(adapter='qlora', lora=LoraOptions(r=4, alpha=8), max_steps=1, batch_size=4, progress=False)
    prm = train_prm(base, tok, prm_examples(task, paths, labels), cfg, tmp_path / 'prm')
    saved = json.loads((tmp_path / 'prm' / 'adapter_config.json').read_text())
    assert (saved['r'], saved['lora_alpha']) == (4, 8)
    loaded = load_prm(tmp_path / 'prm')
    for m in (prm, loaded):
        assert any(isinstance(x, bnb.nn.Linear4bit) for x in m.modules())
        heads = [x for n, x in m.named_modules() if n.endswith('score.modules_to_save.default')]
        assert heads and not isinstance(heads[0], bnb.nn.Linear4bit)
    a, b = score_paths(prm, tok, task, paths[:4]), score_paths(loaded, tok, task, paths[:4])
    assert all(math.isclose(x.meta['reward'], y.meta['reward'], abs_tol=1e-4) for x, y in zip(a, b))


# ---------------------------------------------------------------- 4. the PRM on the configured device


def test_prm_placement_follows_the_device_and_the_precision(monkeypatch):
    monkeypatch.setattr(sipf.models, 'default_device', lambda: 'cuda')
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: True)
    assert prm_placement(PRMConfig()) == ('cuda', torch.bfloat16)
    assert prm_placement(PRMConfig(precision='fp32')) == ('cuda', torch.float32)
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: False)
    assert prm_placement(PRMConfig()) == ('cuda', torch.float16)
    monkeypatch.setattr(sipf.models, 'default_device', lambda: 'cpu')
    assert prm_placement(PRMConfig()) == ('cpu', torch.float32)
    assert prm_placement(PRMConfig(precision='bf16'), 'cpu') == ('cpu', torch.bfloat16)


def test_load_prm_uses_the_device_and_the_saved_precision(llama_cfg, tok, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sipf.models, 'default_device', lambda: calls.append(1) or 'cpu')
    prm = prm_model(llama_cfg)
    prm.save_pretrained(tmp_path)
    (tmp_path / 'prm_config.json').write_text(json.dumps({'precision': 'bf16', 'lora_r': 4}))
    assert read_prm_config(tmp_path).precision == 'bf16'  # an older key ('lora_r') is dropped, not fatal
    p = next(load_prm(tmp_path).parameters())
    assert (p.device.type, p.dtype, len(calls)) == ('cpu', torch.bfloat16, 1)
    assert next(load_prm(tmp_path, device='cpu', dtype=torch.float32).parameters()).dtype == torch.float32


# ---------------------------------------------------------------- 5. the PRM as the official code trains it


def test_prm_inputs_without_the_answer_line_and_with_gold_paths(arith):
    task, paths, labels = arith
    ex = prm_examples(task, paths, labels)
    sampled, gold = ex[: len(paths)], ex[len(paths) :]
    assert all(not is_answer_line(task, s) for e in ex for s in e['steps'])
    assert [e['steps'] for e in sampled] == [p.steps[:-1] for p in paths]
    assert [e['labels'] for e in sampled] == [[float(l) for l in sl.labels[:-1]] for sl in labels]
    assert [e['id'] for e in gold] == [f'gold:{p.id}' for p in task.problems]
    assert all(e['labels'] == e['soft'] == [1.0] * len(e['steps']) for e in gold)
    assert ex[0]['prompt'] == task.by_id(paths[0].problem_id).question + '\nPlease reason step by step.\n'
    legacy = prm_examples(task, paths, labels, PRMConfig(answer_step='include', gold_paths=False, prompt_format='task'))
    assert [e['steps'] for e in legacy] == [p.steps for p in paths]
    assert legacy[0]['prompt'] == task.prompt(task.by_id(paths[0].problem_id))


def test_scoring_skips_the_answer_line_unless_included(arith, llama_cfg, tok):
    task, paths, _ = arith
    off = score_paths(prm_model(llama_cfg), tok, task, paths[:3], progress=False)
    for p in off:
        s = p.meta['step_scores']
        assert len(s) == len(p.steps) and s[-1] is None and None not in s[:-1]
        assert math.isclose(p.meta['reward'], sum(s[:-1]) / len(s[:-1]))
    inc = score_paths(prm_model(llama_cfg, PRMConfig(answer_step='include')), tok, task, paths[:3], progress=False)
    assert all(None not in p.meta['step_scores'] for p in inc)


def test_the_label_sits_on_an_appended_separator(tok):
    ids, ends = step_inputs(tok, 'Q:\n', ['1 + 1 = 2', '2 + 2 = 4'])
    assert [ids[e] for e in ends] == [separator_id(tok)] * 2 == [tok.eos_token_id] * 2
    assert tok.decode(ids[: ends[0]]) == 'Q:\n1 + 1 = 2\n'
    row = tokenize_steps(tok, 'Q:\n', ['1 + 1 = 2', '2 + 2 = 4'], [1, 0])
    assert [i for i, l in enumerate(row['labels']) if l != -100] == ends  # training and scoring read the same


def test_code_chunk_labels_are_copied_to_each_line():
    class Code:
        kind = 'code'

        def prompt(self, p, style='instruct'):
            return f'Write {p.question}\n'

        def by_id(self, i):
            return Problem(i, 'f', solution='def f():\n    return 1')

        def split_steps(self, text):
            return [l for l in text.split('\n') if l.strip()]

    p = Path('q', 'def f():\n    x = 1\n    return x', steps=['def f():', '    x = 1', '    return x'])
    sl = StepLabels(p.id, 'q', hits=[6, 0], n=[6, 6], labels=[1, 0], meta={'chunks': [1, 2]})
    ex = prm_examples(Code(), [p], [sl])
    assert ex[0]['labels'] == [1.0, 0.0, 0.0] and ex[0]['soft'] == [1.0, 0.0, 0.0] and ex[0]['prompt'] == 'Write f\n'
    assert ex[1] == {'id': 'gold:q', 'prompt': 'Write f\n', 'steps': ['def f():', '    return 1'],
                     'labels': [1.0, 1.0], 'soft': [1.0, 1.0]}  # fmt: skip


# ---------------------------------------------------------------- 6. labels that reach the loss


def test_a_row_that_would_lose_labels_is_refused_in_training_and_scoring(arith, llama_cfg, tok, tmp_path):
    task, paths, labels = arith
    ex = prm_examples(task, paths, labels)
    short = PRMConfig(max_length=12, progress=False)
    with pytest.raises(ValueError, match=f"path {paths[0].id}: .* would drop a labelled step"):
        train_prm(llama_cfg, tok, ex, short, tmp_path)
    with pytest.raises(ValueError, match=f"path {paths[0].id}: .* would drop a labelled step"):
        score_paths(prm_model(llama_cfg, short), tok, task, paths)
    rows = prm_rows(tok, ex, PRMConfig())
    assert [sum(l != -100 for l in r['labels']) for r in rows] == [len(e['steps']) for e in ex]
    n = len(rows[0]['input_ids'])
    fit = example_row(tok, ex[0], PRMConfig(max_length=n - 5))  # a cut of the prompt only keeps every label
    assert fit['labels'] == rows[0]['labels'][5:]


def test_none_labels_and_unprobed_soft_labels_give_no_signal(tok):
    task = type('T', (), {'prompt': lambda s, p, style='instruct': 'Q:\n', 'by_id': lambda s, i: Problem(i, 'q')})()
    p = Path('q', 'a\nb\nc', steps=['1 + 1 = 2', '2 + 2 = 4', '4 + 4 = 8'])
    sl = StepLabels(p.id, 'q', hits=[8, 0, 0], n=[8, 0, 8], labels=[1, None, 0])  # step 1 masked and unprobed
    ex = prm_examples(task, [p], [sl], PRMConfig(prompt_format='task'))
    assert ex[0]['labels'] == [1.0, None, 0.0] and ex[0]['soft'] == [1.0, None, 0.0]
    binary = StepLabels(p.id, 'q', hits=[8, 0, 0], n=[8, 0, 0], labels=[1, 1, 0], strategy='binary')
    soft = prm_examples(task, [p], [binary], PRMConfig(prompt_format='task'))[0]['soft']
    assert soft == [1.0, None, None]  # never a soft target of 0 on a step no rollout probed
    for labels in (ex[0]['soft'], soft):
        row = example_row(tok, {**ex[0], 'soft': labels}, PRMConfig(soft=True))
        assert [l for l in row['labels'] if l != -100] == [l for l in labels if l is not None]


# ---------------------------------------------------------------- 7. the longest batch first


def test_the_first_batch_holds_the_longest_rows(arith, llama_cfg, tok, tmp_path):
    task, paths, labels = arith
    rows = prm_rows(tok, prm_examples(task, paths, labels), PRMConfig())
    lengths = [len(r['input_ids']) for r in rows]

    def first_batch(**kw):
        t = prm_trainer(prm_model(llama_cfg), tok, rows, PRMConfig(batch_size=3, **kw), tmp_path)
        return [list(b['attention_mask'].sum(1)) for b in t.get_train_dataloader()]

    a, b = first_batch(seed=0), first_batch(seed=0)
    assert a == b and sorted(a[0], reverse=True) == sorted(lengths, reverse=True)[:3]
    assert first_batch(seed=1)[1:] != a[1:]  # the rest is a seeded shuffle
    assert sorted(x for batch in a for x in batch) == sorted(lengths)
    order = longest_first(lengths, 3, seed=0)
    assert order[:3] == sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))[:3]
    assert longest_first(lengths, 3, seed=0, epoch=1) != order


# ---------------------------------------------------------------- 10. the best epoch on held-out paths (official)


def _train_with_snapshots(monkeypatch, arith, llama_cfg, tok, out, **cfg):
    "Train a PRM for 3 epochs; the weights at each epoch's end (the ones that epoch's evaluation sees) recorded."
    from transformers import TrainerCallback

    snaps, make = [], sipf.prm.prm_trainer

    class Snap(TrainerCallback):
        def on_epoch_end(self, args, state, control, model=None, **kw):
            snaps.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def with_snapshots(*a, **k):
        trainer = make(*a, **k)
        trainer.add_callback(Snap())
        return trainer

    monkeypatch.setattr(sipf.prm, 'prm_trainer', with_snapshots)
    task, paths, labels = arith
    config = PRMConfig(epochs=3, lr=3e-3, batch_size=4, progress=False, **cfg)
    prm = train_prm(llama_cfg, tok, prm_examples(task, paths, labels), config, out)
    return prm, snaps


def _same(state, snap):
    return all(torch.equal(state[k], snap[k]) for k in snap)


def test_the_saved_prm_is_the_best_held_out_epoch(arith, llama_cfg, tok, tmp_path, monkeypatch):
    scores = iter([0.2, 0.9, 0.4])  # epoch 2 is the best: not the last one
    monkeypatch.setattr(sipf.prm, 'held_step_accuracy', lambda ev: {'step_acc': next(scores)})
    prm, snaps = _train_with_snapshots(monkeypatch, arith, llama_cfg, tok, tmp_path, holdout=0.25)
    state = prm.state_dict()
    assert len(snaps) == 3 and _same(state, snaps[1]) and not _same(state, snaps[2])
    records = [json.loads(l) for l in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
    assert [r['eval_step_acc'] for r in records if 'eval_step_acc' in r] == [0.2, 0.9, 0.4]
    assert not list(tmp_path.glob('checkpoint-*'))  # the checkpoints are gone once the best one is saved
    reloaded = load_prm(tmp_path).state_dict()
    assert _same(reloaded, {k: v for k, v in snaps[1].items() if k in reloaded})


def test_holdout_zero_keeps_the_last_epoch_and_trains_on_every_path(arith, llama_cfg, tok, tmp_path, monkeypatch):
    prm, snaps = _train_with_snapshots(monkeypatch, arith, llama_cfg, tok, tmp_path, holdout=0.0)
    assert len(snaps) == 3 and _same(prm.state_dict(), snaps[2])
    assert 'eval_step_acc' not in (tmp_path / 'metrics.jsonl').read_text()


def test_the_held_out_metric_is_the_official_path_mean():
    from types import SimpleNamespace

    from sipf.prm import held_step_accuracy

    logits = torch.tensor([[[2.0], [-1.0], [-100.0]], [[0.5], [3.0], [-2.0]], [[-100.0], [-100.0], [-100.0]]])
    labels = torch.tensor([[1.0, 1.0, -100.0], [0.0, 1.0, 0.0], [-100.0, -100.0, -100.0]])
    got = held_step_accuracy(SimpleNamespace(predictions=logits.numpy(), label_ids=labels.numpy()))['step_acc']
    assert math.isclose(got, (1 / 2 + 2 / 3) / 2)  # a path with no labelled step does not count
