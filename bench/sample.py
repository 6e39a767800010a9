"""sample_paths throughput vs a bare batched `model.generate` loop, same prompts, same model, same settings, in one run.

    python bench/sample.py                        # toy policy (random weights), 64 arith questions x 8 samples
    python bench/sample.py --m0 quick             # the toy M0 of recipe 'quick' (sipf.toy.toy_m0, trained once)
    python bench/sample.py --model runs/x/iter_0/model --questions 128

Both sides generate `n` samples of every question at the same temperature, max_new_tokens, stop strings and batch size
(rows per generate call). The bare loop is what a straightforward script does: tokenize a batch of prompts, call
`model.generate(num_return_sequences=n)`, decode. sample_paths additionally sorts by length, seeds every question, cuts
stop strings, judges, dedups and appends jsonl. Quotas are set so they never bind (one round per question), so both do
the same generation work. The two are run alternately `--reps` times; the ratio of medians is reported.
Throughput = generated tokens per second (samples differ between the two, so tokens are the fair unit); paths/s too.
Seconds are measured twice: as this process's CPU time (`time.process_time`, headline `throughput_ratio_vs_generate`:
on a shared box wall time mostly measures the other processes) and as wall time (`wall_throughput_ratio_vs_generate`).
Run with --threads 1 so CPU time is compute time. Last line: one JSON object.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path as FilePath

import torch

from sipf.arith import load_arith
from sipf.models import load_model
from sipf.toy import toy_m0, toy_model, toy_tokenizer
from sipf.sample import SampleConfig, TransformersBackend, sample_paths


def bare_generate(model, tok, prompts, n, temperature, max_new_tokens, stop, batch_size):
    "A plain batched generate loop: returns (texts, generated tokens)."
    texts, n_tokens, per_call = [], 0, max(1, batch_size // n)
    for b in range(0, len(prompts), per_call):
        enc = tok(prompts[b : b + per_call], return_tensors='pt', padding=True, padding_side='left')
        with torch.inference_mode():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                num_return_sequences=n,
                max_new_tokens=max_new_tokens,
                stop_strings=stop,
                tokenizer=tok,
                pad_token_id=tok.pad_token_id,
            )
        new = out[:, enc['input_ids'].shape[1] :]
        n_tokens += int((new != tok.pad_token_id).sum())
        texts += tok.batch_decode(new, skip_special_tokens=True)
    return texts, n_tokens


def run_sample_paths(model, tok, task, problems, cfg, batch_size):
    with tempfile.TemporaryDirectory() as d:
        paths = sample_paths(
            task, TransformersBackend(model, tok, batch_size=batch_size), problems, cfg, FilePath(d) / 's.jsonl'
        )
        rounds = (FilePath(d) / 's.rounds.jsonl').read_text().count('\n')
    return paths, sum(p.meta['n_tokens'] for p in paths), rounds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument(
        '--model', default=None, help='model dir (default: the toy policy built from its config, random weights)'
    )
    ap.add_argument('--m0', default=None, help="toy M0 recipe name, e.g. 'quick' or 'policy' (overrides --model)")
    ap.add_argument('--questions', type=int, default=64)
    ap.add_argument('--n', type=int, default=8)
    ap.add_argument('--temperature', type=float, default=1.0)
    ap.add_argument('--max-new-tokens', type=int, default=48)
    ap.add_argument('--batch-size', type=int, default=64, help='rows per generate call, both sides')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument(
        '--threads', type=int, default=1, help='torch threads, both sides (1 is fastest on a shared 2-core box)'
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.m0:
        a.model = str(toy_m0(a.m0))
    if a.model:
        model, tok = load_model(a.model)
    else:
        tok = toy_tokenizer()
        model = toy_model(tok, size='policy', seed=0)
    model.eval()
    task = load_arith(split='test', n=a.questions)
    problems = task.problems
    prompts = [task.prompt(p) for p in problems]
    cfg = SampleConfig(
        n=a.n,
        temperature=a.temperature,
        max_new_tokens=a.max_new_tokens,
        n_pos=a.n,
        n_neg=a.n,
        max_rounds=1,
        time_budget=0,
        dedup='text',
        top_k=0,  # the bare loop samples the whole vocabulary too
        quota_mode='fixed',  # caps that never bind: one round, every sample kept
        questions_per_round=max(1, a.batch_size // a.n) * 4,
        seed=0,
    )
    runs = {'generate': [], 'sample_paths': []}  # (tokens, paths, cpu seconds, wall seconds) per rep
    for rep in range(a.reps):
        for name in ['generate', 'sample_paths'] if rep % 2 == 0 else ['sample_paths', 'generate']:
            c, w = time.process_time(), time.perf_counter()
            if name == 'generate':
                texts, tokens = bare_generate(
                    model, tok, prompts, a.n, a.temperature, a.max_new_tokens, task.stop, a.batch_size
                )
                n_paths = len(texts)
            else:
                paths, tokens, rounds = run_sample_paths(model, tok, task, problems, cfg, a.batch_size)
                n_paths, info = (
                    a.n * len(problems),
                    dict(paths_kept=len(paths), correct=sum(p.correct for p in paths), rounds=rounds),
                )
            runs[name].append((tokens, n_paths, time.process_time() - c, time.perf_counter() - w))
            t = runs[name][-1]
            print(
                f"rep {rep} {name:>12}: {t[0]} tokens, {t[1]} samples, cpu {t[2]:.2f}s ({t[0] / t[2]:.0f} tok/s), "
                f"wall {t[3]:.2f}s ({t[0] / t[3]:.0f} tok/s)",
                file=sys.stderr,
            )

    def rate(name, i, j):
        return statistics.median(r[i] / r[j] for r in runs[name])

    def ratio(i, j):
        return round(rate('sample_paths', i, j) / rate('generate', i, j), 3)

    print(
        json.dumps(
            dict(
                questions=len(problems),
                n=a.n,
                max_new_tokens=a.max_new_tokens,
                batch_size=a.batch_size,
                threads=a.threads,
                model=a.model or 'toy policy (random init)',
                reps=a.reps,
                generate_tokens_per_cpu_s=round(rate('generate', 0, 2), 1),
                sample_paths_tokens_per_cpu_s=round(rate('sample_paths', 0, 2), 1),
                throughput_ratio_vs_generate=ratio(0, 2),
                samples_ratio_vs_generate=ratio(1, 2),
                wall_throughput_ratio_vs_generate=ratio(0, 3),
                **info,
            )
        )
    )


if __name__ == '__main__':
    main()
