"""Run every notebook under `nbs/` (api, paper, tutorials) as one pytest test (cells marked `#| slow` or `#| notest`
are skipped).

The cells run as `nbdev.test.test_nb` runs them (nbdev's processing and skip rules, execnb's `CaptureShell`, the
notebook's folder as working directory, `IN_TEST=1`), but cell by cell here, so that a failure names its cell: the
notebook, the cell index, the nearest markdown heading above it, its first line of code and the end of the traceback.
"""
import os, re, signal, sys, threading
from pathlib import Path
import pytest
import nbdev.test as nbt  # not `from nbdev.test import test_nb`: pytest would collect it
from execnb.shell import CaptureShell, format_exc
from fastcore.basics import str2bool
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.frontmatter import nb_frontmatter
from nbdev.process import NBProcessor, nb_lang

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NOTEBOOKS = sorted(p for p in NBS.rglob('*.ipynb')
                   if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts))
SKIP_FLAGS = ['slow', 'notest']
TB_LINES = 12  # lines of the traceback's end in the failure message
_ansi = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')

def _heading_above(cells, idx):
    "The nearest markdown heading above cell `idx` (its text, without the #s), or None."
    for c in reversed(cells[:idx]):
        if c.cell_type != 'markdown': continue
        hs = [l for l in c.source.splitlines() if re.match(r'#{1,6}\s', l)]
        if hs: return hs[-1].lstrip('#').strip()
    return None

def _first_line(cell):
    "The cell's first line of code (after its `#|` directives)."
    ls = [l for l in cell.source.splitlines() if l.strip()]
    code = [l for l in ls if not l.lstrip().startswith('#|')]
    return (code or ls or [''])[0].strip()

def describe_failure(fn, cells, cell, exc) -> str:
    "The failure message: notebook, cell index, heading above, first line, the traceback's last lines."
    name = fn.relative_to(NBS).as_posix() if fn.is_relative_to(NBS) else fn.name
    head = _heading_above(cells, cell.idx_)
    tb = _ansi.sub('', ''.join(format_exc(exc))).rstrip().splitlines()
    start = next((i for i, l in enumerate(tb) if '<ipython-input-' in l), 0)   # from the cell's own frame on
    tb = tb[:1] + tb[start:] if start else tb
    return (f'{name}: cell index {cell.idx_} failed' + (f', under "{head}"' if head else '') + f'\n'
            f'  first line: {_first_line(cell)}\n'
            f'  traceback (last lines):\n' + '\n'.join('    ' + l for l in tb[-TB_LINES:]))

def run_notebook(fn, skip_flags=SKIP_FLAGS, basepath=ROOT, cell_timeout=600):
    "Run notebook `fn` as `nbdev.test.test_nb` does, cell by cell; a failing cell raises an AssertionError naming it."
    fn = Path(fn)
    if not nbt.in_notebook() and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, nbt._int_handler)   # nbdev's: Ctrl-C prints where the notebook hangs
    if basepath and str(basepath) not in sys.path: sys.path.insert(0, str(basepath))
    prev, nbt._cur_nb[0] = os.environ.get('IN_TEST'), fn
    os.environ['IN_TEST'] = '1'
    try:
        nb = NBProcessor(fn, rm_directives=False, process=True).nb
        if str2bool(nb_frontmatter(nb).get('skip_exec', False)) or nb_lang(nb) != 'python': return
        skip, ran = nbt._skip_cell(nb, skip_flags), []
        k = CaptureShell(fn, profile=bool(get_config(fn.parent).exec_profile))
        nbt._cur_shell[0] = k
        with working_directory(fn.parent):
            try: k.run_all(nb, exc_stop=True, preproc=lambda c: skip(c) or ran.append(c), cell_timeout=cell_timeout)
            except Exception as e:
                sys.stderr.write((k.prettytb(fname=fn) or '') + '\n')   # the whole traceback, in pytest's captured stderr
                if not ran: raise
                raise AssertionError(describe_failure(fn, nb.cells, ran[-1], e)) from None
        if k.leaks: sys.stderr.write(f'{fn}: {len(k.leaks)} leaked task(s) survived cancellation\n')
    finally:
        nbt._cur_nb[0] = nbt._cur_shell[0] = None
        if prev is None: os.environ.pop('IN_TEST', None)
        else: os.environ['IN_TEST'] = prev

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.relative_to(NBS).with_suffix('').as_posix() for p in NOTEBOOKS])
def test_notebook(nb):
    try: run_notebook(nb); failure = None
    except AssertionError as e: failure = str(e)
    if failure: pytest.fail(failure, pytrace=False)   # the message says where: no traceback of the runner itself

def test_failing_cell_is_named(tmp_path):
    "A tiny notebook whose fourth cell fails: the message names that cell; skipped cells are skipped, later ones not run."
    import nbformat
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell('# Tiny\n\n> A notebook for the runner.'),
             v4.new_code_cell('x = 1'),
             v4.new_markdown_cell('## Setting up\n\nText.\n\n### Checking the sum\n\nMore text.'),
             v4.new_code_cell('#| slow\nraise RuntimeError("slow cells are skipped")'),
             v4.new_code_cell('#| hide\ny = x + 1\nassert y == 3, f"y is {y}, not 3"'),
             v4.new_code_cell('open("after.txt", "w").write("ran")')]
    nb = v4.new_notebook(cells=cells, metadata={'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}})
    fn = tmp_path/'tiny.ipynb'
    nbformat.write(nb, fn)
    with pytest.raises(AssertionError) as e: run_notebook(fn)
    msg = str(e.value)
    assert msg.startswith('tiny.ipynb: cell index 4 failed, under "Checking the sum"\n'), msg
    assert '  first line: y = x + 1\n' in msg, msg
    assert 'AssertionError: y is 2, not 3' in msg.splitlines()[-1] and 'line 3, in <module>' in msg, msg   # the line in the cell as written
    assert 'slow cells are skipped' not in msg and not (tmp_path/'after.txt').exists()
    # the same notebook, fixed, passes; `#| notest` cells are skipped too
    cells[4].source = 'y = x + 1\nassert y == 2'
    cells.insert(5, v4.new_code_cell('#| notest\nraise RuntimeError("notest cells are skipped")'))
    nbformat.write(nb, fn)
    run_notebook(fn)
    assert (tmp_path/'after.txt').read_text() == 'ran'
