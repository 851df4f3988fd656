"""The docs site: build it from nbs/ with tools/build_docs.py, serve it on localhost and open every page in headless
Chromium. Every page must render (title, non-empty body, the shared sidebar), every image must have loaded, every link
inside the site must resolve to a built file (and its #anchor to an element of that page), no request may fail.

Chromium is driven over the DevTools protocol through `--remote-debugging-pipe` (file descriptors 3 and 4, messages
separated by NUL bytes), so no websocket library is needed. A small hand-made notebook set (figure output, markdown
image, hidden cell, exported function, links between notebooks) checks what the current notebooks may not exercise,
and a page with a missing image and broken links checks that the checker can fail.
"""
from __future__ import annotations
import base64, fcntl, functools, http.server, io, json, os, queue, re, shutil, subprocess, sys, tempfile, threading, time
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
  const inputs = [...document.querySelectorAll('.input_area')].map(e => e.innerText);
  return {
    title: document.title, h1: (document.querySelector('main h1') || {}).textContent || '',
    body: document.body ? document.body.innerText.trim().length : 0,
    images: imgs.map(i => ({src: i.getAttribute('src').slice(0, 60), ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth})),
    links: [...document.querySelectorAll('a[href]')].map(a => a.href),
    ids: [...document.querySelectorAll('[id]')].map(e => e.id),
    nav: [...document.querySelectorAll('nav.sidebar a')].map(a => a.getAttribute('href')),
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

def write_fixture_nbs(d: Path):
    "Three small notebooks exercising what the docs must handle."
    (d/'img').mkdir(parents=True)
    (d/'img'/'dot.png').write_bytes(_png(12, 8))
    png = base64.b64encode(_png(40, 30)).decode()
    nbs = {
        'index.ipynb': [_md('# Fixture site\n\n> A tiny site for the docs test.'),
                        _md('See [the figures](01_figs.ipynb), [a section](01_figs.ipynb#A-figure) and '
                            '[the other page](more.html.md).')],
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
    }
    for name, cells in nbs.items(): (d/name).write_text(json.dumps(_nb(cells), indent=1))

@pytest.fixture(scope='module')
def builds(tmp_path_factory):
    "Build the real site and the fixture site (both at once)."
    t = tmp_path_factory.mktemp('docs')
    write_fixture_nbs(t/'fx_nbs')
    nbs_before = sorted(p.name for p in NBS.glob('*.ipynb') if not p.name.startswith(('_', '.')))
    args = lambda nbs, out: [sys.executable, str(BUILD), '--nbs', str(nbs), '--out', str(out), '--no-sidebar']
    t0 = time.monotonic()
    procs = {k: subprocess.Popen(args(n, t/k), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for k, n in [('site', NBS), ('fx_site', t/'fx_nbs')]}
    outs = {k: p.communicate(timeout=600) + (p.returncode,) for k, p in procs.items()}
    for k, (so, se, rc) in outs.items(): assert rc == 0, f'docs build ({k}) failed:\n{so}\n{se}'
    print(f'docs builds: {time.monotonic() - t0:.1f} s')
    mapping = dict(re.findall(r'^(\S+\.ipynb) -> (\S+\.html)$', outs['site'][0], re.M))
    return dict(site=t/'site', fx=t/'fx_site', mapping=mapping, nbs_before=nbs_before)

# ---------------------------------------------------------------------------------------------------------------------
# tests
def test_real_site(browser, builds):
    root = builds['site']
    missing = [n for n in builds['nbs_before'] if n not in builds['mapping'] and (NBS/n).exists()]
    assert not missing, f'notebooks without a page: {missing}'
    order = list(builds['mapping'].values())
    assert order[0] == 'index.html', order
    problems, reports = check_site(browser, root)
    assert set(reports) == set(order), (sorted(reports), order)
    doc_url = tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['urls'].get('Documentation', '').rstrip('/')
    for page, rep in reports.items():
        if rep['nav'] != order: problems.append(f'{page}: sidebar {rep["nav"]} is not {order}')
        for inp in rep['inputs']:
            if re.search(r'^\s*#\|', inp, re.M): problems.append(f'{page}: a cell shows its #| directives: {inp[:80]!r}')
        if 'from nbdev.showdoc import show_doc' in rep['text']: problems.append(f'{page}: a hidden cell is shown')
        if doc_url and any(h.startswith(doc_url + '/') for h in rep['links']):
            problems.append(f'{page}: links to the published site instead of the local page')
    # every notebook that exports a function or class shows rendered show_doc output
    for nb, page in builds['mapping'].items():
        src = json.loads((NBS/nb).read_text()) if (NBS/nb).exists() else {'cells': []}
        exports_defs = any(c['cell_type'] == 'code' and re.match(r'\s*#\|\s*exports?\s*$', ''.join(c['source']), re.M)
                           and re.search(r'^(def|class) [A-Za-z]', ''.join(c['source']), re.M) for c in src['cells'])
        if exports_defs and reports[page]['showdocs'] == 0: problems.append(f'{page}: no show_doc output')
    assert not problems, '\n'.join(problems)

def test_fixture_site(browser, builds):
    root = builds['fx']
    problems, reports = check_site(browser, root)
    assert not problems, '\n'.join(problems)
    assert sorted(reports) == ['figs.html', 'index.html', 'more.html']
    figs, index = reports['figs.html'], reports['index.html']
    assert index['nav'] == ['index.html', 'figs.html', 'more.html']
    assert [i['w'] for i in figs['images']] == [12, 40], figs['images']  # markdown image, then the saved figure
    assert 'HIDDEN_MARKER' not in figs['text'] and 'return x + 1' not in figs['text']  # hidden cell, exported source
    assert figs['showdocs'] >= 1 and 'plus_one' in figs['ids'] and 'Add one to' in figs['text']
    assert 'a-figure' in figs['ids']
    assert any(h.endswith('/figs.html#a-figure') for h in index['links']), index['links']
    assert any(h.endswith('/more.html') for h in index['links']), index['links']
    assert 'VISIBLE_OUTPUT' in reports['more.html']['text'] and figs['h1'] == 'Figures'
    assert reports['more.html']['title'].startswith('More')

def test_checker_catches_breakage(browser, builds, tmp_path):
    "A missing image, a link to a missing page and a missing anchor must all be reported."
    root = tmp_path/'broken'
    shutil.copytree(builds['fx'], root)
    (root/'bad.html').write_text('<!DOCTYPE html><html><head><title>Bad</title></head><body><main><h1>Bad</h1>'
                                 '<p>Some text long enough to count as a body.</p><img src="img/none.png" alt="">'
                                 '<a href="nowhere.html">x</a> <a href="figs.html#no-such-anchor">y</a></main></body></html>')
    problems, _ = check_site(browser, root)
    text = '\n'.join(problems)
    assert 'bad.html: image not loaded' in text, text
    assert 'bad.html: broken link nowhere.html' in text, text
    assert 'bad.html: broken anchor figs.html#no-such-anchor' in text, text

def test_quarto_config():
    "nbs/_quarto.yml's metadata files and stylesheet exist and parse; sidebar.yml lists the notebooks in nbdev's order."
    q = yaml.safe_load((NBS/'_quarto.yml').read_text())
    for f in q.get('metadata-files', []):
        assert (NBS/f).is_file(), f'nbs/{f} (listed in _quarto.yml metadata-files) is missing: run `make docs`'
        assert isinstance(yaml.safe_load((NBS/f).read_text()), dict), f'nbs/{f} is not a YAML mapping'
    css = q['format']['html'].get('css')
    assert css is None or (NBS/css).is_file(), f'nbs/{css} is missing'
    sys.path.insert(0, str(ROOT/'tools'))
    try: import build_docs
    finally: sys.path.remove(str(ROOT/'tools'))
    want = [p.relative_to(NBS).as_posix() for p in build_docs.sidebar_order(NBS)]
    got = yaml.safe_load((NBS/'sidebar.yml').read_text())['website']['sidebar']['contents']
    assert got == want, f'nbs/sidebar.yml is out of date (run `make docs`): it lists {got}, the notebooks are {want}'
