"sipf.config: one typed tree; every setting reaches what it sets (the sentinel tests), resolved configs reproduce keys."

import copy
import dataclasses

import pytest
from omegaconf import OmegaConf
from trl import DPOConfig, SFTConfig
from trl.experimental.orpo import ORPOConfig
from transformers import TrainingArguments

from sipf.config import AlignConfig, M0Config, PRMConfig, RunConfig, SECTIONS, TrainConfig, config_yaml, load_config
from sipf.models import training_args
from sipf.align import trl_args

# TrainConfig field -> (the Trainer argument it sets, how our value looks there). A new TrainConfig field that is in
# neither this table nor LOADED fails test_every_train_field_is_mapped: no setting can be dropped silently again.
TRAINER_ARGS = dict(
    lr='learning_rate', epochs='num_train_epochs', max_steps='max_steps', batch_size='per_device_train_batch_size',
    grad_accum='gradient_accumulation_steps', scheduler='lr_scheduler_type', warmup_ratio='warmup_steps',
    weight_decay='weight_decay', max_grad_norm='max_grad_norm', max_length='max_length', logging_steps='logging_steps',
    save_strategy='save_strategy', save_steps='save_steps', report_to='report_to', progress='disable_tqdm',
    seed='data_seed', gradient_checkpointing='activation_checkpointing',
)  # fmt: skip
LOOKS = {'report_to': lambda v: [v], 'progress': lambda v: not v}  # how our value looks there, where it is not equal
# consumed when the model is loaded (sipf.models.load_model: tests in test_models / the adapter-rank tests) or by the
# precision guard (bf16/fp16 are always off on CPU; precision_flags is tested in 03_models)
LOADED = {'adapter', 'lora', 'quant', 'precision'}
OURS = {'longest_first'}  # read by sipf.models.LongestFirstMixin, not a TrainingArguments field
SENTINELS = dict(
    lr=1.234e-4, epochs=3.5, max_steps=7, batch_size=3, grad_accum=5, scheduler='cosine_with_restarts',
    warmup_ratio=0.07, weight_decay=0.011, max_grad_norm=0.77, max_length=333, logging_steps=9,
    save_strategy='steps', save_steps=11, report_to='tensorboard', progress=False, seed=13, gradient_checkpointing=True,
)  # fmt: skip


def test_every_train_field_is_mapped():
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    assert names == set(TRAINER_ARGS) | LOADED | OURS, names ^ (set(TRAINER_ARGS) | LOADED | OURS)


@pytest.mark.parametrize(
    'cls,args_class,build',
    [
        (M0Config, SFTConfig, lambda c, d: training_args(c, d, SFTConfig, use_cpu=True)),
        (PRMConfig, TrainingArguments, lambda c, d: training_args(c, d, TrainingArguments, use_cpu=True)),
        (AlignConfig, ORPOConfig, lambda c, d: trl_args(c, d, use_cpu=True)),
        (AlignConfig, DPOConfig, lambda c, d: trl_args(dataclasses.replace(c, objective='dpo'), d, use_cpu=True)),
    ],
    ids=['m0-sft', 'prm', 'align-orpo', 'align-dpo'],
)
def test_train_sentinels_reach_the_trainer(cls, args_class, build, tmp_path):
    args = build(cls(**SENTINELS), tmp_path)
    assert isinstance(args, args_class)
    for name, arg in TRAINER_ARGS.items():
        if arg == 'max_length' and not hasattr(args, 'max_length'):
            continue  # plain TrainingArguments has no max_length: the PRM cuts its rows itself (prm.example_row)
        want = LOOKS.get(name, lambda v: v)(SENTINELS[name])
        assert getattr(args, arg) == want, (name, arg, getattr(args, arg))
    assert args.seed == SENTINELS['seed'] and (args.bf16, args.fp16) == (False, False)


def test_align_sentinels_reach_trl(tmp_path):
    c = AlignConfig(beta=0.37, nll_weight=0.6, trace_steps=4)
    orpo = trl_args(c, tmp_path, use_cpu=True)
    assert (orpo.beta, orpo.eval_steps, orpo.eval_strategy) == (0.37, 4, 'steps')
    rpo = trl_args(dataclasses.replace(c, objective='rpo'), tmp_path, use_cpu=True)
    assert (rpo.beta, rpo.loss_weights, rpo.loss_type) == (0.37, [1.0, 0.6], ['sigmoid', 'sft'])


def test_toy_m0_takes_every_m0_setting():
    "The toy M0 recipe carries the m0 section: its own fields, and every other one that differs from the defaults."
    from sipf.pipeline import _toy_m0_config
    from sipf.models import SFTTrainConfig

    c = load_config('toy', ['m0.max_grad_norm=0.7', 'm0.lr=1e-3', 'report_to=tensorboard'])
    recipe = _toy_m0_config(c)
    assert recipe.lr == 1e-3 and recipe.train == {'max_grad_norm': 0.7, 'report_to': 'tensorboard'}
    args = training_args(SFTTrainConfig(**recipe.train), '/tmp/x', SFTConfig, use_cpu=True)
    assert (args.max_grad_norm, args.report_to) == (0.7, ['tensorboard'])
    assert _toy_m0_config(load_config('toy')).train == {}  # the shipped recipe's cache key is unchanged


def test_resolved_config_yaml_reproduces_stage_keys(tmp_path):
    from sipf.pipeline import _settings

    for name, overrides in [('toy', ['align.lr=3e-5', 'method=rft']), ('gemma2b-gsm8k', []), ('toy-quick', [])]:
        c = load_config(name, overrides, seed=4)
        f = tmp_path / f'{name}.yaml'
        f.write_text(config_yaml(c))
        again = load_config(str(f))
        assert again == c
        for stage in ('m0', 'sample', 'simulate', 'prm', 'score', 'pairs', 'align', 'eval'):
            assert _settings(again, stage, 1) == _settings(c, stage, 1), stage


def test_config_yaml_holds_every_default():
    text = config_yaml(load_config('toy'))
    d = OmegaConf.to_container(OmegaConf.create(text))
    assert d['pairs']['margin'] == 0.05 and 'min_reward' in d['pairs'] and 'max_grad_norm' in d['align']
    assert set(SECTIONS) <= set(d)


def test_eval_batch_size_does_not_change_sampling():
    from sipf.pipeline import _settings

    a, b = load_config('toy'), load_config('toy', ['eval.batch_size=7'])
    assert _settings(a, 'sample', 1) == _settings(b, 'sample', 1)
    assert _settings(a, 'simulate', 1) == _settings(b, 'simulate', 1)
    assert _settings(a, 'eval') != _settings(b, 'eval')


def test_pairs_key_records_the_objective_and_row_format():
    "A new unpaired objective must not reuse cached DPO pairs: the pairs key holds objective and row format."
    from sipf.pipeline import _settings

    keys = {m: _settings(load_config(method=m), 'pairs', 1) for m in ('srf', 'rpo', 'siof', 'rft')}
    assert len({str(k) for k in keys.values()}) == 4
    assert keys['rft']['rows'] == 'nll' and keys['siof']['rows'] == 'pairs'


def test_stage_configs_import_without_torch():
    import subprocess
    import sys

    code = "import sys, sipf.config; sipf.config.load_config('gemma2b-gsm8k'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == 'False'


# ------------------------------------------------------------------ every field of every stage section is read
class _Reads:
    "Records reads of stage-config fields (outside whole-object copies: asdict, replace, deepcopy, YAML dumps)."

    def __init__(self):
        self.seen, self.on = set(), True

    def wrap(self, obj, section):
        reads, fields = self, {f.name for f in dataclasses.fields(obj)}

        def get(self_, name):
            if reads.on and name in fields:
                reads.seen.add(f'{section}.{name}')
            return object.__getattribute__(self_, name)

        sub = type(type(obj).__name__, (type(obj),), {'__getattribute__': get})
        new = object.__new__(sub)
        new.__dict__.update(obj.__dict__)
        return new

    def paused(self, fn):
        def call(*a, **kw):
            was, self.on = self.on, False
            try:
                return fn(*a, **kw)
            finally:
                self.on = was

        return call


def align_on_hand_made_pairs(stages, tmp_path):
    "A tiny toy M0 rarely yields a pair: the alignment stage is run on gold-vs-slip pairs of the run's own problems."
    from sipf.core import Pair, write_jsonl

    task = stages.task()
    pairs = [Pair(p.id, task.prompt(p), p.solution, p.solution.replace('=', '= 1 +', 1)) for p in stages.problems()[:8]]
    write_jsonl(tmp_path / 'pairs.jsonl', pairs)
    stages.align(tmp_path / 'aligned', tmp_path / 'run' / 'iter_0' / 'model', tmp_path / 'pairs.jsonl')


# Unread in a toy CPU run, and why (each is read elsewhere: the test named)
NOT_IN_TOY = {
    'sample.backend', 'simulate.backend', 'eval.backend',  # Stages.backend builds 'transformers' only (issue 12)
    'prm.adapter',  # toy PRMs are full-weight; adapters: tests/test_prm.py
    'sample.edit_threshold',  # code tasks only (dedup 'edit'): tests/test_sample.py
    'pairs.min_reward',  # pRFT / w/o OR rows: tests/test_pairs.py, 10_pipeline
    'align.nll_weight',  # RPO only: test_align_sentinels_reach_trl
    'sample.n_code',  # code tasks' official quota: tests/test_sample.py
    'simulate.trust_outcome',  # the binary strategy only: tests/test_simulate.py
    'pairs.require_incorrect_rejected',  # read once a question has a right path (this M0 has none): tests/test_pairs.py
    'simulate.slip',  # the arith-solver simulator only (this run rolls out with the policy): tests/test_solver.py
}  # fmt: skip


def test_every_stage_field_is_read_by_a_run(tmp_path, monkeypatch):
    import sipf.pipeline as pl

    reads = _Reads()
    c = load_config(
        'toy-quick',
        runs_dir=str(tmp_path),
        name='run',
        iterations=1,
        n_eval=16,
        n_sample=16,
        n_simulate=8,
        simulator='',  # the policy rolls out: the model-backed simulate path, which reads simulate.load_in_4bit
        overrides=['align.trace_steps=1'],
    )
    c = dataclasses.replace(
        c, **{s: reads.wrap(getattr(c, s), s) for s in ('sample', 'simulate', 'prm', 'pairs', 'align', 'eval')}
    )
    for mod, name in [(dataclasses, 'asdict'), (dataclasses, 'replace'), (copy, 'deepcopy'), (pl, 'config_yaml')]:
        monkeypatch.setattr(mod, name, reads.paused(getattr(mod, name)))
    monkeypatch.setattr(pl, '_settings', reads.paused(pl._settings))
    rows = pl.run(c)
    assert rows[-1]['samples'] > 0, rows  # the stages past sampling ran on real paths
    align_on_hand_made_pairs(pl.Stages(c), tmp_path)
    wanted = {
        f'{s}.{f.name}'
        for s in ('sample', 'simulate', 'prm', 'pairs', 'align', 'eval')
        for f in dataclasses.fields(getattr(RunConfig(), s))
    }
    wanted -= {f'{s}.{n}' for s in ('prm', 'align') for n in LOADED}  # load_model's: tested above and in test_models
    missing = wanted - reads.seen - NOT_IN_TOY
    assert not missing, sorted(missing)


class _Fixed:
    "A generation backend answering each training question once rightly (its gold) and once wrongly: every stage runs."

    def __init__(self, problems):
        self.gold = {p.question: p.solution for p in problems}

    def _paths(self, prompt, n):
        gold = next(
            (s for q, s in self.gold.items() if prompt.rstrip().endswith(q + '\nAnswer:') or q in prompt[-400:]), None
        )
        wrong = 'Ann: 3 + 4 = 7\nBen: 7 + 1 = 8\nThe answer is 8'
        return [(gold if gold and i % 2 == 0 else wrong) for i in range(n)]

    def generate(self, prompts, n=1, **kw):
        from sipf.sample import Generation

        return [[Generation(t, 12, True) for t in self._paths(p, n)] for p in prompts]


def test_run_prompt_style_reaches_every_stage(tmp_path):
    "`prompt_style=cot` (the one key for it) is the prompt of sampling, simulation, the PRM, the pairs and evaluation."
    import sys

    import sipf.pipeline as pl

    c = load_config(
        'toy-quick',
        runs_dir=str(tmp_path),
        prompt_style='cot',
        iterations=1,
        n_sample=4,
        n_simulate=4,
        overrides=['pairs.margin=0.0', 'align.max_length=4096'],  # few-shot prompts are ~1,600 toy tokens
    )
    stages, seen, task_of = pl.Stages(c), [], pl.Stages.task

    def recording(task):
        prompt = task.prompt

        def record(problem, style='instruct'):
            seen.append((sys._getframe(1).f_globals['__name__'], style))
            return prompt(problem, style)

        task.prompt = record
        return task

    stages.task = lambda *a, **kw: recording(task_of(stages, *a, **kw))
    stages.backend = lambda *a, **kw: _Fixed(task_of(stages).problems)
    rows = pl.run(c, stages)
    assert rows[-1]['pairs'] > 0, rows
    callers = {m for m, _ in seen}
    assert {'sipf.sample', 'sipf.simulate', 'sipf.prm', 'sipf.pipeline', 'sipf.evaluate'} <= callers, callers
    assert {s for _, s in seen} == {'cot'}, set(seen)


def test_sft_fields_reach_sftconfig(tmp_path):
    "M0's own fields (loss on the full text, packing: the official M0) reach TRL's SFTConfig through the one builder."
    from sipf.models import _trl_sft_config

    args = _trl_sft_config(M0Config(completion_only_loss=False, packing=True), tmp_path, use_cpu=True)
    assert (args.completion_only_loss, args.packing) == (False, True)
    c = load_config('gemma2b-gsm8k')  # the GPU configs carry the official budgets
    assert (c.m0.epochs, c.m0.lr, c.m0.packing, c.align.epochs, c.align.save_strategy, c.prm.epochs) == (
        8,
        2e-4,
        True,
        8,
        'epoch',
        10,
    )


def test_report_to_is_one_run_level_key_for_every_trainer(tmp_path):
    "Issue 12: one `report_to` reaches M0's SFT, the PRM and alignment arguments; a section may not say otherwise."
    from trl import SFTConfig
    from trl.experimental.orpo import ORPOConfig

    from sipf.models import training_args

    c = load_config('gemma2b-gsm8k', ['report_to=tensorboard'])
    for section, cls in ((c.m0, SFTConfig), (c.prm, None), (c.align, ORPOConfig)):
        assert training_args(section, tmp_path, cls, use_cpu=True).report_to == ['tensorboard']
    with pytest.raises(ValueError, match="'prm.report_to' is 'wandb' but the run's 'report_to' is 'none'"):
        load_config('gemma2b-gsm8k', ['prm.report_to=wandb'])
