"""The notebooks open and run in Jupyter with this environment's kernel.

- every notebook under nbs/ (any folder; names starting with `_` or `.`, and `.ipynb_checkpoints`, skipped) names the
  `python3` kernel in `metadata.kernelspec`, so Jupyter (`make lab`) starts it without asking;
- `python3` is this virtual environment's ipykernel (not a user-level kernel pointing at another Python);
- one real notebook (the core one: no `#| slow` cells, no weights, no data) runs start to end under
  `jupyter nbconvert --execute` through that kernel, and the executed copy has outputs and no error.

ipykernel and jupyterlab come with the `dev` extras. Without them the Jupyter tests are skipped, unless
`CODA_REQUIRE_JUPYTER=1` is set (as `make test` can do), in which case they fail.
"""
from __future__ import annotations
import importlib.util, json, os, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
VENV_BIN = Path(sys.executable).parent
JUPYTER = VENV_BIN/'jupyter'
CORE_CANDIDATES = ['api/00_core.ipynb', '00_core.ipynb']  # the new layout first; the old flat one while it moves
KERNEL = 'python3'
INSTALL_HINT = f'install the dev extras (`{VENV_BIN/"pip"} install -e ".[dev]"`, or `make setup`): ipykernel and jupyterlab'

def notebooks() -> list[Path]:
    return sorted(p for p in NBS.rglob('*.ipynb') if not any(q.startswith(('_', '.')) for q in p.relative_to(NBS).parts))

def jupyter_missing() -> str | None:
    "Why the Jupyter tests cannot run here, or None."
    missing = [m for m in ['ipykernel', 'jupyterlab', 'nbconvert'] if importlib.util.find_spec(m) is None]
    if missing: return f'{", ".join(missing)} not installed in {sys.prefix}: {INSTALL_HINT}'
    if not JUPYTER.is_file(): return f'{JUPYTER} not found: {INSTALL_HINT}'
    return None

@pytest.fixture
def jupyter():
    why = jupyter_missing()
    if why is None: return JUPYTER
    if os.environ.get('CODA_REQUIRE_JUPYTER') == '1': pytest.fail(f'CODA_REQUIRE_JUPYTER=1 but {why}', pytrace=False)
    pytest.skip(why)

def test_kernelspec_on_every_notebook():
    nbs = notebooks()
    assert nbs, f'no notebooks found under {NBS}'
    bad = []
    for p in nbs:
        ks = json.loads(p.read_text()).get('metadata', {}).get('kernelspec')
        if not isinstance(ks, dict) or ks.get('name') != KERNEL:
            bad.append(f'{p.relative_to(ROOT)}: kernelspec {ks!r}')
    assert not bad, (f'notebooks without metadata.kernelspec.name == "{KERNEL}" (set {{"display_name": "Python 3 (ipykernel)", '
                     f'"language": "python", "name": "{KERNEL}"}}):\n' + '\n'.join(bad))

def test_jupyter_required_when_asked():
    "With CODA_REQUIRE_JUPYTER=1, a missing ipykernel/jupyterlab is a failure, not a skip."
    why = jupyter_missing()
    if why and os.environ.get('CODA_REQUIRE_JUPYTER') == '1': pytest.fail(f'CODA_REQUIRE_JUPYTER=1 but {why}', pytrace=False)
    if why: pytest.skip(why)

def test_python3_kernel_is_this_venv(jupyter):
    r = subprocess.run([str(jupyter), 'kernelspec', 'list', '--json'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    specs = json.loads(r.stdout)['kernelspecs']
    assert KERNEL in specs, f'no "{KERNEL}" kernel: {sorted(specs)}'
    argv0 = specs[KERNEL]['spec']['argv'][0]
    # jupyter_client runs a spec's bare `python`/`python3` with the Python that starts the kernel: this venv's
    ok = argv0 in ('python', 'python3', f'python{sys.version_info[0]}.{sys.version_info[1]}') or \
         Path(argv0).parent.resolve() == VENV_BIN.resolve()
    assert ok, (f'the "{KERNEL}" kernel ({specs[KERNEL]["resource_dir"]}) runs {argv0}, not this environment\'s Python '
                f'({sys.executable}); remove that kernelspec or run `{VENV_BIN/"python"} -m ipykernel install --user`')

def test_core_notebook_executes(jupyter, tmp_path):
    rel = next((c for c in CORE_CANDIDATES if (NBS/c).exists()), None)
    assert rel, f'none of {CORE_CANDIDATES} under {NBS}'
    src = NBS/rel
    nb = json.loads(src.read_text())
    slow = [i for i, c in enumerate(nb['cells'])
            if c['cell_type'] == 'code' and re.search(r'^\s*#\|\s*slow\b', ''.join(c['source']), re.M)]
    assert not slow, f'{rel} has #| slow cells ({slow}), which nbconvert would run: execute a notebook without them'
    env = {k: v for k, v in os.environ.items() if k != 'IN_TEST'}
    env.update(OMP_NUM_THREADS=env.get('OMP_NUM_THREADS', '1'), PYDEVD_DISABLE_FILE_VALIDATION='1')
    cmd = [str(jupyter), 'nbconvert', '--to', 'notebook', '--execute', f'--ExecutePreprocessor.kernel_name={KERNEL}',
           '--ExecutePreprocessor.timeout=600', '--output-dir', str(tmp_path), '--output', 'executed', str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=src.parent, env=env)
    assert r.returncode == 0, f'{" ".join(cmd)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}'
    out = tmp_path/'executed.ipynb'
    assert out.is_file(), (r.stdout, r.stderr, sorted(tmp_path.iterdir()))
    ran = json.loads(out.read_text())
    assert ran['metadata'].get('kernelspec', {}).get('name') == KERNEL
    code = [c for c in ran['cells'] if c['cell_type'] == 'code' and ''.join(c['source']).strip()]
    assert code and all(c.get('execution_count') for c in code), 'not every code cell ran'
    outputs = [o for c in code for o in c.get('outputs', [])]
    assert outputs, f'{rel} ran but produced no output'
    errors = [f'{o.get("ename")}: {o.get("evalue")}' for o in outputs if o['output_type'] == 'error']
    assert not errors, f'{rel} raised under Jupyter: {errors}'
