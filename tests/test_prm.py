"Edge cases of sipf.prm: step-end tokens on real tokenizers, labels, loss, training determinism, scoring, metrics."

import json
import math
import random
import re
import types

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sipf.core import Path, Problem, StepLabels, data_dir
from sipf.toy import toy_tokenizer
from sipf.config import LoraOptions, PRMConfig, check_config
from sipf.prm import (
    aggregate,
    bce_step_loss,
    encode_steps,
    evaluate_prm,
    example_row,
    load_prm,
    outcome_labels,
    pad_rows,
    prm_examples,
    prm_model,
    score_paths,
    sentencepiece_tokenizer,
    step_end_tokens,
    step_metrics,
    step_probs,
    step_spans,
    tokenize_steps,
    train_prm,
)


torch.set_num_threads(1)  # tiny models on a shared 2-core CPU

# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope='module')
def llama_tok():
    return sentencepiece_tokenizer(data_dir() / 'llama2-tokenizer.model')


@pytest.fixture(scope='module')
def gsm8k_rows():
    rows = [json.loads(l) for l in (data_dir() / 'gsm8k' / 'train.jsonl').read_text().splitlines()[:60]]
    out = []
    for r in rows:
        steps = [s.strip() for s in r['answer'].split('\n') if s.strip()]
        out.append(
            (f"Question: {r['question']}\nAnswer:\n", steps[:-1] + [f"The answer is {steps[-1].lstrip('#').strip()}"])
        )
    return out


@pytest.fixture(scope='module')
def toy_tok():
    "The toy world's byte-level BPE tokenizer (digits single tokens, left padding, no BOS)."
    return toy_tokenizer()


class TinyTask:
    "The smallest task surface the PRM uses: prompt, by_id and (toy world) step_truth."

    name = 'tiny'

    def __init__(self, problems):
        self.problems = {p.id: p for p in problems}

    def prompt(self, p, style='instruct'):
        return f"Question: {p.question}\nAnswer:\n"

    def by_id(self, i):
        return self.problems[i]

    def step_truth(self, p, text, cumulative=False):
        out = []
        for line in text.split('\n'):
            m = re.fullmatch(r'(\d+) \+ (\d+) = (\d+)', line)
            out.append(bool(m) and int(m[1]) + int(m[2]) == int(m[3]) or line == f'The answer is {p.answer}')
        return [all(out[: i + 1]) for i in range(len(out))] if cumulative else out


def _paths(n, seed=0):
    "Paths of one-addition problems, half of them with a wrong sum; labels are exact."
    rng, problems, paths = random.Random(seed), [], []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        p = Problem(f'q{i}', f'Ann has {a} pens and buys {b}. How many?', answer=str(a + b))
        ok = rng.random() < 0.5
        c = a + b if ok else a + b + rng.randint(1, 3)
        steps = [f'{a} + {b} = {c}', f'The answer is {c}']
        problems.append(p)
        paths.append(Path(p.id, '\n'.join(steps), steps=steps, answer=str(c), correct=ok))
    return TinyTask(problems), paths


@pytest.fixture(scope='module')
def tiny_world(toy_tok):
    task, paths = _paths(80)
    return (
        task,
        paths,
        LlamaConfig(
            vocab_size=len(toy_tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=toy_tok.pad_token_id,
        ),
    )


# ---------------------------------------------------------------- tokenisation


def test_sentencepiece_tokenizer_matches_sentencepiece(llama_tok, gsm8k_rows):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(data_dir() / 'llama2-tokenizer.model'))
    for p, s in gsm8k_rows:
        text = p + '\n'.join(s)
        assert llama_tok(text)['input_ids'] == [sp.bos_id()] + sp.encode(text)


def test_sentencepiece_tokenizer_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='no SentencePiece model'):
        sentencepiece_tokenizer(tmp_path / 'nope.model')


@pytest.mark.parametrize('which', ['llama', 'toy'])
def test_step_ends_hold_each_steps_last_character(which, llama_tok, toy_tok, gsm8k_rows):
    tok = llama_tok if which == 'llama' else toy_tok
    for prompt, steps in gsm8k_rows:
        enc = tok(prompt + '\n'.join(steps), return_offsets_mapping=True)
        ids, ends = encode_steps(tok, prompt, steps)
        assert ids == enc['input_ids'] and len(ends) == len(steps) and ends == sorted(set(ends))
        for (a, b), e in zip(step_spans(prompt, steps), ends):
            s, t = enc['offset_mapping'][e]
            assert s < b <= t, (which, steps)  # the token holds the step's last character
            if e + 1 < len(ids):  # and the next token is past the step
                assert enc['offset_mapping'][e + 1][0] >= b


def test_llama_newline_is_its_own_token_after_each_step(llama_tok, gsm8k_rows):
    for prompt, steps in gsm8k_rows[:20]:
        ids, ends = encode_steps(llama_tok, prompt, steps)
        toks = llama_tok.convert_ids_to_tokens(ids)
        assert toks[0] == '<s>'
        assert all(toks[e + 1] == '<0x0A>' for e in ends[:-1]) and ends[-1] == len(ids) - 1


@pytest.mark.parametrize('which', ['llama', 'toy'])
def test_offsets_and_prefix_fallback_agree(which, llama_tok, toy_tok, gsm8k_rows):
    tok = llama_tok if which == 'llama' else toy_tok
    for prompt, steps in gsm8k_rows[:25]:
        assert encode_steps(tok, prompt, steps, use_offsets=True) == encode_steps(tok, prompt, steps, use_offsets=False)


def test_step_end_tokens_token_merged_across_the_line_break():
    # 'a\n' is one token: step 0 ends on it, step 1 'bc' ends on token 2
    assert step_end_tokens([(0, 0), (0, 2), (2, 3), (3, 4)], [(0, 1), (2, 4)]) == [0 + 1, 3]
    with pytest.raises(ValueError, match='same token'):
        step_end_tokens([(0, 4)], [(0, 1), (2, 4)])
    with pytest.raises(ValueError, match='no token holds the end of step 1'):
        step_end_tokens([(0, 2)], [(0, 1), (2, 4)])


def test_tokenize_steps_labels_only_step_ends(llama_tok):
    prompt, steps = 'Question: 2+3?\nAnswer:\n', ['2 + 3 = 5', 'The answer is 5']
    row = tokenize_steps(llama_tok, prompt, steps, [1, 0.25], label_token='last')
    _, ends = encode_steps(llama_tok, prompt, steps)
    assert [i for i, l in enumerate(row['labels']) if l != -100] == ends
    assert [row['labels'][e] for e in ends] == [1.0, 0.25]
    assert row['attention_mask'] == [1] * len(row['input_ids'])
    n = len(row['input_ids'])  # a cut of the prompt only keeps both labels; a cut into the steps is refused
    cut = tokenize_steps(llama_tok, prompt, steps, [1, 0.25], max_length=n - 3, label_token='last')
    assert cut['input_ids'] == row['input_ids'][-(n - 3) :] and cut['labels'][-1] == 0.25
    with pytest.raises(ValueError, match='path p1: .* would drop a labelled step'):
        tokenize_steps(llama_tok, prompt, steps, [1, 0.25], max_length=5, label_token='last', row_id='p1')
    assert tokenize_steps(llama_tok, prompt, steps, [None, 1], label_token='last')['labels'][ends[0]] == -100
    with pytest.raises(ValueError, match='2 steps but 3 labels'):
        tokenize_steps(llama_tok, prompt, steps, [1, 1, 1])
    with pytest.raises(ValueError, match=r'\[0, 1\]'):
        tokenize_steps(llama_tok, prompt, steps, [1, -0.5])
    with pytest.raises(ValueError, match='empty step'):
        tokenize_steps(llama_tok, prompt, ['', 'x'], [1, 1])


def test_pad_rows_pads_right_whatever_the_tokenizer(toy_tok):
    assert toy_tok.padding_side == 'left'
    rows = [
        tokenize_steps(toy_tok, 'Q:\n', ['1 + 1 = 2'], [1]),
        tokenize_steps(toy_tok, 'Q:\n', ['1 + 1 = 2', 'x'], [1, 0]),
    ]
    b = pad_rows(rows, pad_id=toy_tok.pad_token_id)
    n0 = len(rows[0]['input_ids'])
    assert b['input_ids'][0, :n0].tolist() == rows[0]['input_ids'] and b['attention_mask'][0, n0:].sum() == 0
    assert b['labels'].dtype == torch.float and (b['labels'][0, n0:] == -100).all()


# ---------------------------------------------------------------- loss


def test_bce_step_loss_soft_targets_and_item_count():
    logits = torch.tensor([[[0.3], [1.0], [-2.0]]])
    labels = torch.tensor([[-100.0, 0.5, 0.0]])
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0]), reduction='none'
    )
    assert math.isclose(bce_step_loss({'logits': logits}, labels).item(), per.mean().item(), rel_tol=1e-6)
    assert math.isclose(
        bce_step_loss({'logits': logits}, labels, num_items_in_batch=4).item(), per.sum().item() / 4, rel_tol=1e-6
    )
    # minimum of BCE on a soft target sits at the target
    assert bce_step_loss(
        {'logits': torch.full((1, 1, 1), math.log(0.25 / 0.75))}, torch.tensor([[0.25]])
    ) < bce_step_loss({'logits': torch.zeros(1, 1, 1)}, torch.tensor([[0.25]]))


# ---------------------------------------------------------------- records


LEGACY = PRMConfig(answer_step='include', prompt_format='task', gold_paths=False)  # sipf's pre-official inputs


def test_prm_examples_and_outcome_labels():
    task, paths = _paths(4)
    ol = outcome_labels(paths)
    assert [l.labels for l in ol] == [[int(p.correct)] * 2 for p in paths] and ol[0].strategy == 'outcome'
    ex = prm_examples(task, paths, ol, LEGACY)
    assert ex[0]['prompt'] == task.prompt(task.by_id(paths[0].problem_id)) and ex[0]['steps'] == paths[0].steps
    with pytest.raises(ValueError, match='2 steps but 1 labels'):
        prm_examples(task, paths, [StepLabels(paths[0].id, 'q0', [1], [1], [1])], LEGACY)
    assert (
        prm_examples(task, paths, ol[::-1], LEGACY) == ex
    )  # label-file order (labeller finishing order, resume) does not matter
    assert [e['steps'] for e in prm_examples(task, paths, ol[2:], LEGACY)] == [p.steps for p in paths[2:]]
    with pytest.raises(KeyError, match="unknown path id 'nope'"):
        prm_examples(task, paths, [StepLabels('nope', 'q0', [1], [1], [1])])
    with pytest.raises(KeyError, match="unknown PRM example key 'label'"):
        example_row(None, {'prompt': 'Q', 'steps': ['a'], 'label': [1]})


def test_config_typos_and_bad_inputs(tiny_world, toy_tok):
    with pytest.raises(KeyError, match="unknown 'prm' key 'lora_rr'"):
        check_config({'prm': {'lora_rr': 4}})
    with pytest.raises(ValueError, match='no labelled paths'):
        train_prm(tiny_world[2], toy_tok, [], PRMConfig(), 'unused')
    with pytest.raises(ValueError, match='qlora needs the model as a path'):
        prm_model(tiny_world[2], PRMConfig(adapter='qlora'))
    with pytest.raises(ValueError, match='model_or_path must be'):
        prm_model(42)
    with pytest.raises(FileNotFoundError, match='no PRM directory'):
        load_prm('/nonexistent/prm')


def test_prm_model_from_causal_lm_copies_the_backbone(tiny_world):
    lm = LlamaForCausalLM(tiny_world[2])
    prm = prm_model(lm, PRMConfig())
    assert prm.config.num_labels == 1 and prm.score.out_features == 1
    assert torch.equal(prm.model.embed_tokens.weight, lm.model.embed_tokens.weight)


# ---------------------------------------------------------------- training, scoring, metrics


def _train(tiny_world, toy_tok, out, **kw):
    task, paths, cfg = tiny_world
    ex = prm_examples(task, paths[:60], outcome_labels(paths[:60]))
    c = PRMConfig(**{'epochs': 4, 'batch_size': 16, 'lr': 3e-3, 'logging_steps': 5, **kw})
    return train_prm(cfg, toy_tok, ex, c, out)


def test_training_is_deterministic_and_saved(tiny_world, toy_tok, tmp_path):
    task, paths, _ = tiny_world
    a = _train(tiny_world, toy_tok, tmp_path / 'a')
    b = _train(tiny_world, toy_tok, tmp_path / 'b')
    sa = step_probs(
        a, toy_tok, [task.prompt(task.by_id(p.problem_id)) for p in paths[60:]], [p.steps for p in paths[60:]]
    )
    sb = step_probs(
        b, toy_tok, [task.prompt(task.by_id(p.problem_id)) for p in paths[60:]], [p.steps for p in paths[60:]]
    )
    assert sa == sb
    loaded = load_prm(tmp_path / 'a')
    sl = step_probs(
        loaded, toy_tok, [task.prompt(task.by_id(p.problem_id)) for p in paths[60:]], [p.steps for p in paths[60:]]
    )
    assert all(math.isclose(x, y, abs_tol=1e-5) for r, q in zip(sa, sl) for x, y in zip(r, q))
    assert json.loads((tmp_path / 'a' / 'prm_config.json').read_text())['lr'] == 3e-3
    assert any('loss' in json.loads(l) for l in (tmp_path / 'a' / 'metrics.jsonl').read_text().splitlines())


def test_lora_prm_trains_only_adapters_and_head_and_saves_merged(tiny_world, toy_tok, tmp_path):
    task, paths, cfg = tiny_world
    m = prm_model(cfg, PRMConfig(adapter='lora', lora=LoraOptions(r=4)))
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all('lora_' in n or 'score' in n for n in trainable) and any('score' in n for n in trainable)
    prm = _train(tiny_world, toy_tok, tmp_path / 'lora', adapter='lora', lora=LoraOptions(r=4))
    assert not (tmp_path / 'lora' / 'adapter_config.json').exists()
    s1 = score_paths(prm, toy_tok, task, paths[60:64])
    s2 = score_paths(load_prm(tmp_path / 'lora'), toy_tok, task, paths[60:64])
    assert all(math.isclose(a.meta['reward'], b.meta['reward'], abs_tol=1e-5) for a, b in zip(s1, s2))


def test_soft_labels_are_learned_as_probabilities(tiny_world, toy_tok, tmp_path):
    "A constant soft target of 0.25 on every step: a soft-label PRM predicts ~0.25 (a hard-label one could not)."
    task, paths, cfg = tiny_world
    ex = [{**e, 'soft': [0.25] * len(e['steps'])} for e in prm_examples(task, paths[:40], outcome_labels(paths[:40]))]
    prm = train_prm(
        cfg, toy_tok, ex, PRMConfig(soft=True, epochs=10, lr=1e-2, batch_size=20, warmup_ratio=0.0), tmp_path / 's'
    )
    probs = [
        x
        for r in step_probs(
            prm, toy_tok, [task.prompt(task.by_id(p.problem_id)) for p in paths[60:]], [p.steps for p in paths[60:]]
        )
        for x in r
    ]
    assert abs(sum(probs) / len(probs) - 0.25) < 0.05


def test_scoring_does_not_depend_on_batching_and_keeps_inputs(tiny_world, toy_tok):
    task, paths, cfg = tiny_world
    prm = prm_model(cfg, PRMConfig(seed=1, answer_step='include'))
    empty = Path('q0', '', steps=[])
    batch = paths[:9] + [empty]
    s1 = score_paths(prm, toy_tok, task, batch, batch_size=1)
    s4 = score_paths(prm, toy_tok, task, batch, agg='min', batch_size=4)
    assert all(
        math.isclose(x, y, abs_tol=1e-5)
        for a, b in zip(s1, s4)
        for x, y in zip(a.meta['step_scores'], b.meta['step_scores'])
    )
    assert s1[-1].meta == {'step_scores': [], 'reward': 0.0}
    assert math.isclose(s4[0].meta['reward'], min(s4[0].meta['step_scores']))
    assert all(len(p.meta['step_scores']) == len(p.steps) for p in s1)
    assert 'reward' not in paths[0].meta and s1[0].id == paths[0].id
    with pytest.raises(ValueError, match="unknown aggregation 'avg'"):
        score_paths(prm, toy_tok, task, batch, agg='avg')


def test_aggregate():
    assert aggregate([0.5, 1.0]) == 0.75 and aggregate([0.5, 0.5], 'prod') == 0.25
    assert aggregate([0.2, 0.9], 'last') == 0.9 and aggregate([], 'mean') == 0.0


def test_step_metrics_hand_computed():
    m = step_metrics([[0.9, 0.4, 0.1], [0.6]], [[1, 1, 0], [0]])
    # predictions 1,0,0,1 vs gold 1,1,0,0: tp=1 tn=1 fp=1 fn=1
    assert (m['accuracy'], m['precision'], m['recall'], m['f1'], m['f1_wrong'], m['majority'], m['n_steps']) == (
        0.5,
        0.5,
        0.5,
        0.5,
        0.5,
        0.5,
        4,
    )
    with pytest.raises(ValueError):
        step_metrics([[0.9, 0.1]], [[1]])
    with pytest.raises(ValueError, match='no steps'):
        step_metrics([[]], [[]])


def test_evaluate_prm_gold_forms(tiny_world, toy_tok):
    task, paths, cfg = tiny_world
    prm = prm_model(cfg, PRMConfig(answer_step='include'))
    truth = evaluate_prm(prm, toy_tok, task, paths[60:])
    as_lists = evaluate_prm(
        prm, toy_tok, task, paths[60:], [task.step_truth(task.by_id(p.problem_id), p.text) for p in paths[60:]]
    )
    assert truth == as_lists and truth['n_steps'] == 40
    sl = outcome_labels(paths[60:65])
    assert evaluate_prm(prm, toy_tok, task, paths, sl)['n_steps'] == 10
    no_truth = types.SimpleNamespace(name='nt', prompt=task.prompt, by_id=task.by_id)
    with pytest.raises(ValueError, match="task 'nt' has no step_truth"):
        evaluate_prm(prm, toy_tok, no_truth, paths[:1])


def test_prm_answers_per_step(tiny_world, toy_tok, tmp_path):
    "Smoke: each step's label is its own ('ok' 1, 'no' 0), mixed within paths; the PRM learns it step by step."
    task, _, cfg = tiny_world
    rng = random.Random(0)

    def example(i):
        labels = [rng.randint(0, 1) for _ in range(3)]
        return {
            'prompt': 'Question: go\nAnswer:\n',
            'steps': [f'{i % 7} {"ok" if l else "no"}' for l in labels],
            'labels': labels,
        }

    ex = [example(i) for i in range(60)]
    # what is tested is learning, not the epoch choice: 3 held-out paths tie at accuracy 1.0 in an early epoch
    prm = train_prm(
        cfg,
        toy_tok,
        ex[:40],
        PRMConfig(epochs=8, lr=1e-2, batch_size=10, warmup_ratio=0.0, holdout=0.0),
        tmp_path / 'ok',
    )
    probs = step_probs(prm, toy_tok, [e['prompt'] for e in ex[40:]], [e['steps'] for e in ex[40:]])
    m = step_metrics(probs, [e['labels'] for e in ex[40:]])
    assert m['accuracy'] == 1.0, m


def test_prm_model_from_saved_policy_dirs(tiny_world, toy_tok, tmp_path):
    "The pipeline's default: a PRM initialised from the policy's saved weights: a full model or a LoRA adapter dir."
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lm = LlamaForCausalLM(tiny_world[2])
    lm.save_pretrained(tmp_path / 'full')
    toy_tok.save_pretrained(tmp_path / 'full')
    prm = prm_model(str(tmp_path / 'full'))
    assert (
        torch.equal(prm.model.layers[0].mlp.up_proj.weight, lm.model.layers[0].mlp.up_proj.weight)
        and prm.config.num_labels == 1
    )
    base = LlamaForCausalLM.from_pretrained(tmp_path / 'full')
    ad = get_peft_model(base, LoraConfig(r=2, target_modules=['q_proj'], init_lora_weights=False))
    ad.save_pretrained(tmp_path / 'adapter')
    toy_tok.save_pretrained(tmp_path / 'adapter')
    merged = ad.merge_and_unload()
    prm2 = prm_model(tmp_path / 'adapter')
    assert torch.allclose(prm2.model.layers[0].self_attn.q_proj.weight, merged.model.layers[0].self_attn.q_proj.weight)
    assert not torch.equal(prm2.model.layers[0].self_attn.q_proj.weight, lm.model.layers[0].self_attn.q_proj.weight)


def test_qlora_without_bitsandbytes_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, 'bitsandbytes', None)
    with pytest.raises(ImportError, match="qlora=True needs bitsandbytes"):
        prm_model(str(tmp_path), PRMConfig(adapter='qlora'))
