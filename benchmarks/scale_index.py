"""The verified image index and tar shards at scale: the first index at 1 and 2 ranks, a restart on an unchanged
folder of >= 100 k files extrapolated to ImageNet's 1.28 M, and reading tar shards.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scale_index.py [--quick]

* `restart`: a synthetic folder of 100,000 small PNGs (a few encoded 32 px photo crops copied under many names, 100
  class folders) is indexed once (`FolderIndex`, every file decoded), then indexed again unchanged, three times: the
  median restart is split into listing the folder (`scan_stat`, one `stat` a file) and reading the sealed index.
  Extrapolated linearly in the number of files (both parts are one pass over the files):
  t(1.28 M) = t(n) x 1,281,167 / n. The folder is deleted afterwards.
* `first_index`: a folder of 5,000 JPEGs of 500x375 (the typical ImageNet size; a few photos encoded once at quality
  90, copied under many names: decoding is what costs), indexed from scratch with one decoding thread per rank at
  1 rank and at 2 ranks (`torchrun --nproc_per_node 2`, gloo), and at 1 rank with 2 threads for reference. Reported
  in files/s from the index's own timer (process start-up excluded); ImageNet's first index is extrapolated as
  1,281,167 / (files/s).
* `shards`: that folder packed into tar shards of 1,000 images (`pack_folder`), indexed (every sample decoded, as for
  a folder) and indexed again, then every sample read by offset (bytes only), and 500 read and centre-cropped to
  256 px beside the same 500 from the folder.

`--quick` shrinks every size (a smoke run). Results: benchmarks/results/scale_index.json (command, threads, torch
version, `os.getloadavg()` before and after each part: the machine may be shared).
"""
from __future__ import annotations
import argparse, io, json, os, platform, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'benchmarks'/'results'/'scale_index.json'
CACHE = ROOT/'.cache'/'scale_index'
IMAGENET = 1_281_167

def _copies(src: list[bytes], folder: Path, n: int, ext: str, classes: int = 100):
    "`n` files under `classes` class folders, each a copy of one of the encoded images in `src`."
    for c in range(classes): (folder/f'c{c:03d}').mkdir(parents=True, exist_ok=True)
    for i in range(n): (folder/f'c{i % classes:03d}'/f'{i:07d}{ext}').write_bytes(src[i % len(src)])

def _encoded(size, fmt: str, quality: int = 90) -> list[bytes]:
    from PIL import Image
    from coda_nb.data.photos import load_photos
    out = []
    for ph in load_photos(['astronaut', 'coffee', 'chelsea', 'rocket']):
        buf = io.BytesIO(); Image.fromarray(ph.image).convert('RGB').resize(size, Image.BICUBIC).save(buf, fmt, quality=quality)
        out.append(buf.getvalue())
    return out

def restart(n: int) -> dict:
    from coda_nb.data.image_index import FolderIndex, scan_stat, load_index
    d = Path(tempfile.mkdtemp(dir=CACHE, prefix='restart-'))
    try:
        t0 = time.time(); _copies(_encoded((32, 32), 'PNG'), d, n, '.png'); made = time.time() - t0
        first = FolderIndex(d, workers=1)
        runs = []
        for _ in range(3):
            t0 = time.time(); ix = FolderIndex(d); total = time.time() - t0
            assert ix.n_verified == 0 and ix.digest == first.digest
            t0 = time.time(); stats, _ = scan_stat(d); scan = time.time() - t0
            t0 = time.time(); load_index(ix.path, 'folder', 'decode'); read = time.time() - t0
            runs.append(dict(total_s=total, scan_s=scan, read_index_s=read))
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        return dict(n_files=n, make_folder_s=round(made, 2), first_index_s=round(first.seconds, 2),
                    first_index_files_per_s=round(n / first.seconds), index_bytes=ix.path.stat().st_size,
                    restart_runs=runs, restart_median_s=round(med['total_s'], 3), scan_median_s=round(med['scan_s'], 3),
                    read_index_median_s=round(med['read_index_s'], 3),
                    imagenet_restart_s=round(med['total_s'] * IMAGENET / n, 1),
                    formula=f'restart(1.28 M) = restart({n}) x {IMAGENET} / {n}')
    finally: shutil.rmtree(d, ignore_errors=True)

RANK_SCRIPT = '''
import json, sys, time, torch.distributed as dist
from coda_nb.data.image_index import FolderIndex
if int(sys.argv[3]) > 1: dist.init_process_group('gloo')
ix = FolderIndex(sys.argv[1], index_dir=sys.argv[2], workers=int(sys.argv[4]))
print(json.dumps(dict(seconds=ix.seconds, n_verified=ix.n_verified, files=len(ix.files), digest=ix.digest)), flush=True)
if int(sys.argv[3]) > 1: dist.destroy_process_group()
'''

def _index_run(folder: Path, ranks: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory(dir=CACHE) as t:
        script = Path(t)/'rank.py'; script.write_text(RANK_SCRIPT)
        args = [str(script), str(folder), t, str(ranks), str(threads)]
        cmd = ([sys.executable] + args if ranks == 1 else
               [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(ranks)] + args)
        load = os.getloadavg()
        r = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | dict(OMP_NUM_THREADS='1'), timeout=900)
        if r.returncode: raise RuntimeError(r.stderr[-3000:])
        out = [json.loads(l) for l in r.stdout.splitlines() if l.startswith('{')]
    s = max(o['seconds'] for o in out); n = out[0]['n_verified']
    assert len({o['digest'] for o in out}) == 1
    return dict(ranks=ranks, threads_per_rank=threads, seconds=round(s, 2), files=n, files_per_s=round(n / s, 1),
                imagenet_first_index_min=round(IMAGENET / (n / s) / 60, 1), loadavg_before=load, loadavg_after=os.getloadavg())

def first_index_and_shards(n: int, n_read: int) -> dict:
    import torch
    from coda_nb.data.datasets import ImageFolderIndex
    from coda_nb.data.tar_shards import TarShards, pack_folder
    d = CACHE/f'jpeg-{n}'
    if not (d/'done').is_file():
        shutil.rmtree(d, ignore_errors=True); _copies(_encoded((500, 375), 'JPEG'), d, n, '.jpg', classes=10); (d/'done').write_text('')
    runs = [_index_run(d, 1, 1), _index_run(d, 2, 1), _index_run(d, 1, 2)]
    first = dict(n_files=n, image='500x375 JPEG, quality 90', runs=runs,
                 speedup_2_ranks=round(runs[1]['files_per_s'] / runs[0]['files_per_s'], 2),
                 formula='first index(1.28 M) = 1,281,167 / (files/s)')
    sh = Path(tempfile.mkdtemp(dir=CACHE, prefix='shards-'))
    try:
        t0 = time.time(); rec = pack_folder(d, sh/'out', shard_size=1000); pack = time.time() - t0
        t0 = time.time(); ts = TarShards(sh/'out', 256, workers=1); idx1 = time.time() - t0
        t0 = time.time(); ts = TarShards(sh/'out', 256); idx2 = time.time() - t0
        t0 = time.time(); nbytes = sum(len(ts.read(i)) for i in range(len(ts))); raw = time.time() - t0
        fo = ImageFolderIndex(d, 256)
        assert ts.files == fo.files and ts.labels == fo.labels
        t0 = time.time(); xs = [ts[i].image for i in range(n_read)]; dec_s = time.time() - t0
        t0 = time.time(); ys = [fo[i].image for i in range(n_read)]; dec_f = time.time() - t0
        assert all(torch.equal(a, b) for a, b in zip(xs, ys))
        shards = dict(n_images=len(ts), n_shards=rec['n_shards'], pack_s=round(pack, 2), pack_images_per_s=round(len(ts) / pack),
                      first_index_s=round(idx1, 2), first_index_images_per_s=round(len(ts) / idx1),
                      restart_index_s=round(idx2, 3), read_bytes_images_per_s=round(len(ts) / raw),
                      read_bytes_mb_per_s=round(nbytes / raw / 2**20, 1),
                      decode_crop_256_images_per_s=round(n_read / dec_s, 1), folder_decode_crop_256_images_per_s=round(n_read / dec_f, 1),
                      n_decoded=n_read)
    finally: shutil.rmtree(sh, ignore_errors=True)
    return dict(first_index=first, shards=shards)

def run(quick: bool = False, parts=('restart', 'first_index')) -> dict:
    "`parts`: 'restart' and/or 'first_index' (which also measures the tar shards)."
    import torch
    CACHE.mkdir(parents=True, exist_ok=True)
    res = dict(torch=torch.__version__, python=platform.python_version(), cpus=os.cpu_count(),
               omp_num_threads=os.environ.get('OMP_NUM_THREADS'), quick=quick)
    if 'restart' in parts:
        l0 = os.getloadavg(); res['restart'] = restart(2_000 if quick else 100_000) | dict(loadavg_before=l0, loadavg_after=os.getloadavg())
    if 'first_index' in parts:
        l0 = os.getloadavg(); r = first_index_and_shards(300 if quick else 5_000, 50 if quick else 500)
        res['first_index'] = r['first_index']
        res['shards'] = r['shards'] | dict(loadavg_before=l0, loadavg_after=os.getloadavg())
    return res

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='small sizes: checks the script, not the numbers')
    p.add_argument('--parts', default='restart,first_index', help="comma-separated: restart, first_index; parts not run keep "
                   "their last results in the JSON, each with its own command and load")
    a = p.parse_args()
    t0, load0, parts = time.time(), os.getloadavg(), [s.strip() for s in a.parts.split(',') if s.strip()]
    cmd = 'OMP_NUM_THREADS=%s python benchmarks/scale_index.py%s --parts %s' % (os.environ.get('OMP_NUM_THREADS'), ' --quick' if a.quick else '', ','.join(parts))
    new = run(a.quick, parts)
    for k in ('restart', 'first_index', 'shards'):
        if k in new: new[k] = new[k] | dict(command=cmd)
    out = OUT if not a.quick else OUT.with_name('scale_index_quick.json')
    r = json.loads(out.read_text()) if out.is_file() else {}
    r |= dict(command=cmd, loadavg_start=load0, loadavg_end=os.getloadavg()) | new
    r['seconds'] = round(time.time() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True); tmp = out.with_suffix('.json.tmp'); tmp.write_text(json.dumps(r, indent=1) + '\n'); tmp.replace(out)
    print(json.dumps(r, indent=1))
