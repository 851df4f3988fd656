"""The docs site: build it from nbs/ with tools/build_docs.py, serve it on localhost and open every page in headless
Chromium. Every page must render (title, non-empty body, the shared sidebar with its sections), every image must have
loaded, every link inside the site must resolve to a built file (and its #anchor to an element of that page), no request
may fail, and all TeX must have been typeset by the KaTeX copied into the site (no `.katex-error`, no network).

Chromium is driven over the DevTools protocol through `--remote-debugging-pipe` (file descriptors 3 and 4, messages
separated by NUL bytes), so no websocket library is needed. A small hand-made notebook set (figure output, markdown
image, hidden cell, exported function, links between notebooks, notebooks in nested folders, math, a saved widget
output) checks what the current notebooks may not exercise, and a page with a missing image and broken links checks
that the checker can fail. The built pages must also pass tests/test_public_text.py's rules (no process talk, no
paths or links outside the repository): `test_site_public_text`, on the same build.
"""
from __future__ import annotations
import base64, fcntl, functools, http.server, io, json, os, posixpath, queue, re, shutil, subprocess, sys, tempfile, threading, time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit, unquote

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
BUILD = ROOT/'tools'/'build_docs.py'
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                  '--disable-component-update', '--disable-sync', '--disable-extensions', '--mute-audio',
                  '--remote-debugging-pipe']
INSTALL_HINT = ('headless Chromium is needed to test the docs site. On Debian/Ubuntu: `sudo apt-get install -y chromium` '
                '(or point the CHROMIUM environment variable at a Chromium/Chrome binary).')

def find_chromium():
    if os.environ.get('CHROMIUM'):
        c = os.environ['CHROMIUM']
        return c if Path(c).is_file() and os.access(c, os.X_OK) else None
    for c in [shutil.which('chromium'), shutil.which('chromium-browser'),
              shutil.which('google-chrome'), '/usr/bin/chromium']:
        if c and Path(c).is_file() and os.access(c, os.X_OK): return c
    return None

# ---------------------------------------------------------------------------------------------------------------------
# Chromium over the DevTools protocol (pipe transport)
class Browser:
    def __init__(self, exe, tmp: Path):
        self.tmp, self._id, self._events, self._q = tmp, 0, [], queue.Queue()
        r_cmd, self._w_cmd = os.pipe()   # we write commands, Chromium reads them on fd 3
        self._r_res, w_res = os.pipe()   # Chromium writes replies on fd 4
        def _to_3_4():
            a, b = fcntl.fcntl(r_cmd, fcntl.F_DUPFD, 10), fcntl.fcntl(w_res, fcntl.F_DUPFD, 10)
            os.dup2(a, 3); os.dup2(b, 4)
        self.log = open(tmp/'chromium.log', 'wb')
        self.proc = subprocess.Popen([exe, *CHROMIUM_FLAGS, f'--user-data-dir={tmp/"profile"}', 'about:blank'],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, close_fds=False,
                                     preexec_fn=_to_3_4, start_new_session=True)
        os.close(r_cmd); os.close(w_res)
        threading.Thread(target=self._reader, daemon=True).start()
        self.send('Target.getTargets', timeout=60)  # the browser is up

    def _reader(self):
        buf = b''
        while True:
            try: chunk = os.read(self._r_res, 1 << 16)
            except OSError: chunk = b''
            if not chunk: self._q.put(None); return
            buf += chunk
            while b'\0' in buf:
                msg, buf = buf.split(b'\0', 1)
                self._q.put(json.loads(msg))

    def _next(self, deadline):
        try: m = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty: raise TimeoutError('no answer from Chromium (see chromium.log)') from None
        if m is None: raise RuntimeError(f'Chromium closed its DevTools pipe; log:\n{(self.tmp/"chromium.log").read_text()[-3000:]}')
        return m

    def send(self, method, params=None, session=None, timeout=30):
        self._id += 1
        msg = {'id': self._id, 'method': method, 'params': params or {}}
        if session: msg['sessionId'] = session
        os.write(self._w_cmd, json.dumps(msg).encode() + b'\0')
        deadline = time.monotonic() + timeout
        while True:
            m = self._next(deadline)
            if m.get('id') == self._id:
                if 'error' in m: raise RuntimeError(f'{method}: {m["error"]}')
                return m.get('result', {})
            self._events.append(m)

    def wait_event(self, method, session, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self._events):
                if e.get('method') == method and e.get('sessionId') == session: return self._events.pop(i)
            self._events.append(self._next(deadline))

    def visit(self, url, js, timeout=30):
        "Open `url` in a fresh tab, wait for `load`, evaluate `js` (awaited); returns (value, failed requests, JS errors)."
        self._events.clear()
        tid = self.send('Target.createTarget', {'url': 'about:blank'})['targetId']
        sid = self.send('Target.attachToTarget', {'targetId': tid, 'flatten': True})['sessionId']
        try:
            for m in ['Page.enable', 'Network.enable', 'Runtime.enable']: self.send(m, session=sid)
            nav = self.send('Page.navigate', {'url': url}, session=sid)
            if nav.get('errorText'): return None, [f'{url}: {nav["errorText"]}'], []
            self.wait_event('Page.loadEventFired', sid, timeout)
            res = self.send('Runtime.evaluate', {'expression': js, 'awaitPromise': True, 'returnByValue': True},
                            session=sid, timeout=timeout)
            if 'exceptionDetails' in res: raise RuntimeError(f'{url}: {res["exceptionDetails"]}')
            ev = [e for e in self._events if e.get('sessionId') == sid]
            urls = {e['params']['requestId']: e['params']['request']['url'] for e in ev if e['method'] == 'Network.requestWillBeSent'}
            urls = {k: v for k, v in urls.items() if not v.endswith('/favicon.ico')}  # the browser's own request
            failed = [f'{urls.get(e["params"]["requestId"], "?")[:120]}: {e["params"].get("errorText")}'
                      for e in ev if e['method'] == 'Network.loadingFailed' and e['params']['requestId'] in urls]
            failed += [f'{e["params"]["response"]["url"][:120]}: HTTP {e["params"]["response"]["status"]}'
                       for e in ev if e['method'] == 'Network.responseReceived' and e['params']['response']['status'] >= 400
                       and e['params']['requestId'] in urls]
            errors = [e['params']['exceptionDetails'].get('text', '') for e in ev if e['method'] == 'Runtime.exceptionThrown']
            return res['result'].get('value'), failed, errors
        finally:
            self.send('Target.closeTarget', {'targetId': tid})

    def close(self):
        try: self.send('Browser.close', timeout=10)
        except Exception: pass
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9); self.proc.wait(10)
        for fd in (self._w_cmd, self._r_res):
            try: os.close(fd)
            except OSError: pass
        self.log.close()

# What every page reports once it has loaded (all images settled)
PAGE_JS = r"""(async () => {
  const imgs = [...document.images];
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.addEventListener('load', r); i.addEventListener('error', r); })));
  await document.fonts.ready;  // KaTeX's fonts: requested, and settled, before the failed requests are counted
  const inputs = [...document.querySelectorAll('.input_area')].map(e => e.innerText);
  const note = document.querySelector('.widget-fallback');
  const main = document.querySelector('main') || document.body;
  const clone = main.cloneNode(true);  // visible text without KaTeX's MathML copy and without code
  clone.querySelectorAll('.katex-mathml, pre, code').forEach(e => e.remove());
  return {
    title: document.title, h1: (document.querySelector('main h1') || {}).textContent || '',
    body: document.body ? document.body.innerText.trim().length : 0,
    images: imgs.map(i => ({src: i.getAttribute('src').slice(0, 60), ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    nav: [...document.querySelectorAll('nav.sidebar a')].map(a => a.href),
    sections: [...document.querySelectorAll('nav.sidebar .section')].map(e => e.textContent.trim()),
    katex: document.querySelectorAll('main .katex').length,
    katex_display: document.querySelectorAll('main .katex-display').length,
    katex_errors: [...document.querySelectorAll('main .katex-error')].map(e => e.textContent.slice(0, 80)),
    prose: clone.textContent,
    code: [...main.querySelectorAll('code')].map(e => e.textContent),
    widget_note: note ? note.innerText : null,
    imgs_after_note: note ? imgs.filter(i => note.compareDocumentPosition(i) & Node.DOCUMENT_POSITION_FOLLOWING)
                                .filter(i => i.complete && i.naturalWidth > 0).length : 0,
    showdocs: document.querySelectorAll('.celltag_docs-showdoc h3, .celltag_docs-showdoc h4').length,
    inputs: inputs, text: document.body.innerText,
  };
})()"""

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass

class Server:
    def __init__(self, root: Path):
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(root)))
        self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}/'
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
    def close(self): self.httpd.shutdown(); self.httpd.server_close()

def check_site(browser, root: Path):
    "Open every page of the site in `root`; returns (problems, {page: report})."
    srv = Server(root)
    problems, reports = [], {}
    try:
        pages = sorted(p.relative_to(root).as_posix() for p in root.rglob('*.html'))
        for page in pages:
            rep, failed, errors = browser.visit(srv.url + page, PAGE_JS)
            problems += [f'{page}: request failed: {f}' for f in failed] + [f'{page}: JS error: {e}' for e in errors]
            if rep is None: continue
            reports[page] = rep
            if not rep['title'].strip(): problems.append(f'{page}: no <title>')
            if not rep['h1'].strip(): problems.append(f'{page}: no page heading')
            if rep['body'] < 20: problems.append(f'{page}: empty body')
            problems += [f'{page}: image not loaded: {i["src"]}...' for i in rep['images'] if not i['ok']]
            problems += [f'{page}: TeX that KaTeX could not typeset: {e!r}' for e in rep['katex_errors']]
            rep['nav'] = [h[len(srv.url):] if h.startswith(srv.url) else h for h in rep['nav']]
        for page, rep in reports.items():
            for href in rep['links']:
                u = urlsplit(href)
                if not href.startswith(srv.url): continue
                path = unquote(u.path).lstrip('/') or 'index.html'
                if path.endswith('/'): path += 'index.html'
                if not (root/path).is_file(): problems.append(f'{page}: broken link {href[len(srv.url):]}'); continue
                if u.fragment and path.endswith('.html'):
                    if path not in reports: problems.append(f'{page}: link to a page that was not checked: {path}')
                    elif unquote(u.fragment) not in reports[path]['ids']:
                        problems.append(f'{page}: broken anchor {href[len(srv.url):]}')
    finally: srv.close()
    return problems, reports

# ---------------------------------------------------------------------------------------------------------------------
# fixtures
@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    exe = find_chromium()
    if exe is None: pytest.fail(INSTALL_HINT, pytrace=False)
    b = Browser(exe, tmp_path_factory.mktemp('chromium'))
    yield b
    b.close()

def _md(src): return {'cell_type': 'markdown', 'metadata': {}, 'source': src}
def _code(src, outputs=()): return {'cell_type': 'code', 'metadata': {}, 'source': src, 'outputs': list(outputs), 'execution_count': None}
def _nb(cells):
    return {'nbformat': 4, 'nbformat_minor': 5, 'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
            'cells': [dict(c, id=f'x{i}') for i, c in enumerate(cells)]}

def _png(w, h):
    from PIL import Image
    f = io.BytesIO(); Image.new('RGB', (w, h), (200, 40, 40)).save(f, 'PNG')
    return f.getvalue()

WIDGET_OUT = {'output_type': 'display_data', 'metadata': {},
              'data': {'application/vnd.jupyter.widget-view+json': {'model_id': 'f00', 'version_major': 2, 'version_minor': 0},
                       'text/plain': "interactive(children=(IntSlider(value=1, description='levels'),))"}}

def write_fixture_nbs(d: Path):
    "Small notebooks exercising what the docs must handle, at the top level and in nested folders."
    (d/'img').mkdir(parents=True)
    (d/'img'/'dot.png').write_bytes(_png(12, 8))
    png = base64.b64encode(_png(40, 30)).decode()
    fig = lambda w, h: {'output_type': 'display_data', 'metadata': {},
                        'data': {'image/png': base64.b64encode(_png(w, h)).decode(), 'text/plain': f'<Figure size {w}x{h}>'}}
    nbs = {
        'index.ipynb': [_md('# Fixture site\n\n> A tiny site for the docs test.'),
                        _md('See [the figures](01_figs.ipynb), [a section](01_figs.ipynb#A-figure) and '
                            '[the other page](more.html.md); the API: [alpha](api/10_alpha.ipynb).')],
        '01_figs.ipynb': [_md('# Figures\n\n> Saved outputs only.'),
                          _code('#| hide\nHIDDEN_MARKER = 1'),
                          _code('#| export\ndef plus_one(x):\n    "Add one to `x`."\n    return x + 1'),
                          _md('## A figure\n\nA figure from a saved output, and an image beside the notebook:\n\n![dot](img/dot.png)'),
                          _code('raise RuntimeError("NEVER_EXECUTED: the build must not run notebooks")',
                                [{'output_type': 'display_data', 'metadata': {},
                                  'data': {'image/png': png, 'text/plain': '<Figure size 40x30>'}}]),
                          _md('Back to [the start](index.ipynb).')],
        '02_more.ipynb': [_md('# More\n\n> A second page.'), _code('print("VISIBLE_OUTPUT")', [
                          {'output_type': 'stream', 'name': 'stdout', 'text': 'VISIBLE_OUTPUT\n'}])],
        # nested folders: pages at the mirrored paths, relative .ipynb links across folders, images beside a parent
        'api/10_alpha.ipynb': [_md('# Alpha\n\n> An API page in a folder.'),
                               _code('#| export\ndef alpha(x):\n    "Twice `x`."\n    return 2 * x'),
                               _md('See [the beta figure](../paper/coda/20_beta.ipynb#Beta-figure), '
                                   '[the math](../tutorials/30_math.ipynb) and [home](../index.ipynb).\n\n'
                                   '![dot](../img/dot.png)')],
        'paper/coda/20_beta.ipynb': [_md('# Beta\n\n> A paper page two folders down.'),
                                     _md('## Beta figure'), _code('draw()', [fig(30, 20)]),
                                     _md('Back to [alpha](../../api/10_alpha.ipynb#alpha) and [the start](../../index.ipynb).')],
        'paper/coda/60_widgets.ipynb': [_md('# Widgets\n\n> A saved ipywidgets output.'),
                                        _code('explorer = widgets.interactive(draw, k=(1, 4))\ndisplay(explorer)', [WIDGET_OUT]),
                                        _md('## Static view'), _code('draw(4)', [fig(36, 24)])],
        'tutorials/30_math.ipynb': [_md('# Math\n\n> TeX in markdown.'),
                                    _md('Inline $x^2$ and $\\hat f_k = \\sum_{l \\le k} z^{(l)}$, with `$HOME` as code.\n\n'
                                        '$$\\sum_{i=1}^n i = \\frac{n(n+1)}{2}$$'),
                                    _code('print("costs $5 and $6")', [
                                        {'output_type': 'stream', 'name': 'stdout', 'text': 'costs $5 and $6\n'}])],
    }
    for name, cells in nbs.items():
        (d/name).parent.mkdir(parents=True, exist_ok=True)
        (d/name).write_text(json.dumps(_nb(cells), indent=1))

FX_PAGES = ['index.html', 'figs.html', 'more.html', 'api/alpha.html', 'paper/coda/beta.html', 'paper/coda/widgets.html',
            'tutorials/math.html']
SKIP = ('_', '.')

def real_nbs():
    "Notebooks under nbs/ that get a page (names starting with _ or . skipped, in any folder)."
    return sorted(p.relative_to(NBS).as_posix() for p in NBS.rglob('*.ipynb')
                  if not any(q.startswith(SKIP) for q in p.relative_to(NBS).parts))

def explorer_nb():
    for rel in ['paper/coda/60_explorer.ipynb', '17_explorer.ipynb']:
        if (NBS/rel).exists(): return rel
    return None

def _build_cmd(nbs, out, *extra): return [sys.executable, str(BUILD), '--nbs', str(nbs), '--out', str(out), '--no-sidebar', *extra]

@pytest.fixture(scope='module')
def builds(tmp_path_factory):
    "Build the real site and the fixture site (both at once)."
    t = tmp_path_factory.mktemp('docs')
    write_fixture_nbs(t/'fx_nbs')
    nbs_before = real_nbs()
    t0 = time.monotonic()
    procs = {k: subprocess.Popen(_build_cmd(n, t/k), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for k, n in [('site', NBS), ('fx_site', t/'fx_nbs')]}
    outs = {k: p.communicate(timeout=600) + (p.returncode,) for k, p in procs.items()}
    print(f'docs builds: {time.monotonic() - t0:.1f} s')
    mapping = dict(re.findall(r'^(\S+\.ipynb) -> (\S+\.html)$', outs['site'][0], re.M))
    return dict(site=t/'site', fx=t/'fx_site', mapping=mapping, nbs_before=nbs_before, fx_nbs=t/'fx_nbs',
                stderr={k: o[1] for k, o in outs.items()}, outs=outs)

def built(builds, which):
    "Fail the test (not the fixture) when that build failed, so that one broken build does not hide the other's tests."
    so, se, rc = builds['outs'][which]
    assert rc == 0, f'docs build ({which}) failed:\n{so}\n{se}'
    return builds

@pytest.fixture(scope='module')
def fx_check(browser, builds):
    "The fixture site, checked once: (problems, {page: report})."
    return check_site(browser, built(builds, 'fx_site')['fx'])

def _prose(md: str) -> str:
    "Markdown without fenced code blocks and inline code."
    return re.sub(r'`[^`\n]*`', '', re.sub(r'^(```|~~~).*?^\1', '', md, flags=re.S | re.M))

# ---------------------------------------------------------------------------------------------------------------------
# tests
def test_real_site(browser, builds):
    root = built(builds, 'site')['site']
    missing = [n for n in builds['nbs_before'] if n not in builds['mapping'] and (NBS/n).exists()]
    assert not missing, f'notebooks without a page: {missing}'
    order = list(builds['mapping'].values())
    assert order[0] == 'index.html', order
    problems, reports = check_site(browser, root)
    assert set(reports) == set(order), (sorted(reports), order)
    doc_url = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['urls'].get('Documentation', '').rstrip('/')
    sys.path.insert(0, str(ROOT/'tools'))
    try: import build_docs
    finally: sys.path.remove(str(ROOT/'tools'))
    folders = list(dict.fromkeys(posixpath.dirname(n) for n in builds['mapping'] if posixpath.dirname(n)))
    want_sections = [build_docs.section_title(f) for f in folders]
    for page, rep in reports.items():
        if rep['nav'] != order: problems.append(f'{page}: sidebar {rep["nav"]} is not {order}')
        if rep['sections'] != want_sections: problems.append(f'{page}: sidebar sections {rep["sections"]} are not {want_sections}')
        for inp in rep['inputs']:
            if re.search(r'^\s*#\|', inp, re.M): problems.append(f'{page}: a cell shows its #| directives: {inp[:80]!r}')
        if 'from nbdev.showdoc import show_doc' in rep['text']: problems.append(f'{page}: a hidden cell is shown')
        if doc_url and any(h.startswith(doc_url + '/') for h in rep['links']):
            problems.append(f'{page}: links to the published site instead of the local page')
    # every notebook that exports a function or class shows rendered show_doc output; TeX in markdown is typeset
    for nb, page in builds['mapping'].items():
        src = json.loads((NBS/nb).read_text()) if (NBS/nb).exists() else {'cells': []}
        exports_defs = any(c['cell_type'] == 'code' and re.match(r'\s*#\|\s*exports?\s*$', ''.join(c['source']), re.M)
                           and re.search(r'^(def|class) [A-Za-z]', ''.join(c['source']), re.M) for c in src['cells'])
        if exports_defs and reports[page]['showdocs'] == 0: problems.append(f'{page}: no show_doc output')
        has_tex = any(c['cell_type'] == 'markdown' and re.search(r'\$\$|\$[^$\s][^$]*\$', _prose(''.join(c['source'])))
                      for c in src['cells'])
        if has_tex and reports[page]['katex'] == 0: problems.append(f'{page}: its notebook has TeX but the page shows no typeset math')
    assert not problems, '\n'.join(problems)

def test_site_public_text(builds):
    "The built pages (text, code, saved outputs; not embedded images, not KaTeX) pass tests/test_public_text.py's rules."
    sys.path.insert(0, str(ROOT/'tests'))
    try: from test_public_text import find_violations
    finally: sys.path.remove(str(ROOT/'tests'))
    site = built(builds, 'site')['site']
    assert find_violations(f'<p>Issue 12, from {ROOT}</p>'), 'the checker must be able to fail'
    found = [f'{f.relative_to(site).as_posix()}: {v}' for f in sorted(site.rglob('*'))
             if f.is_file() and f.suffix in ('.html', '.js', '.css') and f.relative_to(site).parts[0] != 'katex'
             for v in find_violations(f.read_text(errors='replace'))]
    assert not found, f'{len(found)} problem(s) in the built site:\n' + '\n'.join(found)

def test_real_explorer_fallback(browser, builds):
    "The explorer's widget output shows the Jupyter note, and a saved static figure follows it on the page."
    rel = explorer_nb()
    if rel is None: pytest.skip('no explorer notebook (nbs/paper/coda/60_explorer.ipynb or nbs/17_explorer.ipynb)')
    built(builds, 'site')
    page = builds['mapping'][rel]
    assert 'not followed by a saved static figure' not in builds['stderr']['site']
    srv = Server(builds['site'])
    try: rep, failed, errors = browser.visit(srv.url + page, PAGE_JS)
    finally: srv.close()
    assert not failed and not errors, (failed, errors)
    assert rep['widget_note'] and 'make lab' in rep['widget_note'] and 'static figure' in rep['widget_note'], rep['widget_note']
    assert rep['imgs_after_note'] >= 1, f'{page}: no loaded image after the widget note'
    assert 'interactive(children=' not in rep['text']  # the widget's text repr is replaced, not shown

def test_fixture_site(fx_check):
    problems, reports = fx_check
    assert not problems, '\n'.join(problems)
    assert sorted(reports) == sorted(FX_PAGES)
    figs, index = reports['figs.html'], reports['index.html']
    for page, rep in reports.items():
        assert rep['nav'] == FX_PAGES, (page, rep['nav'])
        assert rep['sections'] == ['API', 'Paper: CODA', 'Tutorials'], (page, rep['sections'])
    assert [i['w'] for i in figs['images']] == [12, 40], figs['images']  # markdown image, then the saved figure
    assert 'HIDDEN_MARKER' not in figs['text'] and 'return x + 1' not in figs['text']  # hidden cell, exported source
    assert figs['showdocs'] >= 1 and 'plus_one' in figs['ids'] and 'Add one to' in figs['text']
    assert 'a-figure' in figs['ids']
    assert any(h.endswith('/figs.html#a-figure') for h in index['links']), index['links']
    assert any(h.endswith('/more.html') for h in index['links']), index['links']
    assert any(h.endswith('/api/alpha.html') for h in index['links']), index['links']
    assert 'VISIBLE_OUTPUT' in reports['more.html']['text'] and figs['h1'] == 'Figures'
    assert reports['more.html']['title'].startswith('More')

def test_fixture_nested(fx_check):
    "Notebooks in folders: mirrored page paths, relative .ipynb links across folders, nbdev processing, images."
    reports = fx_check[1]
    alpha, beta = reports['api/alpha.html'], reports['paper/coda/beta.html']
    assert alpha['showdocs'] >= 1 and 'alpha' in alpha['ids'] and 'Twice' in alpha['text']
    assert [i['w'] for i in alpha['images']] == [12] and [i['w'] for i in beta['images']] == [30]
    assert any(h.endswith('/paper/coda/beta.html#beta-figure') for h in alpha['links']), alpha['links']
    assert any(h.endswith('/tutorials/math.html') for h in alpha['links']), alpha['links']
    assert any(h.endswith('/api/alpha.html#alpha') for h in beta['links']), beta['links']
    assert any(urlsplit(h).path == '/index.html' for h in beta['links']), beta['links']
    assert alpha['title'].startswith('Alpha') and beta['h1'] == 'Beta'

def test_fixture_math(fx_check, builds):
    "`$x^2$` and `$$...$$` are typeset by the site's own KaTeX; code and text outputs keep their dollars."
    site = builds['fx']
    for f in ['katex/katex.min.js', 'katex/katex.min.css', 'katex/contrib/auto-render.min.js', 'math.js']:
        assert (site/f).is_file(), f
    assert any((site/'katex'/'fonts').glob('*.woff2'))
    html_text = (site/'tutorials'/'math.html').read_text()
    assert not re.search(r'(src|href)="(https?:)?//', html_text), 'the page loads something from the network'
    rep = fx_check[1]['tutorials/math.html']
    assert rep['katex'] >= 3 and rep['katex_display'] == 1, rep
    assert not rep['katex_errors']
    assert '$' not in rep['prose'], rep['prose']  # no raw $x^2$ left
    assert '$HOME' in rep['code'] and 'costs $5 and $6' in rep['text']

def test_fixture_widget_fallback(fx_check, builds):
    rep = fx_check[1]['paper/coda/widgets.html']
    assert rep['widget_note'] and 'make lab' in rep['widget_note'] and 'static figure below' in rep['widget_note']
    assert rep['imgs_after_note'] == 1 and 'interactive(children=' not in rep['text']
    assert 'not followed by a saved static figure' not in builds['stderr']['fx_site']

def test_widget_without_figure_warns(tmp_path):
    "A widget output with no saved figure after it is reported by the build (the docs would show only the note)."
    d = tmp_path/'nbs'; d.mkdir()
    (d/'index.ipynb').write_text(json.dumps(_nb([_md('# Only a widget'), _code('display(w)', [WIDGET_OUT])])))
    r = subprocess.run(_build_cmd(d, tmp_path/'out'), capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'index.ipynb: an interactive widget output is not followed by a saved static figure' in r.stderr, r.stderr

def test_missing_katex_is_explained(tmp_path):
    "Without KaTeX the build stops at once, naming the missing file and the command that gets it."
    d = tmp_path/'nbs'; d.mkdir()
    (d/'index.ipynb').write_text(json.dumps(_nb([_md('# Math\n\n$x^2$')])))
    r = subprocess.run(_build_cmd(d, tmp_path/'out', '--katex', str(tmp_path/'no-katex')), capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode != 0
    assert f'{tmp_path/"no-katex"/"katex.min.js"} not found' in r.stderr, r.stderr
    assert 'npm install --prefix .cache/docs-js' in r.stderr and 'katex@' in r.stderr, r.stderr
    assert not (tmp_path/'out').exists()

def test_checker_catches_breakage(browser, builds, tmp_path):
    "A missing image, a link to a missing page, a missing anchor and TeX left untypeset must all be reported."
    built(builds, 'fx_site')
    root = tmp_path/'broken'
    shutil.copytree(builds['fx'], root)
    (root/'bad.html').write_text('<!DOCTYPE html><html><head><title>Bad</title></head><body><main><h1>Bad</h1>'
                                 '<p>Some text long enough to count as a body.</p><img src="img/none.png" alt="">'
                                 '<a href="nowhere.html">x</a> <a href="figs.html#no-such-anchor">y</a>'
                                 '<span class="katex-error">\\frac{</span></main></body></html>')
    problems, _ = check_site(browser, root)
    text = '\n'.join(problems)
    assert 'bad.html: image not loaded' in text, text
    assert 'bad.html: broken link nowhere.html' in text, text
    assert 'bad.html: broken anchor figs.html#no-such-anchor' in text, text
    assert 'bad.html: TeX that KaTeX could not typeset' in text, text

def test_quarto_config():
    "nbs/_quarto.yml's metadata files and stylesheet exist and parse; sidebar.yml groups the notebooks as the site does."
    q = yaml.safe_load((NBS/'_quarto.yml').read_text())
    for f in q.get('metadata-files', []):
        assert (NBS/f).is_file(), f'nbs/{f} (listed in _quarto.yml metadata-files) is missing: run `make docs`'
        assert isinstance(yaml.safe_load((NBS/f).read_text()), dict), f'nbs/{f} is not a YAML mapping'
    css = q['format']['html'].get('css')
    assert css is None or (NBS/css).is_file(), f'nbs/{css} is missing'
    assert q['project']['type'] == 'website' and q['website']['sidebar']
    sys.path.insert(0, str(ROOT/'tools'))
    try: import build_docs
    finally: sys.path.remove(str(ROOT/'tools'))
    want = build_docs.sidebar_yml(NBS)['website']['sidebar']['contents']
    got = yaml.safe_load((NBS/'sidebar.yml').read_text())['website']['sidebar']['contents']
    assert got == want, f'nbs/sidebar.yml is out of date (run `make docs`): it lists {got}, the notebooks are {want}'
    listed = [c for e in got for c in ([e] if isinstance(e, str) else e['contents'])]
    assert sorted(listed) == real_nbs(), 'nbs/sidebar.yml does not list every notebook exactly once'
    assert all(set(e) == {'section', 'contents'} for e in got if not isinstance(e, str)), got

def test_sidebar_sections(tmp_path):
    "Sections by folder, with the project's titles; top-level notebooks first; nbdev's order inside a folder."
    write_fixture_nbs(tmp_path/'nbs')
    sys.path.insert(0, str(ROOT/'tools'))
    try: import build_docs
    finally: sys.path.remove(str(ROOT/'tools'))
    got = build_docs.sidebar_yml(tmp_path/'nbs')['website']['sidebar']['contents']
    assert got == ['index.ipynb', '01_figs.ipynb', '02_more.ipynb',
                   {'section': 'API', 'contents': ['api/10_alpha.ipynb']},
                   {'section': 'Paper: CODA', 'contents': ['paper/coda/20_beta.ipynb', 'paper/coda/60_widgets.ipynb']},
                   {'section': 'Tutorials', 'contents': ['tutorials/30_math.ipynb']}], got
    assert build_docs.section_title('paper/other') == 'Paper: Other' and build_docs.section_title('10_extra_bits') == 'Extra Bits'
