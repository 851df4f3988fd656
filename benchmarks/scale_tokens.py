"""The token store and tokenizing at scale: training memory against the size of a token folder, and `coda tokenize`
throughput at 1 and 2 processes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_tokens.py [--quick] [--part rss|tokenize|all]

* `rss`: synthetic token folders written straight through the package's shard writer (`write_shard`; no tokenizer),
  in the MAR layout (10 levels, 680 tokens an image, V = 16384, stored as uint16) at 250 k, 500 k and 1 M images, and
  in LatentBit's (1,024 tokens of 32 bits, packed to 4 bytes a token) at 50 k, 100 k and 200 k images. Each folder is
  opened in a fresh process (`TokenSequences.from_folder`: the first open hashes every shard in 1 MiB chunks and
  records it, a second open reads the record), then `batches` batches are drawn at random with `train_loader` (the
  training order); the process reports its RSS, its peak RSS, and the resident pages of the mapped shards. The figures
  the int64 / ±1 float32 in-memory store needed are computed beside them (n x L x 8 bytes; n x L x D x 4 bytes).
* `tokenize`: a folder of 20,000 PNGs of 64 px (photo crops, built once under `.cache/`), its first 2,000 images
  (`--limit`; the encoder's speed on this shared machine keeps the whole folder beyond a short run) tokenized by
  `coda tokenize` under `torchrun --nproc_per_node N` (N = 1, 2; gloo) with a small CODA tokenizer
  (`coda-small-kl-tiny`); every process reports its wall time, the time inside `tokenize_folder` and its peak RSS.

`--quick` shrinks every size (a smoke run). Results: benchmarks/results/scale_tokens.json (command, threads, versions,
`os.getloadavg()` before and after each measurement: the machine is shared).
"""
from __future__ import annotations
import argparse, json, os, platform, resource, shutil, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'benchmarks'/'results'/'scale_tokens.json'
CACHE = ROOT/'.cache'/'scale_tokens'
MAR = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

def _specs():
    from coda_nb.token_kinds import TokenSpec
    return dict(index=TokenSpec('index', [(s, s) for s in MAR], codebook_size=16384, image_size=256, downsample=16),
                bits=TokenSpec('bits', [(32, 32)], bits=32, image_size=256, downsample=8))

class _Stand:
    "What `make_manifest` asks of a tokenizer: a token spec and a fingerprint."
    def __init__(self, spec): self.token_spec, self.config = spec, dict(kind='synthetic')
    def fingerprint(self): return dict(config_hash='synthetic', weights_digest='synthetic')

def write_synthetic(d, spec, n: int, shard_size: int, seed: int = 0) -> float:
    "A token folder of `n` random images of `spec`, one shard at a time (memory O(shard)); returns seconds."
    import numpy as np
    from coda_nb.data.tokens import make_manifest
    from coda_nb.data.token_store import save_manifest, write_shard
    from coda_nb.token_kinds import token_kind
    t = time.perf_counter(); d = Path(d)
    m = make_manifest(_Stand(spec), n, spec.image_size, shard_size); save_manifest(m, d)
    feat = token_kind(spec).feature_dims
    for k, s in enumerate(m['shards']):
        rng, c = np.random.default_rng([seed, k]), s['count']
        levels = [rng.integers(0, 2, (c, *g, *feat), dtype=np.uint8) if feat else rng.integers(0, spec.codebook_size, (c, *g), dtype=np.uint16)
                  for g in spec.levels]
        m = write_shard(d, k, m, levels, np.arange(s['start'], s['start'] + c) % 1000, [str(i) for i in range(s['start'], s['start'] + c)])
    return time.perf_counter() - t

def _status() -> dict:
    "VmRSS, VmHWM (peak) and RssAnon of this process, and the resident pages of mapped shard files (KiB)."
    st = {l.split(':')[0]: int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(('VmRSS', 'VmHWM', 'RssAnon'))}
    shards, mapped = False, 0
    for l in open('/proc/self/smaps'):
        if not l[0].isupper(): shards = 'shard-' in l
        elif shards and l.startswith('Rss:'): mapped += int(l.split()[1])
    return dict(rss_kib=st['VmRSS'], peak_rss_kib=st['VmHWM'], anon_kib=st['RssAnon'], mapped_shard_kib=mapped)

def _rss_worker(tok_dir: str, batches: int, batch_size: int) -> dict:
    "In a fresh process: open the folder, draw `batches` training batches, report memory."
    import torch
    torch.set_num_threads(1)
    from coda_nb.data.token_store import TokenSequences
    from coda_nb.data.sampler import train_loader
    base = _status()
    t = time.perf_counter(); ds = TokenSequences.from_folder(tok_dir); open_s = time.perf_counter() - t
    after_open = _status()
    it = iter(train_loader(ds, batch_size, seed=0)); t = time.perf_counter(); total = 0
    for _ in range(batches): seq, y = next(it); total += int(seq.float().sum() != 0)
    read_s = time.perf_counter() - t
    return dict(open_s=round(open_s, 3), batches=batches, batch_size=batch_size, batches_per_s=round(batches / read_s, 1),
                start=base, after_open=after_open, after_batches=_status(), batch_bytes=seq.element_size() * seq.numel())

def _in_subprocess(*args) -> dict:
    r = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=os.environ | dict(OMP_NUM_THREADS='1'))
    if r.returncode: raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

def rss(quick: bool = False, batches: int = 100) -> dict:
    "RSS after `batches` random batches, per folder size, for the index and the bit layout."
    specs, out = _specs(), {}
    plan = dict(index=([2000, 4000, 8000] if quick else [250_000, 500_000, 1_000_000], 16384, 256),
                bits=([500, 1000, 2000] if quick else [50_000, 100_000, 200_000], 4096, 64))
    for name, (sizes, shard_size, B) in plan.items():
        spec, rows = specs[name], []
        for n in sizes:
            d = Path(tempfile.mkdtemp(prefix='coda-scale-tokens-'))
            try:
                load0 = os.getloadavg(); write_s = write_synthetic(d, spec, n, shard_size)
                disk = sum(f.stat().st_size for f in d.glob('shard-*'))
                first = _in_subprocess('--rss-worker', str(d), str(batches), str(B))       # hashes every shard, records it
                again = _in_subprocess('--rss-worker', str(d), str(batches), str(B))       # reads the record
                L, D = spec.tokens_per_image, spec.bits or 1
                rows.append(dict(n=n, shard_size=shard_size, write_s=round(write_s, 1), shard_bytes=disk,
                                 in_memory_bytes_before=n * L * (D * 4 if spec.bits else 8),
                                 first_open=first, second_open=again, loadavg=[load0, os.getloadavg()]))
                print(f'{name} n={n}: shards {disk / 2**20:.0f} MiB, RSS after {batches} batches {again["after_batches"]["rss_kib"] / 1024:.0f} MiB '
                      f'(mapped shard pages {again["after_batches"]["mapped_shard_kib"] / 1024:.1f} MiB), open {first["open_s"]} s then {again["open_s"]} s', flush=True)
            finally: shutil.rmtree(d, ignore_errors=True)
        out[name] = dict(token_spec=spec.to_dict(), tokens_per_image=spec.tokens_per_image, rows=rows)
    return out

def _image_folder(n: int) -> Path:
    "A folder of `n` 64 px PNG photo crops under .cache/ (built once)."
    d = CACHE/f'images-{n}'
    if (d/'.done').is_file(): return d
    from PIL import Image
    from coda_nb.data.photos import PhotoCrops
    d.mkdir(parents=True, exist_ok=True); crops = PhotoCrops(size=64, n=n, split='train', seed=0)
    for i in range(n):
        f = d/f'{i // 1000:02d}'/f'{i:06d}.png'; f.parent.mkdir(exist_ok=True)
        Image.fromarray(((crops[i] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(f)
    (d/'.done').write_text(str(n)); return d

def _tokenize_worker(report_dir: str, *argv) -> None:
    "One rank of `coda tokenize` (under torchrun): its wall time, its time in tokenize_folder and its peak RSS, to a JSON file."
    t0 = time.perf_counter()
    import coda_nb.data.tokens as T
    inner, spent = T.tokenize_folder, []
    def timed(*a, **k):
        t = time.perf_counter(); r = inner(*a, **k); spent.append(time.perf_counter() - t); return r
    T.tokenize_folder = timed
    from coda_nb.cli import main
    rc = main(list(argv)); rank = int(os.environ.get('RANK', 0))
    Path(report_dir, f'rank{rank}.json').write_text(json.dumps(dict(
        rank=rank, rc=rc, wall_s=round(time.perf_counter() - t0, 2), tokenize_folder_s=round(spent[0], 2) if spent else None,
        peak_rss_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
    sys.exit(rc)

def tokenize(quick: bool = False, procs=(1, 2), limit: int|None = 2000) -> dict:
    "`coda tokenize` throughput and peak RSS per process at each number of processes (`--limit`: the first `limit` images of the folder)."
    folder_n = 400 if quick else 20000
    n = min(limit or folder_n, folder_n)
    images = _image_folder(folder_n); tk = CACHE/'tokenizer-coda-small-kl-tiny'
    if not (tk/'config.json').is_file():
        from coda_nb.tokenizers.coda import build_tokenizer
        build_tokenizer('coda-small-kl-tiny', seed=0).save_pretrained(tk)
    out = dict(folder_images=folder_n, n_images=n, image_size=64, tokenizer='coda-small-kl-tiny', batch_size=64, shard_size=1024, runs=[])
    torchrun = Path(sys.executable).parent/'torchrun'
    for p in procs:
        with tempfile.TemporaryDirectory(prefix='coda-scale-tok-') as d:
            cmd = [str(torchrun), '--nproc_per_node', str(p), '--master_port', str(29500 + p * 7), __file__, '--tokenize-worker', d,
                   'tokenize', '--tokenizer', str(tk), '--data', str(images), '--batch-size', '64', '--shard-size', '1024',
                   '--out', f'{d}/tokens', '--no-progress', '--limit', str(n)]
            load0, t = os.getloadavg(), time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | dict(OMP_NUM_THREADS='1'))
            wall = time.perf_counter() - t
            if r.returncode: raise RuntimeError(r.stderr[-3000:])
            ranks = [json.loads(Path(d, f'rank{k}.json').read_text()) for k in range(p)]
            inside = max(x['tokenize_folder_s'] for x in ranks)
            out['runs'].append(dict(processes=p, wall_s=round(wall, 1), images_per_s=round(n / wall, 1),
                                    images_per_s_tokenizing=round(n / inside, 1), ranks=ranks, loadavg=[load0, os.getloadavg()]))
            print(f'{p} process(es): {n / wall:.0f} images/s end to end ({n / inside:.0f} inside tokenize_folder), '
                  f'peak RSS {[round(x["peak_rss_kib"] / 1024) for x in ranks]} MiB', flush=True)
    return out

def run(quick: bool = False, parts=('rss', 'tokenize')) -> dict:
    "Every part asked for; the dict the JSON file holds."
    import torch
    res = dict(command='OMP_NUM_THREADS=1 python benchmarks/scale_tokens.py' + (' --quick' if quick else ''), quick=quick,
               threads=int(os.environ.get('OMP_NUM_THREADS', '0')) or torch.get_num_threads(), torch=torch.__version__,
               python=platform.python_version(), cpus=os.cpu_count(), loadavg_start=os.getloadavg())
    if 'rss' in parts: res['rss'] = rss(quick)
    if 'tokenize' in parts: res['tokenize'] = tokenize(quick)
    res['loadavg_end'] = os.getloadavg()
    return res

if __name__ == '__main__':
    if sys.argv[1:2] == ['--rss-worker']:
        print(json.dumps(_rss_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))); sys.exit(0)
    if sys.argv[1:2] == ['--tokenize-worker']: _tokenize_worker(*sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true'); p.add_argument('--part', default='all', choices=['rss', 'tokenize', 'all'])
    p.add_argument('--out', default=str(OUT))
    a = p.parse_args()
    res = run(a.quick, ('rss', 'tokenize') if a.part == 'all' else (a.part,))
    res['command'] = 'OMP_NUM_THREADS=1 python benchmarks/scale_tokens.py ' + ' '.join(sys.argv[1:])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=2) + '\n')
    print(f'wrote {a.out}')
