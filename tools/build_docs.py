"""Build the HTML docs site from the notebooks without Quarto: `python tools/build_docs.py [--out _docs]`.

1. nbdev's own doc processing (`nbdev.processors.FilterDefaults`: front matter, directives, hidden cells, `show_doc`,
   doc links) is applied to every notebook, as `nbdev-docs` does before it hands the notebooks to Quarto. Notebooks are
   not run: saved outputs are kept. Only what nbdev needs to render `show_doc` is executed (exported cells, cells made
   only of imports, `show_doc` calls), never the notebook's other cells.
2. Each processed notebook goes through nbconvert's `HTMLExporter` (images embedded as data URIs), the remaining Quarto
   cell options (`echo`, `output`, `include`, `code-fold`) are applied, heading ids follow Quarto's scheme (so nbdev's
   links `core.html#exists` land), and links to notebooks or to the published site become relative links. Notebooks in
   subfolders (`api/`, `paper/coda/`, ...) give pages at the mirrored paths (`api/core.html`), as Quarto writes them.
   Saved ipywidgets outputs (only a widget id) become a visible note pointing at Jupyter and at the static figure.
3. Every page gets the same header and sidebar: index first, then the top-level notebooks, then one section per
   folder (`SECTION_TITLES`: API, Paper: CODA, Paper: LatentBit, Tutorials), in nbdev's order.
4. TeX (`$...$`, `$$...$$`, `\\(...\\)`, `\\[...\\]`) is typeset in the browser by KaTeX, copied into the site
   (`katex/`): no CDN, the site works offline. KaTeX comes from npm, pinned (`KATEX_VERSION`), into
   `.cache/docs-js` (`KATEX_INSTALL`, which `make docs` runs); `--katex DIR` points at another KaTeX `dist` folder.

`nbs/sidebar.yml` (read by Quarto through `_quarto.yml`'s `metadata-files`) is rewritten with the same grouped sidebar
unless `--no-sidebar` is given (set `custom_sidebar = true` in pyproject.toml so that nbdev's own `nbdev_sidebar`
keeps it rather than replacing it with bare folder names). Output is deterministic: building twice gives identical
files.
"""
from __future__ import annotations
import argparse, base64, contextlib, html, io, json, mimetypes, os, posixpath, re, shutil, sys, warnings
from pathlib import Path
from urllib.parse import urlsplit, urlencode, parse_qsl, quote, unquote

import ast, yaml, nbformat
from bs4 import BeautifulSoup
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor
from pygments.formatters import HtmlFormatter
from fastcore.nbio import read_nb, nb2str
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.processors import FilterDefaults, exec_show_docs, cell_lang, _show_docs
from nbdev.quarto import nbdev_sidebar

ROOT = Path(__file__).resolve().parents[1]
KATEX_VERSION = '0.19.1'
KATEX_PREFIX = ROOT/'.cache'/'docs-js'
KATEX_DIST = KATEX_PREFIX/'node_modules'/'katex'/'dist'
KATEX_INSTALL = f'npm install --prefix .cache/docs-js --no-save --no-audit --no-fund --loglevel=error katex@{KATEX_VERSION}'
KATEX_FILES = ['katex.min.js', 'katex.min.css', 'contrib/auto-render.min.js', 'fonts']
# Sidebar section titles by folder (relative to nbs/); other folders get their names, title-cased, joined by ': '.
SECTION_TITLES = {'api': 'API', 'paper': 'Paper', 'paper/coda': 'Paper: CODA', 'paper/latentbit': 'Paper: LatentBit', 'tutorials': 'Tutorials'}
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'
WIDGET_NOTE = ('<div class="widget-fallback" role="note"><strong>Interactive widget:</strong> open this notebook in '
               'Jupyter (<code>make lab</code>) to use it; the static figure below shows the same view.</div>')

# ---------------------------------------------------------------------------------------------------------------------
# 1. nbdev processing
_exec_dirs = {'export', 'exports', 'exporti', 'exec_doc'}

def _needed_for_docs(cell) -> bool:
    "Exported cells, import-only cells and `show_doc` calls: what `show_doc` needs, and nothing that runs the notebook."
    if cell.cell_type != 'code' or not cell.source or cell_lang(cell) != 'python': return False
    if str(cell.directives_.get('eval', '')).lower() == 'false': return False
    if cell.directives_.keys() & _exec_dirs: return True
    trees = cell.parsed_()
    if not trees: return False
    if all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees): return True
    return bool(_show_docs(trees))

class exec_doc_cells(exec_show_docs):
    "nbdev's `exec_show_docs`, restricted to `_needed_for_docs` cells; failures are collected instead of raised."
    errors: list = []
    def __call__(self, cell):
        if not self.nb.has_docs_ or not hasattr(self, 'k') or not _needed_for_docs(cell): return
        if str(getattr(self.nb, 'frontmatter_', {}).get('skip_showdoc', '')).lower() in ('true', '1', 'yes'): return
        self.k.cell(cell)
        if (e := self.k.exc) is not None:
            exec_doc_cells.errors.append(f'cell {cell.idx_}:\n{cell.source}\n{type(e).__name__}: {e}')
            cell.outputs = []
            self.k.exc = None

class DocsFilter(FilterDefaults):
    def base_procs(self): return [exec_doc_cells if p is exec_show_docs else p for p in super().base_procs()]

def process_nb(path: Path):
    "Apply nbdev's doc processing to the notebook at `path`; returns (nbformat notebook, errors)."
    exec_doc_cells.errors = []
    old = os.environ.get('IN_TEST')
    os.environ['IN_TEST'] = '1'  # as `nbdev.serve_drv` does
    try:
        with working_directory(path.parent), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')
            nb = read_nb(path); DocsFilter()(nb)
    finally:
        if old is None: os.environ.pop('IN_TEST', None)
        else: os.environ['IN_TEST'] = old
    for c in nb.cells: c.pop('has_sd', None)
    return nbformat.reads(nb2str(nb), as_version=4), list(exec_doc_cells.errors)

# ---------------------------------------------------------------------------------------------------------------------
# 2. notebook -> HTML
_re_dir = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
_re_qattr_link = re.compile(r'\[([^\]]*)\]\(([^)\s]+)\)\{([^}]*)\}')  # Quarto's [text](url){attrs}
_re_fence_open = re.compile(r'^:::+\s*\{([^}]*)\}\s*$', re.M)
_re_fence_close = re.compile(r'^:::+\s*$', re.M)

def _pop_directives(src: str):
    "Leading `#| key: value` lines of a code cell -> (dict, remaining source)."
    lines, d = src.splitlines(), {}
    while lines and (m := _re_dir.match(lines[0])):
        d[m.group(1)] = m.group(2).strip('"\''); lines.pop(0)
    return d, '\n'.join(lines)

_QATTR = 'quarto-attrs:'

def _qattr_link(m):
    "Keep the link markdown (inline HTML would be split by the markdown renderer); the attributes ride in the title."
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', m.group(3)))
    return f'[{m.group(1)}]({m.group(2)} "{_QATTR}{urlencode(sorted(attrs.items()), quote_via=quote)}")'

def _apply_qattrs(soup):
    for a in soup.find_all('a', title=True):
        if a['title'].startswith(_QATTR):
            attrs = dict(parse_qsl(a['title'][len(_QATTR):])); del a['title']
            for k, v in attrs.items(): a[k] = v
            if a.get('target') == '_blank': a['rel'] = 'noopener'

def _inline_md(text: str) -> str:
    "Escaped text with `code` spans: enough for titles and one-line descriptions."
    return re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(str(text)))

def _quarto_md(md: str) -> str:
    "The bits of Quarto markdown nbdev emits that plain markdown lacks: link attributes and fenced divs."
    md = _re_qattr_link.sub(_qattr_link, md)
    def _open(m):
        cls = ' '.join(c[1:] for c in m.group(1).split() if c.startswith('.'))
        return f'<div class="{html.escape(cls)}">\n'
    md = _re_fence_open.sub(_open, md)
    return _re_fence_close.sub('\n</div>', md)

def _widget_fallback(o):
    "A saved ipywidgets output holds only a widget id (and a text repr): show a note instead."
    if WIDGET_MIME not in o.get('data', {}): return o
    return nbformat.v4.new_output('display_data', data={'text/html': WIDGET_NOTE})

def prepare_cells(nb):
    "Front matter out of the notebook, Quarto cell options turned into tags nbconvert understands. Returns front matter."
    fm, cells = {}, []
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.lstrip().startswith('---'):
            fm.update(yaml.safe_load(c.source.strip().strip('-')) or {}); continue
        if c.cell_type == 'markdown':
            c.source = _quarto_md(c.source)
            if not c.source.strip() or c.source.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
        if c.cell_type == 'code':
            d, c.source = _pop_directives(c.source)
            tags = []
            if str(d.get('include', '')).lower() == 'false': continue
            if str(d.get('echo', '')).lower() == 'false' or not c.source.strip(): tags.append('docs-no-input')
            if str(d.get('output', '')).lower() == 'false': tags.append('docs-no-output')
            if d.get('code-fold') in ('show', 'true', 'True'): tags.append('docs-fold')
            if re.match(r'\s*show_doc\(', c.source): tags.append('docs-showdoc')
            c.outputs = [_widget_fallback(o) for o in c.get('outputs', [])]
            for o in c.get('outputs', []):
                md = o.get('data', {}).get('text/markdown')
                if md is not None: o['data']['text/markdown'] = _quarto_md(''.join(md) if isinstance(md, list) else md)
            if not c.source.strip() and not c.get('outputs'): continue
            c.metadata = {'tags': tags}
            c.execution_count = None
            for o in c.get('outputs', []):
                if 'execution_count' in o: o['execution_count'] = None
        else: c.metadata = {}
        cells.append(c)
    for i, c in enumerate(cells): c['id'] = f'c{i}'  # nbdev inserts cells with random ids
    nb.cells, nb.metadata = cells, {'language_info': {'name': 'python'}}
    return fm

def make_exporter():
    e = HTMLExporter(template_name='basic', embed_images=True, exclude_input_prompt=True, exclude_output_prompt=True)
    e.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'docs-no-input'},
                                                  remove_all_outputs_tags={'docs-no-output'}), enabled=True)
    return e

def _slug(text: str) -> str:
    "Pandoc's (so Quarto's) identifier for a heading."
    s = re.sub(r'[^\w\s.-]', '', text.strip().lower(), flags=re.UNICODE)
    s = re.sub(r'\s+', '-', s)
    s = re.sub(r'^[^a-z_]+', '', s)
    return s or 'section'

def _page_name(src: Path, fm: dict) -> str:
    "Output file name, as Quarto would write it: nbdev's `output-file`, else the notebook's name."
    return fm.get('output-file') or src.with_suffix('.html').name

# ---------------------------------------------------------------------------------------------------------------------
# 3. site
SITE_CSS = """
:root { --sidebar-w: 16rem; --accent: #2780e3; }
* { box-sizing: border-box; }
body { margin: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.55; color: #212529; }
a { color: var(--accent); }
.site-header { background: var(--accent); padding: .6rem 1.2rem; }
.site-header a { color: #fff; font-weight: 600; font-size: 1.15rem; text-decoration: none; }
.layout { display: flex; align-items: flex-start; }
nav.sidebar { width: var(--sidebar-w); flex: none; position: sticky; top: 0; max-height: 100vh; overflow-y: auto;
  padding: 1rem .8rem; border-right: 1px solid #dee2e6; font-size: .93rem; }
nav.sidebar ul { list-style: none; margin: 0; padding: 0; }
nav.sidebar li a { display: block; padding: .2rem .5rem; border-radius: .25rem; text-decoration: none; color: #343a40; }
nav.sidebar li a.active { background: #e7f1fc; color: var(--accent); font-weight: 600; }
nav.sidebar .section { margin-top: .8rem; font-weight: 600; color: #6c757d; padding: .2rem .5rem; font-size: .85rem;
  text-transform: uppercase; letter-spacing: .03em; }
nav.sidebar .sidebar-section ul { margin-left: .4rem; }
.widget-fallback { margin: .5rem 0 .5rem .8rem; padding: .6rem .9rem; border-left: 3px solid var(--accent);
  background: #f1f6fd; border-radius: .25rem; font-size: .93rem; }
.katex-display { overflow-x: auto; overflow-y: hidden; padding: .2rem 0; }
main.content { flex: 1; min-width: 0; max-width: 60rem; padding: 1rem 2rem 4rem; }
.page-header h1 { margin-bottom: .2rem; }
.anchor-link { visibility: hidden; margin-left: .3rem; text-decoration: none; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link, h4:hover .anchor-link { visibility: visible; }
.prompt { display: none; }
.cell { margin-bottom: 1rem; }
.input_area pre, .output_area pre, .rendered_html pre { margin: 0; padding: .6rem .8rem; overflow-x: auto; font-size: .87rem; }
.input_area { background: #f8f9fa; border-radius: .25rem; }
.output_area pre { border-left: 2px solid lightsalmon; margin-left: .8rem; }
.output_stderr pre { background: #fdf0f0; }
.output_area img, .rendered_html img { max-width: 100%; height: auto; }
.rendered_html table { border-collapse: collapse; margin: .5rem 0; }
.rendered_html th, .rendered_html td { border: 1px solid #dee2e6; padding: .25rem .6rem; }
.rendered_html code { background: #f1f3f5; padding: 0 .2rem; border-radius: .2rem; }
.rendered_html pre code { background: none; padding: 0; }
.celltag_docs-showdoc .output_area pre { border-left: none; margin-left: 0; background: #f8f9fa; }
details.code-fold > summary { cursor: pointer; color: #6c757d; font-size: .9rem; }
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<meta name="description" content="{description}">
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{base}site.css">
<link rel="stylesheet" href="{base}katex/katex.min.css">
{styles}</head>
<body>
<header class="site-header"><a href="{base}index.html">{site}</a></header>
<div class="layout">
<nav class="sidebar" aria-label="Pages">
{nav}
</nav>
<main class="content">
<header class="page-header">
<h1 class="title">{h1}</h1>
{desc}</header>
{body}
</main>
</div>
<script src="{base}katex/katex.min.js"></script>
<script src="{base}katex/contrib/auto-render.min.js"></script>
<script src="{base}math.js"></script>
</body>
</html>
"""

# KaTeX's auto-render over the page body; <pre> and <code> (code cells, text outputs, inline code) are left alone.
MATH_JS = r"""renderMathInElement(document.querySelector('main.content') || document.body, {
  delimiters: [
    {left: '$$', right: '$$', display: true}, {left: '\\[', right: '\\]', display: true},
    {left: '\\begin{equation}', right: '\\end{equation}', display: true},
    {left: '\\begin{align}', right: '\\end{align}', display: true},
    {left: '\\begin{gather}', right: '\\end{gather}', display: true},
    {left: '$', right: '$', display: false}, {left: '\\(', right: '\\)', display: false}],
  ignoredTags: ['script', 'noscript', 'style', 'textarea', 'pre', 'code', 'option'],
  throwOnError: false
});
"""

class MissingAsset(RuntimeError): pass

def katex_dir(path=None) -> Path:
    "The KaTeX `dist` folder to copy into the site: `path`, else the pinned npm copy in `.cache/docs-js`."
    d = Path(path) if path else KATEX_DIST
    how = (f'Run `{KATEX_INSTALL}` at the repository root (`make docs` does it)' if not path
           else f'Point --katex (or $CODA_KATEX_DIR) at a KaTeX `dist` folder, or drop it and run `{KATEX_INSTALL}`')
    missing = [f for f in KATEX_FILES if not (d/f).exists()]
    if missing:
        raise MissingAsset(f'KaTeX, which renders the math in the docs, is missing: {d/missing[0]} not found. '
                           f'{how}.')
    if not path:
        try: v = json.loads((d.parent/'package.json').read_text()).get('version')
        except (OSError, ValueError): v = None
        if v != KATEX_VERSION:
            raise MissingAsset(f'KaTeX {KATEX_VERSION} is needed for the docs but {d.parent} holds {v or "an unknown version"}. '
                               f'{how}.')
    return d

def copy_katex(src: Path, out: Path):
    dst = out/'katex'
    for f in KATEX_FILES:
        if (src/f).is_dir(): shutil.copytree(src/f, dst/f)
        else: (dst/f).parent.mkdir(parents=True, exist_ok=True); shutil.copyfile(src/f, dst/f)
    (out/'math.js').write_text(MATH_JS)

def sidebar_order(nbs: Path) -> list[Path]:
    "Notebooks in nbdev's sidebar order (index first, then the top-level notebooks, then each folder's), from `nbdev_sidebar`'s own listing."
    f = io.StringIO()
    with working_directory(nbs), contextlib.redirect_stdout(f): nbdev_sidebar.__wrapped__(path=nbs, printit=True, force=True)
    res = []
    def _walk(items):
        for it in items or []:
            if isinstance(it, str): res.append(nbs/it)
            elif isinstance(it, dict):
                if isinstance(it.get('href'), str): res.append(nbs/it['href'])
                _walk(it.get('contents'))
    _walk(((yaml.safe_load(f.getvalue()) or {}).get('website') or {}).get('sidebar', {}).get('contents'))
    return [p for p in res if p.suffix == '.ipynb']

def find_nbs(nbs: Path) -> list[Path]:
    "The notebooks that get a page, in sidebar order (those nbdev's listing misses at the end, sorted)."
    nbs = Path(nbs).resolve()
    with working_directory(nbs):
        from nbdev.doclinks import nbglob
        found = {Path(p).resolve() for p in nbglob(nbs, skip_folder_re=r'(?:^[_.]|^www\$)')}
    order = [p.resolve() for p in sidebar_order(nbs)]
    srcs = list(dict.fromkeys(p for p in order if p in found))
    srcs += sorted(found - set(srcs))
    return [p for e in site_tree([p.relative_to(nbs).as_posix() for p in srcs]) for p in
            ([nbs/e] if isinstance(e, str) else [nbs/r for r in e[1]])]

def section_title(folder: str) -> str:
    "Sidebar title of a notebook folder (`api` -> API, `paper/coda` -> Paper: CODA)."
    if folder in SECTION_TITLES: return SECTION_TITLES[folder]
    parts = folder.split('/')
    for i in range(len(parts) - 1, 0, -1):
        head = '/'.join(parts[:i])
        if head in SECTION_TITLES: return ': '.join([SECTION_TITLES[head]] + [_folder_name(q) for q in parts[i:]])
    return ': '.join(_folder_name(q) for q in parts)

def _folder_name(q: str) -> str: return re.sub(r'^\d+_', '', q).replace('_', ' ').title()

def site_tree(rels: list[str]) -> list:
    "Relative notebook paths -> sidebar entries: top-level notebooks as paths, each folder as (title, [paths])."
    tree, sections = [], {}
    for r in rels:
        folder = posixpath.dirname(r)
        if not folder: tree.append(r); continue
        if folder not in sections:
            sections[folder] = []; tree.append((section_title(folder), sections[folder]))
        sections[folder].append(r)
    return tree

def sidebar_yml(nbs: Path) -> dict:
    "The sidebar Quarto reads from `nbs/sidebar.yml`: the same grouping as the built site's."
    nbs = Path(nbs).resolve()
    rels = [p.relative_to(nbs).as_posix() for p in find_nbs(nbs)]
    contents = [e if isinstance(e, str) else {'section': e[0], 'contents': list(e[1])} for e in site_tree(rels)]
    return {'website': {'sidebar': {'contents': contents}}}

class _IndentDumper(yaml.SafeDumper):
    "Lists indented under their key, as nbdev writes sidebar.yml."
    def increase_indent(self, flow=False, indentless=False): return super().increase_indent(flow, False)

def refresh_sidebar_yml(nbs: Path):
    "Write `nbs/sidebar.yml` (only when its content changes)."
    f = Path(nbs)/'sidebar.yml'
    text = yaml.dump(sidebar_yml(nbs), Dumper=_IndentDumper, sort_keys=False, allow_unicode=True)
    if not f.exists() or f.read_text() != text: f.write_text(text)

def _site_url(nbs: Path) -> str:
    try:
        with working_directory(nbs): cfg = get_config()
        host, base = str(cfg.get('doc_host', '') or ''), str(cfg.get('doc_baseurl', '') or '')
        if not host: return ''
        return host.rstrip('/') + '/' + base.strip('/') + ('/' if base.strip('/') else '')
    except Exception: return ''

def _site_title(nbs: Path) -> str:
    try:
        with working_directory(nbs): cfg = get_config()
        return cfg.get('title') or cfg.get('lib_name') or 'Docs'
    except Exception: return 'Docs'

def _fix_links(soup, page: str, pages: dict, site_url: str, ids: dict):
    """Links to notebooks / nbdev `.html.md` pages / the published site -> relative links to the built pages.
    nbdev links every backticked `Class.method` to `#class.method`; when that method has no doc of its own, the link
    goes to its class's doc instead of nowhere."""
    here = posixpath.dirname(page)
    for a in soup.find_all('a', href=True):
        href = a['href']
        if site_url and href.startswith(site_url): href = posixpath.relpath(href[len(site_url):] or 'index.html', here or '.')
        u = urlsplit(href)
        if u.scheme or u.netloc or href.startswith(('/', 'mailto:')): a['href'] = href; continue
        target = page
        if u.path:
            path = u.path[:-3] if u.path.endswith('.html.md') else u.path
            target = posixpath.normpath(posixpath.join(here, path))
            if target.endswith(('.ipynb', '.qmd', '.md')): target = pages.get(target, posixpath.splitext(target)[0] + '.html')
        frag = u.fragment
        if frag and target in ids:
            if frag not in ids[target] and _slug(frag) in ids[target]: frag = _slug(frag)
            while frag not in ids[target] and '.' in frag and frag.rsplit('.', 1)[0] in ids[target] | {''}:
                frag = frag.rsplit('.', 1)[0]
        a['href'] = (posixpath.relpath(target, here or '.') if u.path else '') + (f'#{frag}' if frag else '')

def _fix_headings(soup):
    "Quarto-style heading ids (lowercase, dashes), unique per page; the `¶` anchors follow."
    seen, renamed = {}, {}
    for h in soup.find_all(re.compile(r'^h[1-6]$')):
        for a in h.find_all('a', class_='anchor-link'): a.extract()
        base = _slug(h.get_text()); n = seen.get(base, 0); seen[base] = n + 1
        new = base if n == 0 else f'{base}-{n}'
        if h.get('id'): renamed['#' + h['id']] = '#' + new
        h['id'] = new
        link = soup.new_tag('a', attrs={'class': 'anchor-link', 'href': '#' + new, 'aria-label': 'link to this section'})
        link.string = '¶'
        h.append(link)
    for a in soup.find_all('a', href=True):
        if a['href'] in renamed and 'anchor-link' not in (a.get('class') or []): a['href'] = renamed[a['href']]

def _embed_local_images(soup, src_dir: Path, nbs: Path):
    """Images nbconvert left as paths (it embeds only those below the notebook's own folder, not `../img/x.png`):
    embed those inside the notebook folder `nbs` too."""
    for img in soup.find_all('img', src=True):
        u = urlsplit(img['src'])
        if u.scheme or u.netloc or not u.path or img['src'].startswith('/'): continue
        f = (src_dir/unquote(u.path)).resolve()
        if not f.is_file() or not f.is_relative_to(nbs): continue
        mime = mimetypes.guess_type(f.name)[0] or 'application/octet-stream'
        img['src'] = f'data:{mime};base64,{base64.b64encode(f.read_bytes()).decode()}'

def _fold_code(soup):
    for cell in soup.select('.celltag_docs-fold'):
        inp = cell.select_one('.input')
        if inp is None: continue
        det = soup.new_tag('details', attrs={'class': 'code-fold', 'open': ''})
        summ = soup.new_tag('summary'); summ.string = 'Exported source'
        inp.wrap(det); det.insert(0, summ)

def _nav_html(tree, by_rel: dict, page: str) -> str:
    here = posixpath.dirname(page)
    def _li(e):
        href = posixpath.relpath(e['page'], here or '.')
        cls = ' class="active" aria-current="page"' if e['page'] == page else ''
        return f'<li><a href="{html.escape(href)}"{cls}>{_inline_md(e["title"])}</a></li>'
    items = []
    for t in tree:
        if isinstance(t, str): items.append(_li(by_rel[t])); continue
        title, rels = t
        items.append(f'<li class="sidebar-section"><div class="section">{html.escape(title)}</div>\n<ul>\n'
                     + '\n'.join(_li(by_rel[r]) for r in rels) + '\n</ul></li>')
    return '<ul>\n' + '\n'.join(items) + '\n</ul>'

def build(nbs: Path = ROOT/'nbs', out: Path = ROOT/'_docs', refresh_sidebar: bool = True, extra_head: str = '',
          katex: Path | None = None, log=print, warn=None) -> dict:
    "Build the site from the notebooks in `nbs` into `out`. Returns {'pages': [...], 'errors': {...}, 'warnings': [...]}."
    nbs, out = Path(nbs).resolve(), Path(out).resolve()
    kdir = katex_dir(katex)  # fail before the (slow) notebook processing
    if refresh_sidebar: refresh_sidebar_yml(nbs)
    srcs = find_nbs(nbs)
    site_url, site = _site_url(nbs), _site_title(nbs)
    processed, errors, warns = [], {}, []
    for src in srcs:
        nb, errs = process_nb(src)
        if errs: errors[str(src.relative_to(nbs))] = errs
        fm = prepare_cells(nb)
        rel = src.relative_to(nbs)
        page = posixpath.join(*rel.parent.parts, _page_name(src, fm)) if rel.parent.parts else _page_name(src, fm)
        processed.append(dict(src=src, rel=rel.as_posix(), nb=nb, fm=fm, page=page,
                              title=str(fm.get('title') or src.stem)))
    pages = {p['rel']: p['page'] for p in processed}
    by_rel = {p['rel']: p for p in processed}
    tree = site_tree([p['rel'] for p in processed])
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    css = SITE_CSS + '\n' + HtmlFormatter(style='default').get_style_defs('.highlight') + '\n'
    (out/'site.css').write_text(css)
    copy_katex(kdir, out)
    styles = ''
    if (nbs/'styles.css').exists():
        shutil.copy2(nbs/'styles.css', out/'styles.css')
        styles = '<link rel="stylesheet" href="{base}styles.css">\n'
    exporter = make_exporter()
    for p in processed:
        body, _ = exporter.from_notebook_node(p['nb'], resources={'metadata': {'path': str(p['src'].parent), 'name': p['src'].stem}})
        p['soup'] = soup = BeautifulSoup(body, 'html.parser')
        _apply_qattrs(soup); _fix_headings(soup); _fold_code(soup); _embed_local_images(soup, p['src'].parent, nbs)
        notes = soup.select('.widget-fallback')
        if notes and notes[-1].find_next('img') is None:
            warns.append(f'{p["rel"]}: an interactive widget output is not followed by a saved static figure '
                         '(save one drawn with the same function, after the widget cell)')
    ids = {p['page']: {t['id'] for t in p['soup'].find_all(id=True)} for p in processed}
    for p in processed:
        soup = p['soup']
        _fix_links(soup, p['page'], pages, site_url, ids)
        for img in soup.find_all('img'):
            if not img.get('alt'): img['alt'] = ''
        depth = p['page'].count('/')
        base = '../' * depth
        desc = p['fm'].get('description')
        plain = p['title'].replace('`', '')
        text = PAGE.format(title=html.escape(plain if p['page'] == 'index.html' else f"{plain} – {site}"),
                           description=html.escape(str(desc or '').replace('`', '')), base=base, styles=styles.format(base=base),
                           site=html.escape(site), nav=_nav_html(tree, by_rel, p['page']),
                           h1=_inline_md(p['title']), body=str(soup).strip(),
                           desc=f'<p class="description">{_inline_md(desc)}</p>\n' if desc else '')
        if extra_head: text = text.replace('</head>', extra_head + '</head>', 1)
        dst = out/p['page']
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(text)
        log(f'{p["rel"]} -> {p["page"]}')
    (out/'.nojekyll').write_text('')
    for w in warns: (warn or (lambda m: print(f'WARNING: {m}', file=sys.stderr)))(w)
    return dict(pages=[p['page'] for p in processed], errors=errors, warnings=warns)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=str(ROOT/'_docs'), help='output folder (replaced), default _docs')
    ap.add_argument('--nbs', default=str(ROOT/'nbs'), help='notebook folder, default nbs')
    ap.add_argument('--no-sidebar', action='store_true', help='do not refresh nbs/sidebar.yml')
    ap.add_argument('--katex', default=os.environ.get('CODA_KATEX_DIR') or None, metavar='DIR',
                    help=f'KaTeX `dist` folder to copy into the site (default: $CODA_KATEX_DIR, else '
                         f'.cache/docs-js/node_modules/katex/dist, from `{KATEX_INSTALL}`)')
    ap.add_argument('--keep-going', action='store_true', help='exit 0 even when a show_doc/import cell failed')
    a = ap.parse_args(argv)
    try: res = build(Path(a.nbs), Path(a.out), refresh_sidebar=not a.no_sidebar, katex=a.katex)
    except MissingAsset as e: sys.exit(f'ERROR: {e}')
    for nb, errs in res['errors'].items():
        for e in errs: print(f'ERROR in {nb}, {e}', file=sys.stderr)
    print(f'wrote {len(res["pages"])} pages to {a.out}')
    if res['errors'] and not a.keep_going: sys.exit(1)

if __name__ == '__main__': main()
