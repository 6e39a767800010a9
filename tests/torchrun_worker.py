"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU): the M0 SFT trainer, the PRM
trainer and the step cache, each in both processes. Every process records what it saw in `OUT/rank<r>.json`."""

import hashlib
import json
import os
import sys
from pathlib import Path as FilePath

import torch
import torch.distributed as dist


def _digest(model) -> str:
    "A hash of the weights: equal in both processes after data-parallel training."
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode() + v.detach().float().numpy().tobytes())
    return h.hexdigest()[:16]


def sft(out: FilePath) -> dict:
    from sipf.config import SFTTrainConfig
    from sipf.models import train_sft
    from sipf.tasks import load_task
    from sipf.toy import toy_model, toy_tokenizer

    tok, task = toy_tokenizer(), load_task('arith', split='train', n=8)
    model = toy_model(tok, 'tiny', seed=0)
    cfg = SFTTrainConfig(max_steps=2, batch_size=2, logging_steps=1, lr=1e-3, progress=False)
    train_sft(model, tok, [task.prompt(p) for p in task.problems], [p.solution for p in task.problems], cfg, out)
    return {'sft': _digest(model)}


def prm(out: FilePath) -> dict:
    from sipf.config import PRMConfig
    from sipf.prm import prm_examples, simulated_labels, synthetic_paths, train_prm
    from sipf.tasks import load_task
    from sipf.toy import toy_config, toy_tokenizer

    tok, task = toy_tokenizer(), load_task('arith', split='train', n=8)
    paths = [p for p in synthetic_paths(task, n_wrong=1, seed=0) if p.meta]
    examples = prm_examples(task, paths, simulated_labels(task, paths, seed=0), PRMConfig())
    cfg = PRMConfig(epochs=2, batch_size=2, logging_steps=1, holdout=0.25, progress=False)
    model = train_prm(toy_config(tok, 'tiny'), tok, examples, cfg, out)
    return {'prm': _digest(model)}


def steps(out: FilePath) -> dict:
    "A main-process stage, then a training stage that needs both processes (an all_reduce), through run_step."
    from sipf.core import process_rank
    from sipf.steps import run_step

    cache, run_dir, rank = out / 'cache', out / 'run', process_rank()

    def sample(path):
        with open(out / f'sample-calls-{rank}', 'a') as f:
            f.write('x')
        path.write_text('paths\n')

    def train(path, samples):
        path.mkdir(parents=True, exist_ok=True)
        total = torch.tensor([rank + 1.0])
        dist.all_reduce(total)
        if rank == 0:
            (path / 'weights').write_text(f'{total.item()} {samples.read_text()}')

    s = run_step(cache, run_dir, 'iter_1/samples.jsonl', 'sample', sample, settings={'n': 1})
    m = run_step(cache, run_dir, 'iter_1/model', 'align', train, [s], {'lr': 1}, 'dir', all_processes=True)
    return {'samples': str(s.path), 'model': str(m.path), 'weights': (m.path / 'weights').read_text()}


if __name__ == '__main__':
    out = FilePath(sys.argv[1])
    seen = {'world_size': int(os.environ['WORLD_SIZE'])}
    for name in sys.argv[2:]:
        seen.update(globals()[name](out / name))
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(seen))
