"""The repository stands alone: a clone with nothing beside it runs the notebooks that read the golden test data and
the packaged TAEF2 weights, and no file points outside the repository for them."""
from __future__ import annotations
import os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().relative_to(ROOT).as_posix()
# every notebook that reads tests/data/golden, the two that say where test data and weights are found, and one more
# that needs the packaged TAEF2 (23_tae checks it against its golden reference)
NOTEBOOKS = ['api/00_core', 'api/01_weights', 'api/21_autoencoder_kl', 'api/22_mar_ldm', 'api/23_tae', 'api/26_video_vae',
             'api/34_multiscale', 'api/35_tiled_attention']
FORBIDDEN = ['../shared', 'shared_dir', 'CODA_SHARED_DIR', 'shared/weights', 'shared/golden']

def repo_files() -> list[str]:
    "What a clone holds: tracked files plus untracked ones that git does not ignore."
    out = subprocess.run(['git', 'ls-files', '-z', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True, check=True)
    return sorted({f for f in out.stdout.decode().split('\0') if f and (ROOT/f).is_file()})

RUNNER = r'''
import os, sys
from pathlib import Path
import nbdev.test as nbt
import coda_nb
from coda_nb.core import REPO_ROOT, golden_dir
from coda_nb.weights import find_weights, ASSETS
repo = Path.cwd().resolve()
# the copy's package, test data and weights are the ones in use, not the original checkout's
assert Path(coda_nb.__file__).resolve().is_relative_to(repo), coda_nb.__file__
assert REPO_ROOT == repo and golden_dir() == repo/'tests'/'data'/'golden', (REPO_ROOT, repo)
assert find_weights('taef2') == ASSETS/'taef2' == repo/'coda_nb'/'assets'/'taef2', find_weights('taef2')
failed = []
for name in sys.argv[1:]:
    nb = repo/'nbs'/f'{name}.ipynb'
    ok, secs = nbt.test_nb(nb, skip_flags=['slow', 'notest'], basepath=repo)
    print(f'{name}: {"ok" if ok else "FAILED"} ({secs:.1f}s)', flush=True)
    if not ok: failed.append(name)
sys.exit(1 if failed else 0)
'''

def test_clone_runs_alone(tmp_path):
    repo = tmp_path/'xx'/'repo'
    for f in repo_files():
        (repo/f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT/f, repo/f)
    assert not (repo.parent/'shared').exists() and (repo/'tests'/'data'/'golden').is_dir()
    assert (repo/'coda_nb'/'assets'/'taef2'/'taef2_encoder.pth').is_file()
    env = {k: v for k, v in os.environ.items() if not k.startswith('CODA_')}
    # the copy's package first (the venv's editable install points at the original checkout); one thread
    env.update(PYTHONPATH=str(repo), OMP_NUM_THREADS='1', PYTHONDONTWRITEBYTECODE='1')
    r = subprocess.run([sys.executable, '-c', RUNNER, *NOTEBOOKS], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f'notebooks failed in a standalone copy:\n{r.stdout}\n{r.stderr[-6000:]}'
    for name in NOTEBOOKS: assert f'{name}: ok' in r.stdout, r.stdout

def test_nothing_points_outside():
    bad = []
    for f in repo_files():
        if f in (HERE, 'tests/test_public_text.py'): continue    # the checkers' own test strings
        try: text = (ROOT/f).read_text(encoding='utf-8')
        except UnicodeDecodeError: continue           # binary files (weights, tensors, images)
        for i, line in enumerate(text.splitlines(), 1):
            bad += [f'{f}:{i}: {line.strip()[:160]}' for s in FORBIDDEN if s in line]
    assert not bad, 'files that point at a folder outside the repository:\n' + '\n'.join(bad)
