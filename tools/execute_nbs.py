"""Execute lesson notebooks in place and keep their outputs (the docs show values, tables and plots).

    python tools/execute_nbs.py nbs/00a_config.ipynb nbs/07_pairs.ipynb ...   # then: nbdev_clean

Runs exactly the cells `nbdev_test` runs (cells flagged `#| slow`, `#| cuda`, `#| notest`, `#| eval: false` and the
`nbdev_export()` cell are skipped and keep no output), with progress bars off so outputs stay small. Re-run a
notebook whenever its code changes. nbdev's own tools test notebooks but never write their outputs back, so this
is the one hand-written piece: `execnb.shell.CaptureShell.run_all`, with nbdev_test's cell filter.
"""

import os
import sys
from pathlib import Path

os.environ.update(TQDM_DISABLE='1', HF_DATASETS_DISABLE_PROGRESS_BARS='1', TRANSFORMERS_VERBOSITY='error')
from execnb.nbio import read_nb, write_nb  # noqa: E402
from execnb.shell import CaptureShell  # noqa: E402
from fastcore.foundation import working_directory  # noqa: E402
from nbdev.config import get_config  # noqa: E402
from nbdev.process import NBProcessor  # noqa: E402

SKIP = set(get_config().tst_flags.split()) | {'notest'}


def _no_eval(cell) -> bool:
    if cell.cell_type != 'code' or 'nbdev_export' + '(' in cell.source:
        return True
    direc = getattr(cell, 'directives_', {}) or {}
    return direc.get('eval:', [''])[0].lower() == 'false' or bool(SKIP & direc.keys())


def execute(fn: Path):
    nb = NBProcessor(fn, process=True).nb
    for cell in nb.cells:
        if cell.cell_type == 'code':
            cell.outputs, cell.execution_count = [], None
    with working_directory(fn.parent):
        CaptureShell(fn).run_all(nb, exc_stop=True, preproc=_no_eval)
    raw = read_nb(fn)
    by_id = {c.get('id'): c for c in nb.cells}
    for cell in raw.cells:  # keep the source as written; take only the outputs
        if cell.cell_type == 'code' and cell.get('id') in by_id:
            cell.outputs = by_id[cell['id']].get('outputs', [])
    write_nb(raw, fn)


if __name__ == '__main__':
    for f in sys.argv[1:]:
        print(f, flush=True)
        execute(Path(f))
