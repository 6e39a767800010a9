"""The study of issue 13: the ladder of methods on the study's toy world, for several seeds, scored on fresh problems.

    python bench/study.py run --seed 0 --score & python bench/study.py run --seed 1 --score &  # side by side
    python bench/study.py run --seed 2 --score       # resumable: a rerun skips every finished stage
    python bench/study.py report                     # Table 1 with intervals, the label ladder, Figures 3 and 4
    python bench/study.py --world study run --seed 0 --runs-dir runs/study6   # amendment 6's world (study.yaml)

Every rung runs `sipf.pipeline.run` on the bundled config `WORLD` plus the rung's overrides (one shared stage cache,
so the rungs of a seed share its M0 and their identical first-iteration samples). `--score` and `report` score every
model on fresh test problems 1300..2299 of the world (no run and no choice saw them; `n_eval` monitors
0..299); `report` writes results.json, results.md and the PNGs to `--out` and prints the table. Last line: one JSON
object.
"""

import argparse
import json
import logging
import random
import time
from pathlib import Path as FilePath

VOLUME = ['n_sample=512', 'pairs.max_pairs_per_question=8', 'align.max_steps=160']  # 4x questions, pairs, steps
RUNGS = {  # name -> (preset, overrides, what the rung asks), in the order a seed runs them: main comparison first
    'gold': ('gold', [], 'the same training budget on the gold solutions, from the same init'),
    'siof': ('siof', [], 'ORPO on outcome pairs, iterative'),
    'sipf-strong': ('sipf', ['simulator=arith-solver'], 'SIPF with the strong simulator (sipf.solver, slip 0.1)'),
    'sipf-oracle': ('sipf', ['simulate.strategy=truth'], 'SIPF with oracle step labels (the upper bound)'),
    'sipf-policy': ('sipf', [], 'SIPF with the policy as its own simulator'),
    'rft': ('rft', [], 'NLL on distinct correct self-generated paths'),
    'star': ('star', [], 'greedy, NLL on correct paths, restart from M0'),
    'no-or': ('no-or', ['simulator=arith-solver'], 'w/o OR: process feedback, NLL on chosen (Table 4)'),
    'psrf': ('psrf', ['simulator=arith-solver'], 'DPO on process pairs (Figure 3: ORPO vs DPO)'),
    # amendment 5 (15_study): the rungs the ladder pointed at, a trained simulator and the data volume
    'sipf-trained': ('sipf', ['simulator=toy-simulator'], 'SIPF with the trained toy simulator (10x the data)'),
    'gold-volume': ('gold', VOLUME, "the gold control at the volume rungs' budget (160 steps)"),
    'sipf-volume': ('sipf', ['simulator=arith-solver', 'n_simulate=2048', *VOLUME], 'SIPF-strong at 4x the volume'),
    'siof-volume': ('siof', VOLUME, 'SIOF at the same volume (outcome vs process at equal data)'),
}
CONTROL = {'sipf-volume': 'gold-volume', 'siof-volume': 'gold-volume'}  # a rung's gold control (default 'gold')
TRACE = ['align.trace_steps=10']  # chosen / rejected log-probs during alignment (Figure 3)
WORLDS = ('toy', 'study')  # bundled configs a ladder runs on: toy.yaml (amendments 3-5), study.yaml (amendment 6)
WORLD = 'toy'  # the world of this invocation (`--world`; 15_study, amendment 3: study.yaml's M0 stayed at 4-8 %)
AS_RUN = ['simulator=""']  # the world as the study ran it: toy.yaml's simulator was the policy until the demo changed
FRESH = (1300, 1000)  # first fresh test problem, how many (300..1299 scored the session-5 demo: not reused)


def rung_config(rung: str, seed: int, runs_dir: str, extra=()):
    from sipf.config import load_config

    method, overrides, _ = RUNGS[rung]
    return load_config(
        WORLD,
        [f'method={method}', *AS_RUN, *overrides, *TRACE, *extra],
        seed=seed,
        runs_dir=runs_dir,
        name=f'seed{seed}-{rung}',
    )


def cmd_run(args):
    from sipf.pipeline import run

    for rung in args.rungs or list(RUNGS):
        t0 = time.time()
        run(rung_config(rung, args.seed, args.runs_dir, args.set))
        print(f"seed {args.seed} {rung}: {time.time() - t0:.0f} s", flush=True)
    if args.score:  # this seed's models on the fresh problems, while other seeds still run
        score_fresh(FilePath(args.runs_dir), seeds={args.seed})


def models(runs_dir: FilePath):
    "(seed, rung, iteration, model dir) of every finished iteration; M0 once per seed (as rung 'm0')."
    seen = set()
    for run in sorted(runs_dir.glob('seed*-*')):
        seed, rung = run.name.split('-', 1)
        for ev in sorted(run.glob('iter_*/eval.json')):
            k = int(ev.parent.name.split('_')[1])
            key = (int(seed[4:]), 'm0' if k == 0 else rung, k)
            if key not in seen:
                seen.add(key)
                yield (*key, ev.parent / 'model')


def fresh_task(runs_dir: FilePath):
    from sipf.config import load_config
    from sipf.tasks import load_task

    opts = dict(load_config(WORLD).task_options)
    opts.pop('seed', None)  # the test split does not depend on the training set's seed
    task = load_task('arith', split='test', n=sum(FRESH), **opts)
    return type(task)(task.problems[FRESH[0] :])


def score_fresh(runs_dir: FilePath, threads: int = 1, seeds=None) -> dict:
    "Per-problem greedy correctness on the fresh problems of every model, cached per seed in `runs_dir`/fresh-S.json."
    import torch
    from sipf.evaluate import greedy_completions
    from sipf.models import load_model
    from sipf.sample import TransformersBackend

    torch.set_num_threads(threads)
    task, done = fresh_task(runs_dir), {}
    for seed, rung, k, model_dir in models(runs_dir):
        if seeds is not None and seed not in seeds:
            continue
        cache = runs_dir / f'fresh-{seed}.json'
        mine = json.loads(cache.read_text()) if cache.exists() else {}
        key = f'{seed}/{rung}/{k}'
        if key not in mine:
            model, tok = load_model(str(model_dir), device='cpu')
            gens = greedy_completions(
                task, TransformersBackend(model.eval(), tok, batch_size=128), task.problems, 128, 96
            )
            mine[key] = [int(x) for x in task.judge(task.problems, [g.text for g in gens])]
            cache.write_text(json.dumps(mine))
            print(f"fresh {key}: {100 * sum(mine[key]) / len(mine[key]):.1f}", flush=True)
        done[key] = mine[key]
    return done


def paired_bootstrap(a: dict, b: dict, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    "Mean over seeds of accuracy(a) - accuracy(b), and its 95% interval resampling problems (paired, per seed)."
    seeds = sorted(set(a) & set(b))
    m = len(a[seeds[0]])
    diff = [[x - y for x, y in zip(a[s], b[s])] for s in seeds]
    point = sum(sum(d) / m for d in diff) / len(seeds)
    rng, stats = random.Random(seed), []
    for _ in range(n):
        idx = [rng.randrange(m) for _ in range(m)]
        stats.append(sum(sum(d[i] for i in idx) / m for d in diff) / len(seeds))
    stats.sort()
    return point, stats[int(0.025 * n)], stats[int(0.975 * n) - 1]


def by_row(fresh: dict) -> dict:
    "{(rung, k): {seed: correctness}}."
    rows = {}
    for key, v in fresh.items():
        seed, rung, k = key.split('/')
        rows.setdefault((rung, int(k)), {})[int(seed)] = v
    return rows


ROW_ORDER = ['m0', 'gold', 'rft', 'star', 'siof', 'sipf-policy', 'sipf-strong', 'sipf-oracle', 'no-or', 'psrf']
ROW_ORDER += ['sipf-trained', 'gold-volume', 'siof-volume', 'sipf-volume']


def row_label(rung: str, k: int) -> str:
    from sipf.report import row_name

    if rung == 'm0':
        return 'SFT (M0)'
    from sipf.config import PRESETS

    method, _, _ = RUNGS[rung]
    name = row_name(method, k, PRESETS[method].iterations)
    return f"{name} [{rung}]" if '-' in rung or rung == 'psrf' else name


def table(fresh: dict) -> list[dict]:
    "Table 1 rows: mean ± s.e. over seeds, paired bootstrap 95% intervals vs M0 and vs the gold control."
    from sipf.report import mean_sem

    rows, out = by_row(fresh), []
    m0 = rows.get(('m0', 0), {})
    for rung in ROW_ORDER:
        for (r, k), per_seed in sorted(rows.items(), key=lambda x: x[0][1]):
            if r != rung:
                continue
            accs = [100 * sum(v) / len(v) for v in per_seed.values()]
            mu, se = mean_sem(accs)
            row = dict(rung=r, k=k, name=row_label(r, k), seeds=sorted(per_seed), mean=mu, sem=se)
            gold = rows.get((CONTROL.get(r, 'gold'), max(1, k)), {}) if r not in ('m0', 'gold', 'gold-volume') else {}
            for ref, name in ((m0, 'vs_m0'), (gold, 'vs_gold')):
                if r != 'm0' and ref and set(ref) & set(per_seed):
                    row[name] = [100 * x for x in paired_bootstrap(per_seed, ref)]
            out.append(row)
    return out


def table_md(rows: list[dict]) -> str:
    def ci(x):
        return f"{x[0]:+.1f} [{x[1]:+.1f}, {x[2]:+.1f}]" if x else '–'

    out = [
        '| Method | seeds | accuracy, mean ± s.e. | vs M0 (95% CI) | vs gold control (95% CI) |',
        '|---|---|---|---|---|',
    ]
    for r in rows:
        acc = f"{r['mean']:.1f} ± {r['sem']:.1f}"
        out.append(f"| {r['name']} | {len(r['seeds'])} | {acc} | {ci(r.get('vs_m0'))} | {ci(r.get('vs_gold'))} |")
    return '\n'.join(out)


def _train_task():
    from sipf.config import load_config
    from sipf.tasks import load_task

    c = load_config(WORLD)
    opts = dict(c.task_options)
    return load_task('arith', split='train', n=c.n_train, seed=opts.pop('seed'), **opts)


def label_ladder(runs_dir: FilePath) -> list[dict]:
    "One row per (rung, iteration) with pairs, averaged over seeds."
    from sipf.report import feedback_row, mean_sem

    task, acc = _train_task(), {}
    for run in sorted(runs_dir.glob('seed*-*')):
        rung = run.name.split('-', 1)[1]
        for it in sorted(run.glob('iter_[1-9]')):
            acc.setdefault((rung, int(it.name[5:])), []).append(feedback_row(task, it))
    out = []
    for (rung, k), rs in sorted(acc.items(), key=lambda x: (ROW_ORDER.index(x[0][0]), x[0][1])):
        row = dict(rung=rung, k=k, name=row_label(rung, k), seeds=len(rs))
        for f in ('mc_label_acc', 'prm_step_acc', 'pairs', 'chosen_clean'):
            xs = [r[f] for r in rs if r[f] is not None]
            row[f] = mean_sem(xs) if xs else None
        out.append(row)
    return out


def ladder_md(rows: list[dict]) -> str:
    def f(x, pct=True):
        return '–' if x is None else f"{100 * x[0]:.1f} ± {100 * x[1]:.1f}" if pct else f"{x[0]:.0f} ± {x[1]:.0f}"

    out = ['| Rung | seeds | MC labels = truth (%) | PRM step acc. (%) | pairs / rows | chosen fully right (%) |']
    out.append('|---|---|---|---|---|---|')
    for r in rows:
        out.append(
            f"| {r['name']} | {r['seeds']} | {f(r['mc_label_acc'])} | {f(r['prm_step_acc'])} | "
            f"{f(r['pairs'], False)} | {f(r['chosen_clean'])} |"
        )
    return '\n'.join(out)


def figure4(rows: list[dict], ladder: list[dict]):
    "Accuracy on the fresh problems and data count per iteration, one line per iterative rung (M0 at iteration 0)."
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    m0 = next(r for r in rows if r['rung'] == 'm0')
    for rung in [r for r in ROW_ORDER if r != 'm0']:
        rs = [m0] + [r for r in rows if r['rung'] == rung]
        if len(rs) > 1:
            a.errorbar([r['k'] for r in rs], [r['mean'] for r in rs], [r['sem'] for r in rs], marker='o', label=rung)
        ls = [r for r in ladder if r['rung'] == rung and r['pairs']]
        if ls:
            b.plot([r['k'] for r in ls], [r['pairs'][0] for r in ls], marker='o', label=rung)
    a.set(xlabel='iteration', ylabel='accuracy on 1,000 fresh problems (%)', title='accuracy')
    b.set(xlabel='iteration', ylabel='pairs / rows trained on', title='data count (accumulated)', yscale='log')
    a.legend(fontsize=7)
    fig.tight_layout()
    return fig


def figure3(runs_dir: FilePath, seed: int = 0):
    "Chosen / rejected log-probs during the first alignment: ORPO (SIPF, strong simulator) vs DPO (pSRF)."
    from sipf.align import plot_logps

    paths = [runs_dir / f'seed{seed}-{r}' / 'iter_1' / 'model' / 'metrics.jsonl' for r in ('sipf-strong', 'psrf')]
    paths = [p for p in paths if p.exists()]
    return plot_logps(paths, ['ORPO (SIPF)', 'DPO (pSRF)'][: len(paths)]) if paths else None


def check_world(runs_dir: FilePath, world: str):
    "Refuse to score runs of another world on this world's fresh problems (one line, exit 2)."
    import yaml
    from sipf.config import load_config

    want = dict(load_config(world).task_options)
    for cfg in sorted(runs_dir.glob('seed*-*/config.yaml')):
        if yaml.safe_load(cfg.read_text()).get('task_options') != want:
            print(f"error: {cfg.parent.name} was run on another world than '{world}': pass the --world it ran on")
            raise SystemExit(2)


def cmd_report(args):
    runs_dir, out = FilePath(args.runs_dir), FilePath(args.out)
    check_world(runs_dir, WORLD)
    out.mkdir(parents=True, exist_ok=True)
    rows = table(score_fresh(runs_dir, args.threads))
    ladder = label_ladder(runs_dir)
    figure4(rows, ladder).savefig(out / 'figure4.png', dpi=110)
    if (fig := figure3(runs_dir)) is not None:
        fig.savefig(out / 'figure3.png', dpi=110)
    text = f"{table_md(rows)}\n\nLabel ladder (iteration k's data):\n\n{ladder_md(ladder)}\n"
    (out / 'results.md').write_text(text)
    (out / 'results.json').write_text(json.dumps({'table': rows, 'ladder': ladder}, indent=1))
    print(text)
    print(json.dumps({r['name']: round(r['mean'], 2) for r in rows}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--world', choices=WORLDS, default='toy', help='the bundled config every rung starts from')
    sub = ap.add_subparsers(dest='cmd', required=True)
    r = sub.add_parser('run', help="run the ladder's rungs for one seed (resumable)")
    r.add_argument('--seed', type=int, default=0)
    r.add_argument('--rungs', nargs='+', choices=list(RUNGS), help='default: all')
    r.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='override a key of every rung')
    r.add_argument('--score', action='store_true', help="then score this seed's models on the fresh problems")
    rep = sub.add_parser('report', help='score on fresh problems; table, label ladder, figures')
    rep.add_argument('--out', default='nbs/study', help='where results.json / results.md / PNGs go')
    rep.add_argument('--threads', type=int, default=1)
    for p in (r, rep):
        p.add_argument('--runs-dir', default='runs/study')
    args = ap.parse_args()
    global WORLD
    WORLD = args.world
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s', datefmt='%H:%M:%S')
    (cmd_run if args.cmd == 'run' else cmd_report)(args)


if __name__ == '__main__':
    main()
