"""PRM vs ORM on the toy world (paper Table 3's direction): held-out step accuracy against the ground truth.

Same paths, same model init, same training budget; only the labels differ:
- PRM: Monte-Carlo step labels (hard, hits > 0 of N=8) — by default *synthetic* MC labels
  (`sipf.prm.simulated_labels`: binomial noise around the cumulative truth, solve rate U(0.2, 0.9) per path, 2% lucky
  guesses), or, with `--labels simulate`, real rollouts of the toy M0 through `sipf.simulate.label_paths`;
- ORM: outcome labels (every step gets the path's final outcome, Lightman et al.).
Training paths: every gold solution of the first `--n-train` arith train problems plus `--n-wrong` copies with one
injected slip (arithmetic / operand / operator, carried forward; `sipf.prm.synthetic_paths`). Held-out: the same on
`--n-test` val problems. Truth: `ArithTask.step_truth` (cumulative: wrong from the first error on; and per step).
Also reports the training labels' own agreement with the truth (the ceiling the PRM learns from). Last line: JSON.

    python bench/prm.py                                  # from scratch, policy-size PRM, 2 seeds
    python bench/prm.py --init m0                        # PRM initialised from the toy M0 (trains/caches it first)
    python bench/prm.py --legacy                         # sipf's earlier PRM inputs (answer line in, last token, ...)
"""

import argparse
import json
import logging
import tempfile
import time

import torch

from sipf.arith import load_arith
from sipf.config import PRMConfig
from sipf.prm import (
    evaluate_prm,
    outcome_labels,
    prm_examples,
    simulated_labels,
    step_metrics,
    synthetic_paths,
    train_prm,
    true_step_labels,
)


def mc_labels(task, paths, args, seed):
    if args.labels == 'synthetic':
        return simulated_labels(task, paths, seed=seed)
    from sipf.models import load_model
    from sipf.toy import toy_m0
    from sipf.sample import TransformersBackend
    from sipf.simulate import SimulateConfig, label_paths

    model, tok = load_model(args.m0_dir or toy_m0('policy'), device='cpu')
    out = tempfile.mktemp(suffix='.jsonl')
    return label_paths(task, TransformersBackend(model, tok), paths, SimulateConfig(seed=seed), out)


def inputs(args) -> dict:
    "PRMConfig fields of the PRM's inputs: the official code's (default) or sipf's earlier ones (--legacy)."
    legacy = dict(answer_step='include', label_token='last', prompt_format='task', gold_paths=False)
    return legacy if args.legacy else {}


def run(args, seed):
    from sipf.toy import toy_config, toy_tokenizer, toy_m0

    train, test = load_arith(split='train', n=args.n_train), load_arith(split='val', n=args.n_test)
    tok = toy_tokenizer()
    tr, te = (
        synthetic_paths(train, n_wrong=args.n_wrong, seed=seed),
        synthetic_paths(test, n_wrong=args.n_wrong, seed=10_000 + seed),
    )
    labels = {'prm': mc_labels(train, tr, args, seed), 'orm': outcome_labels(tr)}
    init = toy_config(tok, args.size) if args.init == 'scratch' else str(args.m0_dir or toy_m0('policy'))
    truth_tr = true_step_labels(train, tr)
    res = {
        'seed': seed,
        'n_train_paths': len(tr),
        'n_test_paths': len(te),
        'label_agreement': {k: step_metrics([l.labels for l in v], truth_tr) for k, v in labels.items()},
    }
    for name, lab in labels.items():
        t0 = time.time()
        cfg = PRMConfig(
            epochs=args.epochs, lr=args.lr, batch_size=32, seed=seed, logging_steps=50, progress=False, **inputs(args)
        )
        prm = train_prm(init, tok, prm_examples(train, tr, lab, cfg), cfg, tempfile.mkdtemp())
        res[name] = {
            'cumulative': evaluate_prm(prm, tok, test, te),
            'per_step': evaluate_prm(prm, tok, test, te, cumulative=False),
            'train_seconds': round(time.time() - t0, 1),
        }
        print(seed, name, json.dumps(res[name]), flush=True)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n-train', type=int, default=600)
    ap.add_argument('--n-test', type=int, default=200)
    ap.add_argument('--n-wrong', type=int, default=2)
    ap.add_argument('--size', default='policy')
    ap.add_argument('--init', choices=['scratch', 'm0'], default='scratch')
    ap.add_argument(
        '--m0-dir', default=None, help='a saved M0 dir (default: toy_m0("policy"), trained and cached if missing)'
    )
    ap.add_argument('--labels', choices=['synthetic', 'simulate'], default='synthetic')
    ap.add_argument('--epochs', type=float, default=4.0)
    ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    ap.add_argument('--threads', type=int, default=1)
    ap.add_argument(
        '--legacy', action='store_true', help="sipf's earlier PRM inputs: answer line labelled, last-token labels, ..."
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    runs = [run(args, s) for s in args.seeds]

    def mean(k, m, key='cumulative'):
        return sum(r[k][key][m] for r in runs) / len(runs)

    summary = {k: {m: round(mean(k, m), 4) for m in ('accuracy', 'f1', 'f1_wrong', 'majority')} for k in ('prm', 'orm')}
    print(json.dumps({'args': vars(args), 'summary_cumulative_truth': summary, 'runs': runs}))


if __name__ == '__main__':
    main()
