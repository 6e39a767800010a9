"""Package metadata comes from settings.ini (nbdev 2 convention); this file only reads it."""

from configparser import ConfigParser
from pathlib import Path
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent / 'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']


def split(key):
    return cfg.get(key, "").split()


setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=(Path(__file__).parent / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    url=cfg['git_url'],
    license='Apache-2.0',
    packages=setuptools.find_packages(include=['sipf', 'sipf.*']),
    package_data={'sipf': ['configs/*.yaml', 'configs/accelerate/*.yaml']},
    include_package_data=True,
    python_requires='>=' + cfg['min_python'],
    install_requires=split('requirements'),
    extras_require={
        'dev': split('dev_requirements'),
        'gpu': split('gpu_requirements'),
        'unsloth': split('unsloth_requirements'),
        'vllm': split('vllm_requirements'),
    },
    entry_points={
        'console_scripts': split('console_scripts'),
        'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
