"""Several processes on one machine (issue 12): the training stages under `torchrun --nproc_per_node 2` (gloo, CPU),
the step cache with two processes, the shipped accelerate configs, deterministic shard merges, and every trainer's
longest batch first."""

import json
import os
import subprocess
import sys
from pathlib import Path as FilePath

import pytest
import yaml

import sipf.models
from sipf.core import merge_shards, read_jsonl, shard_path, write_jsonl

HERE = FilePath(__file__).parent
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false', 'TRL_EXPERIMENTAL_SILENCE': '1'}


# ------------------------------------------------------------------ two processes through torchrun (gloo, CPU)
@pytest.fixture(scope='module')
def two_processes(tmp_path_factory):
    "One torchrun job of 2 processes: SFT, PRM and the step cache, in that order (one start-up paid)."
    out = tmp_path_factory.mktemp('torchrun')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2']
    cmd += [str(HERE / 'torchrun_worker.py'), str(out), 'sft', 'prm', 'steps']
    env = {**ENV, 'PYTHONPATH': os.pathsep.join([str(HERE.parent), ENV.get('PYTHONPATH', '')])}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-4000:]
    ranks = [json.loads((out / f'rank{i}.json').read_text()) for i in (0, 1)]
    return out, ranks


def test_sft_trains_data_parallel_with_one_writer(two_processes):
    out, ranks = two_processes
    assert [r['world_size'] for r in ranks] == [2, 2]
    assert ranks[0]['sft'] == ranks[1]['sft']  # the same weights in both processes: gradients were averaged
    d = out / 'sft'
    assert (d / 'model.safetensors').exists() and (d / 'tokenizer.json').exists() and (d / 'sft_config.json').exists()
    assert [r['step'] for r in read_jsonl(d / 'metrics.jsonl') if 'loss' in r] == [1, 2]  # rank 0 logged, once a step
    assert not list(d.glob('.*.tmp'))  # no torn atomic writes left behind


def test_prm_trains_data_parallel_keeps_the_best_epoch(two_processes):
    out, ranks = two_processes
    assert ranks[0]['prm'] == ranks[1]['prm']
    d = out / 'prm'
    assert json.loads((d / 'prm_config.json').read_text())['holdout'] == 0.25
    assert not list(d.glob('checkpoint-*'))  # the best-epoch checkpoints went once the PRM was saved
    evals = [r for r in read_jsonl(d / 'metrics.jsonl') if 'eval_step_acc' in r]
    assert len(evals) == 2  # one evaluation an epoch, logged once


def test_step_cache_has_one_writer_under_two_processes(two_processes):
    out, ranks = two_processes
    d = out / 'steps'
    assert (d / 'sample-calls-0').read_text() == 'x' and not (d / 'sample-calls-1').exists()  # main process only
    assert ranks[0]['weights'] == ranks[1]['weights'] == '3.0 paths\n'  # the training stage ran in both (1 + 2)
    assert ranks[0]['model'] == ranks[1]['model']
    homes = sorted(p.name.split('-')[0] for p in (d / 'cache').iterdir())
    assert homes == ['align', 'sample'] and all((p / 'DONE').exists() for p in (d / 'cache').iterdir())
    assert not list((d / 'cache').glob('*/*.partial'))
    assert (d / 'run/iter_1/model/weights').read_text() == '3.0 paths\n'


# ------------------------------------------------------------------ the shipped accelerate configs
def test_accelerate_configs_ship_and_leave_training_settings_to_sipf():
    from sipf.config import ACCELERATE_CONFIGS, accelerate_config

    ddp, zero2 = (yaml.safe_load(accelerate_config(n).read_text()) for n in ACCELERATE_CONFIGS)
    assert ddp['distributed_type'] == 'MULTI_GPU' and zero2['distributed_type'] == 'DEEPSPEED'
    assert zero2['deepspeed_config']['zero_stage'] == 2
    for key in ('gradient_accumulation_steps', 'gradient_clipping', 'train_micro_batch_size_per_gpu'):
        assert key not in zero2['deepspeed_config']  # DeepSpeed's 'auto': the Trainer fills them from sipf's config
    setup = (HERE.parent / 'setup.py').read_text()
    assert "'configs/accelerate/*.yaml'" in setup  # installed with the package


def test_zero2_config_reaches_the_trainer(tmp_path, monkeypatch):
    "What `accelerate launch --config_file zero2.yaml` exports, read back by TrainingArguments as ZeRO stage 2."
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser, prepare_deepspeed_cmd_env

    from sipf.config import accelerate_config

    args = launch_command_parser().parse_args(['--config_file', str(accelerate_config('zero2')), 'train.py'])
    args, defaults, _ = _validate_launch_command(args)
    assert args.use_deepspeed and not args.cpu and args.num_processes == 2
    args.deepspeed_fields_from_accelerate_config = ','.join(defaults.deepspeed_config)  # as `launch_command` does
    _, env = prepare_deepspeed_cmd_env(args)
    assert env['ACCELERATE_USE_DEEPSPEED'] == 'true' and env['ACCELERATE_DEEPSPEED_ZERO_STAGE'] == '2'
    assert env['ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE'] == 'none'
    assert 'ACCELERATE_GRADIENT_ACCUMULATION_STEPS' not in env or env['ACCELERATE_GRADIENT_ACCUMULATION_STEPS'] == '1'


# ------------------------------------------------------------------ deterministic merges of per-shard outputs
def test_shards_merge_in_shard_order_whatever_finished_first(tmp_path):
    parts = [[{'id': f'p{i}-{j}', 'text': 'x' * j} for j in range(3)] for i in range(4)]
    merged = []
    for order in ([3, 1, 0, 2], [0, 1, 2, 3]):
        d = tmp_path / ''.join(map(str, order))
        for i in order:
            write_jsonl(shard_path(d / 'labels.jsonl', i, 4), parts[i])
        assert merge_shards(d / 'labels.jsonl', 4) == 12
        merged.append((d / 'labels.jsonl').read_bytes())
    assert merged[0] == merged[1]
    assert [r['id'] for r in read_jsonl(tmp_path / '0123' / 'labels.jsonl')][:4] == ['p0-0', 'p0-1', 'p0-2', 'p1-0']
    (tmp_path / '0123' / shard_path('labels.jsonl', 2, 4).name).unlink()
    with pytest.raises(FileNotFoundError, match='labels.00002-of-00004.jsonl is missing'):
        merge_shards(tmp_path / '0123' / 'labels.jsonl', 4)


# ------------------------------------------------------------------ the longest batch first, in every trainer
def _first_batch_of(monkeypatch, run):
    "The first training batch of the trainer `run()` builds (its training replaced by a capture)."
    seen = []
    monkeypatch.setattr(sipf.models, 'train_resumable', lambda t: seen.append(t))
    run()
    return seen[0], next(iter(seen[0].get_train_dataloader()))


@pytest.fixture(scope='module')
def rows():
    from sipf.tasks import load_task

    task = load_task('arith', split='train', n=12, seed=5)
    return [(task.prompt(p), p.solution) for p in task.problems]


def test_sft_first_batch_is_the_longest(monkeypatch, rows, tmp_path):
    from sipf.config import SFTTrainConfig
    from sipf.toy import toy_model, toy_tokenizer

    tok = toy_tokenizer()
    cfg = SFTTrainConfig(max_steps=1, batch_size=3, progress=False, save=False)
    p, c = zip(*rows)
    run = lambda: sipf.models.train_sft(toy_model(tok, 'tiny'), tok, list(p), list(c), cfg, tmp_path)  # noqa: E731
    trainer, batch = _first_batch_of(monkeypatch, run)
    lengths = sorted((len(x) for x in trainer.train_dataset['input_ids']), reverse=True)
    assert sorted(batch['attention_mask'].sum(1).tolist(), reverse=True) == lengths[:3]


def test_orpo_and_dpo_first_batch_is_the_longest(monkeypatch, rows, tmp_path):
    from sipf.align import AlignConfig, align
    from sipf.core import Pair
    from sipf.models import row_length
    from sipf.toy import toy_model, toy_tokenizer

    tok = toy_tokenizer()
    toy_model(tok, 'tiny').save_pretrained(tmp_path / 'm')
    tok.save_pretrained(tmp_path / 'm')
    pairs = [Pair(f'q{i}', p, c, c.replace('The answer is', 'The answer is 1')) for i, (p, c) in enumerate(rows)]
    for objective in ('orpo', 'dpo'):
        cfg = AlignConfig(objective=objective, max_steps=1, batch_size=3, progress=False)
        run = lambda: align(tmp_path / 'm', pairs, cfg, tmp_path / objective)  # noqa: E731
        trainer, batch = _first_batch_of(monkeypatch, run)
        lengths = sorted((row_length(r) for r in trainer.train_dataset), reverse=True)
        ids = batch['chosen_input_ids'] if objective == 'orpo' else batch['input_ids']
        assert ids.shape[0] == (3 if objective == 'orpo' else 6)  # DPO's collator stacks chosen and rejected
        first = sorted((row_length(trainer.train_dataset[i]) for i in list(trainer._get_train_sampler())[:3]))
        assert first[::-1] == lengths[:3], objective


def test_toy_m0_keeps_its_data_order_and_its_cache_keys(monkeypatch, tmp_path):
    "The toy M0 trains in the Trainer's own shuffled order, so the cached recipes stay valid: their keys are pinned."
    import sipf.toy as st
    from sipf.config import load_config
    from sipf.pipeline import _toy_m0_config

    assert st.recipe_key(st.M0_RECIPES['policy']) == '312b1af008a3'  # its value before `longest_first` existed
    assert st.recipe_key(_toy_m0_config(load_config('toy'))) == '312b1af008a3'
    assert st.recipe_key(_toy_m0_config(load_config('toy-quick'))) == 'ef5166953466'  # issue 13's toy-quick (tiny)
    seen = []
    monkeypatch.setattr(sipf.models, 'train_resumable', lambda t: seen.append(t))
    monkeypatch.setattr(sipf.models, '_save_sft', lambda *a: None)
    st._train_m0(st.ToyM0Config(n_train=16, epochs=1.0, size='tiny'), tmp_path / 'm0')
    assert seen[0].longest_first is False and type(seen[0]._get_train_sampler()).__name__ == 'RandomSampler'


@pytest.mark.skipif(
    __import__('importlib').util.find_spec('deepspeed') is None,
    reason='deepspeed is an optional extra, not installed here (pip install deepspeed to rehearse ZeRO-2 on CPU)',
)
def test_zero2_rehearsal_two_processes(tmp_path):
    "accelerate launch with the shipped zero2.yaml, 2 processes on CPU (DeepSpeed's CPU accelerator, gloo): ORPO."
    from sipf.config import accelerate_config
    from sipf.core import Pair
    from sipf.toy import toy_model, toy_tokenizer

    tok = toy_tokenizer()
    toy_model(tok, 'tiny', seed=0).save_pretrained(tmp_path / 'm')
    tok.save_pretrained(tmp_path / 'm')
    write_jsonl(tmp_path / 'pairs.jsonl', [Pair(f'q{i}', f'Q{i}:\n', f'{i} + 1 = {i + 1}', 'no') for i in range(8)])
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--config_file', str(accelerate_config('zero2'))]
    cmd += ['--main_process_port', '0', '-m', 'sipf.align', str(tmp_path / 'm'), str(tmp_path / 'pairs.jsonl')]
    cmd += [str(tmp_path / 'out'), '--set', 'objective=orpo', 'max_steps=2', 'batch_size=2', 'logging_steps=1']
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=ENV)
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads((tmp_path / 'out' / 'align_config.json').read_text())
    assert rec['world_size'] == 2 and 'DeepSpeed' in r.stderr + r.stdout  # two processes, through DeepSpeed's engine
    assert len([l for l in read_jsonl(tmp_path / 'out' / 'metrics.jsonl') if 'loss' in l]) == 2
