"Run every notebook under `nbs/` (api, paper, tutorials) as one pytest test (cells marked `#| slow` or `#| notest` are skipped)."
from pathlib import Path
import pytest
import nbdev.test as nbt  # not `from nbdev.test import test_nb`: pytest would collect it

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(p for p in NBS.rglob('*.ipynb')
                   if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.relative_to(NBS).with_suffix('').as_posix() for p in NOTEBOOKS])
def test_notebook(nb):
    ok, secs = nbt.test_nb(nb, skip_flags=['slow', 'notest'], basepath=NBS.parent)
    assert ok, f'{nb.relative_to(NBS)} failed (see the traceback above)'
