"""The labelling bill: Monte-Carlo step labels on the toy world, naive vs sipf's exhaustive / early_stop / binary.

One run, one simulator, the same >= 100 sampled toy paths, N rollouts per step prefix:
- naive: one `generate` call per rollout (what a straightforward reimplementation does). It is timed on the first
  `--naive-paths` paths only and extrapolated per rollout to the full set (printed as such).
- exhaustive (the paper), early_stop, binary: `sipf.simulate.label_paths` on all paths.
Reports wall time, generated tokens, agreement of hard labels / first-error position with exhaustive, and how well
the Monte-Carlo labels agree with the toy world's ground truth (`ArithTask.step_truth`) for several delta, for the
policy as simulator and (with `--strong`) for a stronger simulator. Last line: one JSON object.

    python bench/simulate.py --n-problems 200 --samples-per-problem 8   # ~12 min on a busy 2-core box (M0 cached)
    python bench/simulate.py --pos-fraction 0                            # the paths as sampled (mostly wrong answers)
    python bench/simulate.py --strong                                    # also the stronger toy_m0('simulator')
The first run trains and caches toy_m0('policy') (sipf.models) if it is not cached yet (~25 min on a busy box).
Paths are sampled on the arith *train* questions (SIPF samples on its training set) and, like SIPF's pos/neg quotas,
at most --pos-fraction of them have a right answer.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path as FilePath

import torch

from sipf.core import Path, read_jsonl, write_jsonl, seed_everything
from sipf.tasks import load_task
from sipf.sample import TransformersBackend
from sipf.simulate import SimulateConfig, label_paths, first_error, hard_labels

log = logging.getLogger('bench.simulate')


class OneByOne:
    "The naive baseline: the same backend, but one generate call per rollout."

    def __init__(self, backend):
        self.backend, self.row_seeds = backend, getattr(backend, 'row_seeds', False)

    def generate(self, prompts, n=1, seed=None, **kw):
        seeds = seed if isinstance(seed, list) else [seed] * len(prompts)
        return [
            self.backend.generate([p], n=n, seed=[s] if self.row_seeds else s, **kw)[0] for p, s in zip(prompts, seeds)
        ]


def load_simulator(which: str, args):
    "(model dir, backend) of the toy M0 (`policy`) or of a stronger simulator; --model-dir / --strong-dir override."
    from sipf.models import load_model

    model_dir = args.model_dir if which == 'policy' else args.strong_dir
    if model_dir is None:
        from sipf.toy import toy_m0

        model_dir = toy_m0(args.recipe if which == 'policy' else args.strong_recipe)  # trained once, then cached
    model, tok = load_model(model_dir)
    model.eval()
    return model_dir, TransformersBackend(model, tok, batch_size=args.batch_size)


def sample_toy_paths(task, backend, args) -> list[Path]:
    "`--n-paths` distinct sampled paths of the first `--n-problems` arith problems of `--split` (cached in --out)."
    name = args.model_dir and FilePath(args.model_dir).name or args.recipe
    cache = FilePath(args.out) / (
        f'paths_{name}_{args.split}{args.n_problems}x{args.samples_per_problem}_{args.n_paths}'
        f'_pos{args.pos_fraction}_{args.seed}.jsonl'
    )
    known = {p.id for p in task.problems}
    cached = read_jsonl(cache, Path)  # [] when missing; stale (problems changed) -> sample again
    if cached and all(p.problem_id in known for p in cached):
        return cached
    probs = task.problems[: args.n_problems]
    gens = backend.generate(
        [task.prompt(p) for p in probs],
        n=args.samples_per_problem,
        temperature=args.sample_temperature,
        max_new_tokens=args.max_new_tokens,
        stop=list(task.stop),
        seed=args.seed,
    )
    paths = {}
    for p, gs in zip(probs, gens):
        for g in gs:
            steps = task.split_steps(g.text)
            path = Path(
                p.id, g.text, steps=steps, answer=task.extract_answer(g.text), correct=task.is_correct(p, g.text)
            )
            if steps:
                paths.setdefault(path.id, path)
    pos = [p for p in paths.values() if p.correct][: int(args.n_paths * args.pos_fraction)]
    paths = pos + [p for p in paths.values() if not p.correct][: args.n_paths - len(pos)]
    if len(paths) < args.n_paths:
        raise ValueError(f"sampled only {len(paths)} distinct paths, asked for {args.n_paths}")
    write_jsonl(cache, paths)
    return paths


def timed_labels(task, backend, paths, cfg):
    t0 = time.perf_counter()
    labels = label_paths(task, backend, paths, cfg)
    return labels, time.perf_counter() - t0


def rollouts(labels) -> int:
    "Rollouts really generated (an outcome-labelled last step carries n = N without any)."
    return sum(sum(l.n[:-1] if l.meta.get('outcome_last') else l.n) for l in labels)


def ceiling(labels, n_rollouts) -> float:
    "Exhaustive rollouts / the fewest an oracle early stop could spend (1 per step labelled 1, N per step labelled 0)."
    rolled = [(h, k) for l in labels for h, k in zip(l.hits[:-1] if l.meta.get('outcome_last') else l.hits, l.n)]
    return sum(k for _, k in rolled) / max(1, sum(1 if h > 0 else n_rollouts for h, _ in rolled))


def agreement(a, b) -> float:
    "Fraction of steps whose hard labels agree."
    pairs = [(x, y) for la, lb in zip(a, b) for x, y in zip(la, lb)]
    return sum(x == y for x, y in pairs) / max(1, len(pairs))


def first_error_agreement(a, b) -> float:
    return sum(first_error(x) == first_error(y) for x, y in zip(a, b)) / max(1, len(a))


def truth_report(task, paths, labels, deltas) -> dict:
    "Agreement of exhaustive MC labels (re-thresholded at each delta) with the ground truth, step-wise and first error."
    truth = [[int(t) for t in task.step_truth(task.by_id(p.problem_id), p.text, cumulative=True)] for p in paths]
    line = [[int(t) for t in task.step_truth(task.by_id(p.problem_id), p.text)] for p in paths]
    out = {}
    for d in deltas:
        mc = [
            hard_labels(l.hits, d)[:-1] + [l.labels[-1]] if l.meta.get('outcome_last') else hard_labels(l.hits, d)
            for l in labels
        ]
        out[f'delta_{d}'] = dict(
            prefix_truth=round(agreement(mc, truth), 4),
            line_truth=round(agreement(mc, line), 4),
            first_error=round(first_error_agreement(mc, truth), 4),
        )
    outcome = [[int(p.correct)] * len(p.steps) for p in paths]
    out['outcome_as_step_label'] = dict(prefix_truth=round(agreement(outcome, truth), 4))
    out['correct_paths_with_a_wrong_step'] = round(
        sum(p.correct and not all(t) for p, t in zip(paths, truth)) / max(1, sum(p.correct for p in paths)), 4
    )
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n-paths', type=int, default=128)
    ap.add_argument('--n-problems', type=int, default=100)
    ap.add_argument(
        '--split', default='train', help="arith split to sample paths on (SIPF samples on its training questions)"
    )
    ap.add_argument('--samples-per-problem', type=int, default=4)
    ap.add_argument('--sample-temperature', type=float, default=1.0)
    ap.add_argument(
        '--pos-fraction',
        type=float,
        default=0.5,
        help='at most this fraction of the paths with a right answer (SIPF labels pos/neg quotas); 0: as sampled',
    )
    ap.add_argument('--n-rollouts', type=int, default=8)
    ap.add_argument('--chunk-size', type=int, default=1)
    ap.add_argument('--batch-size', type=int, default=128, help='backend batch size (rows per model.generate)')
    ap.add_argument('--batch-paths', type=int, default=128, help='paths in flight in label_paths')
    ap.add_argument('--max-new-tokens', type=int, default=80)
    ap.add_argument('--naive-paths', type=int, default=6, help='paths the naive baseline is timed on (extrapolated)')
    ap.add_argument('--deltas', type=int, nargs='+', default=[0, 1, 2, 4])
    ap.add_argument(
        '--strong', action='store_true', help='also label with a stronger simulator and compare with the truth'
    )
    ap.add_argument('--recipe', default='policy', help='toy_m0 recipe of the policy/simulator (sipf.models.M0_RECIPES)')
    ap.add_argument('--strong-recipe', default='simulator', help='toy_m0 recipe of the stronger simulator')
    ap.add_argument('--model-dir', help='a saved simulator/policy to use instead of the cached toy M0')
    ap.add_argument('--strong-dir', help='a saved stronger simulator (default: toy_m0 of the larger size)')
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--threads', type=int, default=1, help='torch threads (1 is faster on a busy 2-core box)')
    ap.add_argument('--out', default=os.path.expanduser('~/.cache/sipf/bench_simulate'))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    FilePath(args.out).mkdir(parents=True, exist_ok=True)

    task = load_task(
        'arith', split=args.split, n=args.n_problems
    )  # train: the questions SIPF samples on (M0's SFT set)
    _, backend = load_simulator('policy', args)
    paths = sample_toy_paths(task, backend, args)
    acc = sum(p.correct for p in paths) / len(paths)
    log.info(f'{len(paths)} paths, {acc:.0%} with a correct answer, {sum(len(p.steps) for p in paths)} steps')
    base = dict(
        n_rollouts=args.n_rollouts,
        chunk_size=args.chunk_size,
        batch_paths=args.batch_paths,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )

    res, times = {}, {}
    variants = {  # binary's labels past the first error as 0s (not masked), so they compare step for step
        'exhaustive': {},
        'early_stop': {},
        'binary': dict(after_error='zero'),
        'binary_search_all': dict(trust_outcome=False, after_error='zero'),
    }
    for s, extra in variants.items():
        cfg = SimulateConfig(strategy=s.split('_search')[0], **base, **extra)
        res[s], times[s] = timed_labels(task, backend, paths, cfg)
        log.info(f'{s}: {times[s]:.1f}s, {sum(l.tokens for l in res[s])} tokens')
    sub = paths[: args.naive_paths]
    naive, t_naive = timed_labels(task, OneByOne(backend), sub, SimulateConfig(strategy='exhaustive', **base))
    n_naive, n_exh = rollouts(naive), rollouts(res['exhaustive'])
    t_naive_full = t_naive / n_naive * n_exh
    log.info(
        f'naive: {t_naive:.1f}s for {n_naive} rollouts of {len(sub)} paths '
        f'-> {t_naive_full:.0f}s extrapolated to {n_exh}'
    )

    lab = {s: [l.labels for l in r] for s, r in res.items()}
    tok = {s: sum(l.tokens for l in r) for s, r in res.items()}
    report = dict(
        n_paths=len(paths),
        n_steps=sum(len(p.steps) for p in paths),
        path_accuracy=round(acc, 4),
        n_rollouts=args.n_rollouts,
        chunk_size=args.chunk_size,
        rollouts_exhaustive=n_exh,
        seconds=dict(
            naive_extrapolated=round(t_naive_full, 1),
            naive_measured=round(t_naive, 1),
            naive_paths=len(sub),
            **{s: round(t, 1) for s, t in times.items()},
        ),
        tokens=tok,
        rollouts={s: rollouts(r) for s, r in res.items()},
        naive_label_agreement=round(agreement([l.labels for l in naive], lab['exhaustive'][: len(sub)]), 4),
        speedup_exhaustive_vs_naive=round(t_naive_full / times['exhaustive'], 2),
        early_stop_token_saving=round(tok['exhaustive'] / tok['early_stop'], 2),
        # the best early_stop can do at delta=0: a 1-step costs one rollout (its first hit), a 0-step all N
        early_stop_rollout_saving_ceiling=round(ceiling(res['exhaustive'], args.n_rollouts), 2),
        early_stop_label_agreement=round(agreement(lab['early_stop'], lab['exhaustive']), 4),
        early_stop_first_error_agreement=round(first_error_agreement(lab['early_stop'], lab['exhaustive']), 4),
        binary_token_saving=round(tok['exhaustive'] / max(1, tok['binary']), 2),
        binary_label_agreement=round(agreement(lab['binary'], lab['exhaustive']), 4),
        binary_first_error_agreement=round(first_error_agreement(lab['binary'], lab['exhaustive']), 4),
        binary_search_all=dict(  # binary also searching paths with a right answer (SimulateConfig.trust_outcome=False)
            token_saving=round(tok['exhaustive'] / max(1, tok['binary_search_all']), 2),
            label_agreement=round(agreement(lab['binary_search_all'], lab['exhaustive']), 4),
            first_error_agreement=round(first_error_agreement(lab['binary_search_all'], lab['exhaustive']), 4),
        ),
        truth_policy=truth_report(task, paths, res['exhaustive'], args.deltas),
    )
    if args.strong:
        _, strong = load_simulator('simulator', args)
        sl, ts = timed_labels(task, strong, paths, SimulateConfig(strategy='exhaustive', **base))
        report['truth_strong'] = truth_report(task, paths, sl, args.deltas)
        report['seconds']['strong_exhaustive'] = round(ts, 1)
    print(json.dumps(report))


if __name__ == '__main__':
    sys.exit(main())
