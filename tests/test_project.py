"The project's own contracts: CI runs README's test command verbatim; settings that nbdev relies on."

from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command():
    lines = [
        l for l in (ROOT / '.ci/run').read_text().splitlines() if l.strip() and not l.startswith(('#', 'set ', 'cd '))
    ]
    assert len(lines) == 1, f".ci/run should run exactly one command, found {lines}"
    return lines[0]


def test_ci_runs_readme_test_command_verbatim():
    readme = (ROOT / 'README.md').read_text()
    cmd = _ci_command()
    assert cmd.startswith('pip install torch==2.13.0 && '), cmd
    assert f"```sh\n{cmd}\n```" in readme, "README.md must give .ci/run's command verbatim in a sh block"


def test_settings_skip_gpu_and_slow_cells():
    cfg = ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini')
    assert cfg['DEFAULT']['tst_flags'].split() == ['notest', 'cuda', 'slow']
    dev = cfg['DEFAULT']['dev_requirements'].split()
    for pin in ('nbdev==2.4.14', 'fastcore==1.14.5', 'execnb==0.1.18'):
        assert pin in dev


def test_optional_extras_not_required():
    cfg = ConfigParser(delimiters=['='])
    cfg.read(ROOT / 'settings.ini')
    req = cfg['DEFAULT']['requirements']
    for extra in ('bitsandbytes', 'unsloth', 'vllm'):
        assert extra not in req


def test_run_sh_counts_a_failed_notebook_as_failed(tmp_path):
    "tests/run.sh must turn nbdev_test's failure report (its real wording) into failures and a red exit, not passes."
    import os
    import subprocess

    stubs = {
        'nbdev_export': 'exit 0',
        'nbdev_clean': 'exit 0',
        'ruff': 'exit 0',
        'jupyter': f'cat "{ROOT}/README.md"',
        'nbdev_test': 'echo "AssertionError in nbs/05_simulate.ipynb"; echo; '
        'echo "nbdev Tests Failed On The Following Notebooks:"; echo "=========="; '
        'printf "\\t05_simulate.ipynb\\n"; exit 1',
        'python': 'echo "3 passed in 0.1s"',
    }
    for name, body in stubs.items():
        (tmp_path / name).write_text(f'#!/usr/bin/env bash\n{body}\n')
        (tmp_path / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", SIPF_CACHE=str(tmp_path / 'cache'))
    r = subprocess.run(['bash', str(ROOT / 'tests/run.sh')], capture_output=True, text=True, env=env, cwd=ROOT)
    last = r.stdout.strip().splitlines()[-1]
    assert r.returncode != 0 and last.endswith('1 failed'), r.stdout
    assert 'FAIL notebooks: 1 failed' in r.stdout
    (tmp_path / 'nbdev_test').write_text('#!/usr/bin/env bash\necho "Success."\nexit 0\n')
    r = subprocess.run(['bash', str(ROOT / 'tests/run.sh')], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1].endswith(' 0 failed'), r.stdout


def test_no_function_over_40_lines():
    "House style: a function that passes ~40 formatted lines is two (the generated modules are what runs)."
    import ast

    long = []
    for p in sorted((ROOT / 'sipf').glob('*.py')):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 40:
                long.append(f'{p.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)')
    assert not long, long
