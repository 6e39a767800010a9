"""Issue 12: a run killed during M0's SFT, the PRM's or ORPO's training resumes from the Trainer's last checkpoint,
not from step 0, and ends with the model an uninterrupted run makes (CPU, same seed). The kill is a real SIGKILL
of a child process in the middle of training, after its step-2 checkpoint and before step 4."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path as FilePath

import pytest
import torch

KILL_AT = 3  # global step at whose end the child kills itself (checkpoint-2 exists, checkpoint-4 does not)


def _world(tmp: FilePath):
    "A tiny toy model saved to `tmp/base`, its tokenizer, and 8 arith problems."
    from sipf.tasks import load_task
    from sipf.toy import toy_model, toy_tokenizer

    tok = toy_tokenizer()
    base = tmp / 'base'
    if not base.exists():
        toy_model(tok, 'tiny', seed=0).save_pretrained(base)
        tok.save_pretrained(base)
    return tok, base, load_task('arith', split='train', n=8, seed=3, max_distractors=0, min_steps=1, max_steps=2)


def _train(kind: str, tmp: FilePath, out: FilePath):
    "Train one stage for 6 steps with a checkpoint every 2 (the same call whether it starts, resumes or is killed)."
    from sipf.config import AlignConfig, PRMConfig, SFTTrainConfig
    from sipf.core import Pair
    from sipf.models import load_model, train_sft

    torch.set_num_threads(1)
    tok, base, task = _world(tmp)
    common = dict(max_steps=6, batch_size=4, lr=1e-3, save_strategy='steps', save_steps=2, logging_steps=1)
    common.update(progress=False, seed=0)
    if kind == 'sft':
        model, _ = load_model(base)
        prompts, sols = [task.prompt(p) for p in task.problems], [p.solution for p in task.problems]
        return train_sft(model, tok, prompts, sols, SFTTrainConfig(**common), out)
    if kind == 'orpo':
        from sipf.align import align

        bad = [p.solution.replace('The answer is', 'The answer is 1') for p in task.problems]
        pairs = [Pair(p.id, task.prompt(p), p.solution, b) for p, b in zip(task.problems, bad)]
        return align(base, pairs, AlignConfig(**common), out)
    from sipf.prm import prm_examples, simulated_labels, synthetic_paths, train_prm

    paths = [p for p in synthetic_paths(task, n_wrong=1, seed=0) if p.meta]
    examples = prm_examples(task, paths, simulated_labels(task, paths, seed=0))
    train_prm(str(base), tok, examples, PRMConfig(holdout=0.0, **common), out)


def _killing_child(kind: str, tmp: FilePath, out: FilePath):
    "In a child process: the same training, killed by SIGKILL at the end of step KILL_AT."
    from transformers import TrainerCallback

    import sipf.models
    import sipf.prm

    class Kill(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == KILL_AT:
                os.kill(os.getpid(), signal.SIGKILL)

    resume = sipf.models.train_resumable

    def killing(trainer):
        trainer.add_callback(Kill())
        return resume(trainer)

    sipf.models.train_resumable = sipf.prm.train_resumable = killing
    _train(kind, tmp, out)


def _child(kind: str, tmp: FilePath, out: FilePath, kill: bool) -> subprocess.CompletedProcess:
    code = f"import sys; sys.path.insert(0, {str(FilePath(__file__).parent)!r}); import test_resume_training as t; "
    call = (
        f"t._killing_child({kind!r}, t.FilePath({str(tmp)!r}), t.FilePath({str(out)!r}))"
        if kill
        else (f"t._train({kind!r}, t.FilePath({str(tmp)!r}), t.FilePath({str(out)!r}))")
    )
    env = {**os.environ, 'TRL_EXPERIMENTAL_SILENCE': '1', 'TQDM_DISABLE': '1'}
    return subprocess.run([sys.executable, '-c', code + call], capture_output=True, text=True, env=env, timeout=600)


def _weights(out: FilePath) -> dict:
    from safetensors.torch import load_file

    return load_file(out / 'model.safetensors')


@pytest.mark.parametrize('kind', ['sft', 'prm', 'orpo'])
def test_a_training_killed_midway_resumes_to_the_uninterrupted_model(kind, tmp_path):
    _train(kind, tmp_path, tmp_path / 'whole')
    killed = _child(kind, tmp_path, tmp_path / 'cut', kill=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (tmp_path / 'cut' / 'checkpoint-2').is_dir() and not (tmp_path / 'cut' / 'checkpoint-4').exists()
    assert not (tmp_path / 'cut' / 'model.safetensors').exists()  # it died mid-way
    resumed = _child(kind, tmp_path, tmp_path / 'cut', kill=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    state = json.loads((tmp_path / 'cut' / 'checkpoint-6' / 'trainer_state.json').read_text())
    assert state['global_step'] == 6
    whole, cut = _weights(tmp_path / 'whole'), _weights(tmp_path / 'cut')
    assert whole.keys() == cut.keys()
    assert all(torch.allclose(whole[k], cut[k], atol=1e-6) for k in whole), kind
    steps = [json.loads(l)['step'] for l in (tmp_path / 'cut' / 'metrics.jsonl').read_text().splitlines()]
    logged = [s for s in steps if s <= 6]
    assert logged == sorted(logged) and len(set(logged)) >= 6  # each step once, in order: step 3 not logged twice
    assert steps.count(KILL_AT) == sum(1 for s in _steps(tmp_path / 'whole') if s == KILL_AT)


def _steps(out: FilePath) -> list[int]:
    return [json.loads(l)['step'] for l in (out / 'metrics.jsonl').read_text().splitlines()]


def test_a_stage_with_checkpoints_keeps_its_partial_output(tmp_path):
    "The step cache keeps a killed training stage's `.partial` directory when it holds checkpoints (else clears it)."
    from sipf.steps import run_step

    calls = []

    def stage(out):
        calls.append(sorted(p.name for p in out.iterdir()) if out.exists() else None)
        if len(calls) == 1:
            (out / 'checkpoint-2').mkdir(parents=True)
            (out / 'checkpoint-2' / 'trainer_state.json').write_text('{}')
            raise RuntimeError('killed')
        out.mkdir(exist_ok=True)

    with pytest.raises(RuntimeError):
        run_step(tmp_path / 'cache', tmp_path / 'run', 'm0', 'm0', stage, kind='dir')
    run_step(tmp_path / 'cache', tmp_path / 'run', 'm0', 'm0', stage, kind='dir')
    assert calls == [None, ['checkpoint-2']]
