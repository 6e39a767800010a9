"The project's own contracts: CI runs README's test command verbatim; settings that nbdev relies on."
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_command():
    lines = [l for l in (ROOT / '.ci/run').read_text().splitlines() if l.strip() and not l.startswith(('#', 'set ', 'cd '))]
    assert len(lines) == 1, f".ci/run should run exactly one command, found {lines}"
    return lines[0]


def test_ci_runs_readme_test_command_verbatim():
    readme = (ROOT / 'README.md').read_text()
    cmd = _ci_command()
    assert cmd.startswith('pip install torch==2.13.0 && '), cmd
    assert f"```sh\n{cmd}\n```" in readme, "README.md must give .ci/run's command verbatim in a sh block"


def test_settings_skip_gpu_and_slow_cells():
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    assert cfg['DEFAULT']['tst_flags'].split() == ['notest', 'cuda', 'slow']
    dev = cfg['DEFAULT']['dev_requirements'].split()
    for pin in ('nbdev==2.4.14', 'fastcore==1.14.5', 'execnb==0.1.18'): assert pin in dev


def test_optional_extras_not_required():
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    req = cfg['DEFAULT']['requirements']
    for extra in ('bitsandbytes', 'unsloth', 'vllm'): assert extra not in req
