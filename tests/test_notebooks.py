"Run every notebook in `nbs/` as one pytest test (cells marked `#| slow` or `#| notest` are skipped)."
from pathlib import Path
import pytest
import nbdev.test as nbt  # not `from nbdev.test import test_nb`: pytest would collect it

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(p for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    ok, secs = nbt.test_nb(nb, skip_flags=['slow', 'notest'], basepath=NBS.parent)
    assert ok, f'{nb.name} failed (see the traceback above)'
