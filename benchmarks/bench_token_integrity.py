"""What verifying token shards costs: SHA-256 while reading, against reading the shards, and against one epoch of
MaskGIT-tiny training on them.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_token_integrity.py [--n 20000] [--threads 1] [--busy 0]

A token folder in CODA's MAR layout (10 levels, 680 tokens per image, V = 16384, int16 storage) is written with
`tokenize_folder` by a stand-in tokenizer that draws random indices (the format and the checks are the real ones;
only the encoder is skipped). Then, best of 3 from the page cache:
  * `read_shards` (read + SHA-256 + parse + range checks), the full path training uses;
  * SHA-256 alone over the same shard bytes (what verification adds);
  * one MaskGIT-tiny training step (batch 64), timed, giving the cost of an epoch over the folder.
`--busy K` runs K busy processes beside it (a shared machine). Results go to benchmarks/results/token_integrity.json.
"""
import argparse, hashlib, json, multiprocessing as mp, os, platform, sys, tempfile, time
from pathlib import Path

OUT = Path(__file__).resolve().parent/'results'/'token_integrity.json'
MAR = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

def _spin(stop):
    x = 0
    while not stop.is_set(): x += 1

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--n', type=int, default=20000); p.add_argument('--threads', type=int, default=1)
    p.add_argument('--busy', type=int, default=0); p.add_argument('--shard-size', type=int, default=1024)
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from coda_nb.token_kinds import TokenSpec
    from coda_nb.data.tokens import tokenize_folder, read_shards, shard_name
    from coda_nb.generators.maskgit import build_maskgit

    class RandomTokens(torch.nn.Module):
        "A stand-in tokenizer: the token protocol, random indices (no encoder)."
        token_spec = TokenSpec('index', [(s, s) for s in MAR], codebook_size=16384, image_size=16, downsample=1)
        config = dict(kind='random-tokens')
        def __init__(self): super().__init__(); self.w = torch.nn.Parameter(torch.zeros(1)); self.g = torch.Generator().manual_seed(0)
        def fingerprint(self): return dict(config_hash='random', weights_digest='random')
        def encode_indices(self, x): return [torch.randint(0, 16384, (len(x), s, s), generator=self.g) for s in MAR]

    stop = mp.Event(); busy = [mp.Process(target=_spin, args=(stop,)) for _ in range(a.busy)]
    for b in busy: b.start()
    try:
        with tempfile.TemporaryDirectory() as d:
            images = torch.zeros(a.n, 3, 16, 16)
            t = time.perf_counter(); tokenize_folder(RandomTokens(), images, d, shard_size=a.shard_size, batch_size=256, progress=False)
            write_s = time.perf_counter() - t
            files = sorted(Path(d).glob('shard-*.safetensors')); nbytes = sum(f.stat().st_size for f in files)
            def hash_all():
                for f in files: hashlib.sha256(f.read_bytes()).hexdigest()
            def best(fn, k=3):
                ts = []
                for _ in range(k): t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
                return min(ts)
            read_s, hash_s = best(lambda: read_shards(d)), best(hash_all)
        m = build_maskgit('maskgit-tiny', token_spec=RandomTokens.token_spec, num_classes=10)
        opt = torch.optim.AdamW(m.parameters(), 1e-4); B = 64
        seq, lab = torch.randint(0, 16384, (B, 680)), torch.zeros(B, dtype=torch.long)
        def step():
            loss = m.loss(seq, lab)['loss']; opt.zero_grad(); loss.backward(); opt.step()
        step(); step_s = best(step, 3)
    finally:
        stop.set()
        for b in busy: b.join()
    epoch_s = step_s * a.n / B
    res = dict(command=' '.join([Path(sys.executable).name] + sys.argv), threads=a.threads, busy_processes=a.busy,
               n_images=a.n, tokens_per_image=680, shards=len(files), shard_mib=nbytes / 2**20, write_s=write_s,
               read_shards_s=read_s, sha256_s=hash_s, sha256_share_of_read=hash_s / read_s,
               maskgit_tiny_step_s=step_s, maskgit_tiny_epoch_s=epoch_s, sha256_share_of_epoch=hash_s / epoch_s,
               python=platform.python_version(), torch=torch.__version__, machine=platform.machine())
    rows = json.loads(OUT.read_text()) if OUT.is_file() else []
    rows = [r for r in rows if (r['threads'], r['busy_processes'], r['n_images']) != (a.threads, a.busy, a.n)] + [res]
    OUT.parent.mkdir(exist_ok=True); tmp = OUT.with_suffix('.tmp'); tmp.write_text(json.dumps(rows, indent=2)); tmp.replace(OUT)
    print(json.dumps(res, indent=2))

if __name__ == '__main__': main()
