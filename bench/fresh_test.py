"""Re-score a finished `sipf demo` on *fresh* arith test problems: a confirmation that no choice was tuned on.

`sipf demo` reports greedy accuracy on the first 300 arith test problems; any setting picked after looking at that
table (a learning rate, say) was picked on those problems. This script evaluates every model of a demo's runs
(M0 and each method's iterations, every seed) on test problems `--start` .. `--start + --n` of the same generator,
which no run and no choice has seen, and prints the Table 1 layout with one standard error over seeds.

    python bench/fresh_test.py runs/demo                      # problems 300..1299 of the arith test split
    python bench/fresh_test.py runs/demo --start 300 --n 2000
Last line: one JSON object {seed: {row name: accuracy}}.
"""

import argparse
import json
import logging
from pathlib import Path as FilePath

import torch

from sipf.evaluate import evaluate
from sipf.pipeline import DEMO_METHODS, load_config, results_table, row_name, seed_table
from sipf.models import load_model
from sipf.sample import TransformersBackend
from sipf.tasks import load_task


def models_of(runs_dir: FilePath):
    "(seed, row name, method, iteration, model dir) of every model in a demo's runs dir; M0 once per seed."
    seen = set()

    def rank(run):
        m = run.name.split('-', 1)[1]
        return list(DEMO_METHODS).index(m) if m in DEMO_METHODS else len(DEMO_METHODS), run.name

    for run in sorted(runs_dir.glob('seed*-*'), key=rank):  # the demo's row order: M0, SIPF, SIOF, RFT, gold
        seed, method = run.name.split('-', 1)
        c = load_config(str(run / 'config.yaml'))
        for it in sorted(run.glob('iter_*/model'), key=lambda p: int(p.parent.name.split('_')[1])):
            k = int(it.parent.name.split('_')[1])
            name = 'SFT' if k == 0 else row_name(method, k, c.k)
            if (seed, name) in seen:
                continue
            seen.add((seed, name))
            yield int(seed[4:]), name, 'sft' if k == 0 else method, k, it


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('runs_dir')
    ap.add_argument('--start', type=int, default=300, help='first fresh test problem (the demo scores 0..n_eval-1)')
    ap.add_argument('--n', type=int, default=1000)
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument('--batch-size', type=int, default=128)
    ap.add_argument('--max-new-tokens', type=int, default=96)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    task = load_task('arith', split='test', n=args.start + args.n)
    problems = task.problems[args.start :]
    per_seed = {}  # seed -> rows, as `sipf demo` keeps them
    for seed, name, method, k, model_dir in models_of(FilePath(args.runs_dir)):
        model, tok = load_model(str(model_dir), device='cpu')
        rep = evaluate(
            task,
            TransformersBackend(model.eval(), tok, batch_size=args.batch_size),
            problems,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            progress=False,
        )
        per_seed.setdefault(seed, []).append({'name': name, 'scores': {'arith': rep['score']}})
        print(f"seed {seed} {name}: {100 * rep['score']:.2f}", flush=True)
    rows, sem = seed_table(per_seed)
    print(f"\nfresh arith test problems {args.start}..{args.start + args.n - 1}, mean ± s.e. over seeds:")
    print(results_table(rows, sem))
    print(json.dumps({s: {x['name']: x['scores']['arith'] for x in xs} for s, xs in per_seed.items()}))


if __name__ == '__main__':
    main()
