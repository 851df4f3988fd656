"""Quantizer inference benchmark: the chunked fp32 search of `coda_nb.quantizers.search` vs a straightforward full-softmax
implementation of the same CODA quantizer (full `N x V` logits, softmax, argmax, one-hot @ values at every level).

    .venv/bin/python benchmarks/bench_quantizer.py [--batch 2] [--repeats 3] [--threads 1]

Every (config, implementation) pair runs in its own subprocess: after a warm-up on a small codebook (which pages in
kernel code), peak memory is the growth of the process's maximum resident set size (`ru_maxrss`) over its resident
size just before the first full-size forward, so the numbers of one run cannot leak into the other. Throughput is tokens/s of the best of `--repeats` timed forwards after that one.
Both implementations get the same randomly initialised quantizer (seed 0) and input (seed 1); the parent checks that
their indices are identical at every level. Results go to benchmarks/results/quantizer.json.
"""
import argparse, json, math, os, platform, resource, subprocess, sys, time
from pathlib import Path

CONFIGS = {
    'coda-flux-65536': dict(scales=[1, 2, 3, 4, 6, 9, 13, 18, 24, 32], codebook_size=65536, dim=16, attn_dim=32),
    'coda-mar-16384': dict(scales=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16], codebook_size=16384, dim=16, attn_dim=32),
}
OUT = Path(__file__).resolve().parent/'results'/'quantizer.json'


def full_softmax_encode(msq, f):
    "Reference: what a direct implementation (and the authors' release) computes, with the whole softmax per level."
    import torch, torch.nn.functional as F
    aq = msq.quantizers[0]
    with torch.no_grad():
        C = aq.codebooks.weight
        k, v = aq.attn.norm_k(aq.attn.to_k(C)), aq.attn.to_v(C)
        B, D, H, W = f.shape
        f_hat, r, indices = torch.zeros_like(f), f, []
        for s in msq.scales:
            fd = F.interpolate(r, size=s, mode='area')
            x = fd.permute(0, 2, 3, 1).reshape(-1, D)
            logits = aq.attn.norm_q(aq.attn.to_q(x)) @ k.t() / math.sqrt(aq.attn_dim)
            soft = logits.softmax(-1)
            idx = soft.argmax(-1)
            z = F.one_hot(idx, aq.codebook_size).to(soft) @ v
            h = F.interpolate(z.view(B, *s, D).permute(0, 3, 1, 2), size=(H, W), mode='bicubic', align_corners=False)
            f_hat, r = f_hat + h, r - h
            indices.append(idx.view(B, *s))
    return indices


def current_rss_kb():
    with open('/proc/self/statm') as fh: return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


def worker(name, impl, batch, repeats, threads, idx_path):
    import torch
    from coda_nb.quantizers.multiscale import MultiScaleResidualQuantizer
    torch.set_num_threads(threads)
    cfg = CONFIGS[name]
    torch.manual_seed(0)
    msq = MultiScaleResidualQuantizer(cfg['dim'], cfg['codebook_size'], cfg['scales'], attn_dim=cfg['attn_dim']).eval()
    hw = max(cfg['scales'])
    f = torch.randn(batch, cfg['dim'], hw, hw, generator=torch.Generator().manual_seed(1))
    run = (lambda m, x: m.encode(x)) if impl == 'chunked' else full_softmax_encode
    # warm-up on a small codebook: pages in the kernels' code and thread pools so they don't count as peak memory
    small = MultiScaleResidualQuantizer(cfg['dim'], 1024, cfg['scales'], attn_dim=cfg['attn_dim']).eval()
    run(small, f[:1])
    rss0 = current_rss_kb()
    t = time.perf_counter(); indices = run(msq, f); first = time.perf_counter() - t
    peak_kb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0)
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); run(msq, f); times.append(time.perf_counter() - t)
    torch.save([i.cpu() for i in indices], idx_path)
    tokens = batch * msq.tokens_per_image
    return dict(impl=impl, tokens=tokens, first_s=first, best_s=min(times), times_s=times,
                tokens_per_s=tokens / min(times), peak_mem_mib=peak_kb / 1024)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch', type=int, default=2); p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=1); p.add_argument('--configs', nargs='*', default=list(CONFIGS))
    p.add_argument('--worker', nargs=3, metavar=('CONFIG', 'IMPL', 'IDX_PATH'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], a.worker[1], a.batch, a.repeats, a.threads, a.worker[2]))); return
    import torch, tempfile
    results = dict(batch=a.batch, repeats=a.repeats, threads=a.threads, torch=torch.__version__,
                   machine=platform.machine(), cpu_count=os.cpu_count(), device='cpu', configs={})
    with tempfile.TemporaryDirectory() as d:
        for name in a.configs:
            runs = {}
            for impl in ['chunked', 'full_softmax']:
                idx_path = str(Path(d)/f'{name}-{impl}.pt')
                cmd = [sys.executable, __file__, '--batch', str(a.batch), '--repeats', str(a.repeats),
                       '--threads', str(a.threads), '--worker', name, impl, idx_path]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs[impl] = json.loads(out.strip().splitlines()[-1])
                runs[impl]['indices'] = torch.load(idx_path, weights_only=True)
                print(f"{name:16s} {impl:12s} {runs[impl]['tokens_per_s']:10.0f} tokens/s  "
                      f"peak {runs[impl]['peak_mem_mib']:8.1f} MiB", flush=True)
            ci, fi = runs['chunked'].pop('indices'), runs['full_softmax'].pop('indices')
            same = [bool(torch.equal(x, y)) for x, y in zip(ci, fi)]
            c, fs = runs['chunked'], runs['full_softmax']
            results['configs'][name] = dict(CONFIGS[name], tokens_per_image=c['tokens'] // a.batch, chunked=c, full_softmax=fs,
                indices_identical=all(same), indices_identical_per_level=same,
                speedup=c['tokens_per_s'] / fs['tokens_per_s'],
                memory_ratio=c['peak_mem_mib'] / max(fs['peak_mem_mib'], 1e-9))
            r = results['configs'][name]
            print(f"{name:16s} speed-up {r['speedup']:.2f}x, memory ratio {r['memory_ratio']:.3f}, "
                  f"indices identical: {r['indices_identical']}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f'wrote {OUT}')


if __name__ == '__main__': main()
