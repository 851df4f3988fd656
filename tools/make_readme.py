"""Write README.md from nbs/index.ipynb without Quarto.

nbdev's own processing (directives, `show_doc`, the title cell) is applied with `nbdev.serve`'s processor, then the
processed notebook goes through nbconvert's markdown exporter. `--check` fails when README.md is out of date.
"""
import sys, tempfile, shutil, re, posixpath
from pathlib import Path
from urllib.parse import urlsplit
import nbformat
from nbconvert import MarkdownExporter
import yaml
from fastcore.xtras import working_directory
from fastcore.nbio import read_nb, write_nb
from nbdev.processors import FilterDefaults

ROOT = Path(__file__).resolve().parents[1]
_re_md_link = re.compile(r'(!?\[[^\]\n]*\]\()([^)\s]+)((?:\s+"[^"]*")?\))')   # [text](target "title"), ![alt](target)
_re_html_link = re.compile(r'((?:src|href)=")([^"]+)(")')
_re_fence = re.compile(r'^(```|~~~).*?^\1[^\n]*$', re.S | re.M)

def from_root(target: str, base: str = 'nbs') -> str:
    "A link relative to `base` (the notebooks' folder), rewritten to resolve from the repository root."
    u = urlsplit(target)
    if u.scheme or u.netloc or target.startswith(('#', '/')) or not u.path: return target
    return posixpath.normpath(posixpath.join(base, u.path)) + (f'#{u.fragment}' if u.fragment else '')

def root_links(md: str) -> str:
    "Rewrite the relative links and images of markdown `md` (outside fenced code) to resolve from the repository root."
    def fix(text):
        text = _re_md_link.sub(lambda m: m[1] + from_root(m[2]) + m[3], text)
        return _re_html_link.sub(lambda m: m[1] + from_root(m[2]) + m[3], text)
    out, last = [], 0
    for m in _re_fence.finditer(md):
        out += [fix(md[last:m.start()]), m[0]]; last = m.end()
    return ''.join(out + [fix(md[last:])])

def render_readme() -> str:
    src = ROOT/'nbs'/'index.ipynb'
    with tempfile.TemporaryDirectory() as d, working_directory(ROOT/'nbs'):
        nb = read_nb(src); FilterDefaults()(nb)
        tmp = Path(d)/'index.ipynb'; write_nb(nb, tmp)
        nb = nbformat.read(tmp, as_version=4)
    fm = {}
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.lstrip().startswith('---'):
            fm.update(yaml.safe_load(c.source.strip().strip('-')) or {})
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'raw' and c.source.lstrip().startswith('---'))]
    for c in nb.cells:   # Quarto would apply these cell options; here: `echo: false` hides the code, other directives go
        if c.cell_type != 'code': continue
        lines = c.source.splitlines()
        if any(re.match(r'#\|\s*echo:\s*false', l) for l in lines): c.source = ''
        else: c.source = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
    nb.cells = [c for c in nb.cells if c.source or c.get('outputs')]
    nb.metadata['language_info'] = dict(name='python')
    exp = MarkdownExporter(exclude_input=False)
    body, _ = exp.from_notebook_node(nb)
    body = re.sub(r'```python\n\s*```\n?', '', body)                               # empty (hidden) inputs
    body = root_links(body)                                                       # links from the repo root, not nbs/
    head = f"# {fm.get('title', 'coda_nb')}\n\n"
    if fm.get('description'): head += f"> {fm['description']}\n\n"
    return re.sub(r'\n{3,}', '\n\n', head + body).strip() + '\n'

if __name__ == '__main__':
    text, out = render_readme(), ROOT/'README.md'
    if '--check' in sys.argv:
        if not out.exists() or out.read_text() != text:
            sys.exit('README.md is not what nbs/index.ipynb produces: run `make readme` and commit it.')
        print('README.md is in sync with nbs/index.ipynb')
    else:
        out.write_text(text); print(f'wrote {out}')
