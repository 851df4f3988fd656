"""Execute notebooks in place, saving the outputs of the cells the tests run and keeping the saved outputs of the
`#| slow` (and `#| notest`) cells from their last full run.

    OMP_NUM_THREADS=1 .venv/bin/python tools/run_nb.py nbs/tutorials/10_demo.ipynb [more.ipynb ...]

Use it after changing a notebook's quick cells; re-run the whole notebook (`jupyter nbconvert --execute --inplace`)
to re-record its slow cells. The kernel starts in the notebook's folder, with `IN_TEST` unset, as in Jupyter.
"""
import re, sys
from pathlib import Path
import nbformat
from nbclient import NotebookClient

SKIP = re.compile(r'^\s*#\|\s*(slow|notest)\b', re.M)

class QuickCells(NotebookClient):
    "A client that leaves the `#| slow` / `#| notest` cells (and their saved outputs) as they are."
    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if cell.cell_type == 'code' and SKIP.search(cell.source): return cell
        return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

def run(path, timeout=900):
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    QuickCells(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    tmp = path.with_suffix('.ipynb.tmp'); nbformat.write(nb, tmp); tmp.replace(path)
    print(f'{path}: {sum(c.cell_type == "code" and not SKIP.search(c.source) for c in nb.cells)} cells run, '
          f'{sum(c.cell_type == "code" and bool(SKIP.search(c.source)) for c in nb.cells)} slow cells kept')

if __name__ == '__main__':
    if len(sys.argv) < 2: sys.exit(__doc__)
    for p in sys.argv[1:]: run(p)
