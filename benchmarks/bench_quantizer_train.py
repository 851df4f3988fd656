"""Quantizer training-step benchmark: the tiled autograd Function (`AttentionQuantizer(tiled=True)`, the default) vs the
materialising path (`tiled=False`: full `N x V` logits, softmax, one-hot and entropy tensors at every level, kept for
backward, as in the authors' release).

    .venv/bin/python benchmarks/bench_quantizer_train.py [--batches 1 2 4] [--repeats 3] [--threads 1]

One step = the multi-scale quantizer's forward on a random latent (seed 1) + `L = mse(f_hat, f) + quant_loss +
0.05 * entropy_loss` + `L.backward()`, the quantizer alone (no VAE), with every quantizer parameter and the latent
requiring grad. Every (config, path, batch) runs in its own subprocess with `OMP_NUM_THREADS` / `torch.set_num_threads`
= `--threads`: after a warm-up step on a 1024-code quantizer (pages in the kernels), peak memory is the growth of the
process's maximum resident set size (`ru_maxrss`) over its resident size just before the first full-size step, and the
step time is the best of `--repeats` steps after that one (the first is reported separately). Both paths get the same
quantizer (seed 0) and latent; the parent checks identical indices at every level and compares losses and gradients.
A materialising run whose predicted peak (linear in the batch, from the smaller batches) exceeds 70% of MemAvailable
is skipped and recorded as such. Results go to benchmarks/results/quantizer_train.json.
"""
import argparse, json, os, platform, resource, subprocess, sys, tempfile, time
from pathlib import Path

CONFIGS = {
    'coda-flux-65536': dict(scales=[1, 2, 3, 4, 6, 9, 13, 18, 24, 32], codebook_size=65536, dim=16, attn_dim=32),
    'coda-mar-16384': dict(scales=[1, 2, 3, 4, 5, 6, 8, 10, 13, 16], codebook_size=16384, dim=16, attn_dim=32),
}
IMPLS = ['tiled', 'materialising']
OUT = Path(__file__).resolve().parent/'results'/'quantizer_train.json'


def current_rss_kb():
    with open('/proc/self/statm') as fh: return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


def mem_available_mib():
    for line in open('/proc/meminfo'):
        if line.startswith('MemAvailable'): return int(line.split()[1]) / 1024
    return float('inf')


def worker(name, impl, batch, repeats, threads, out_path):
    import torch, torch.nn.functional as F
    from coda_nb.quantizers.multiscale import MultiScaleResidualQuantizer
    torch.set_num_threads(threads)
    cfg = CONFIGS[name]
    tiled = impl == 'tiled'
    def build(V):
        torch.manual_seed(0)
        return MultiScaleResidualQuantizer(cfg['dim'], V, cfg['scales'], attn_dim=cfg['attn_dim'], tiled=tiled).train()
    hw = max(cfg['scales'])
    f0 = torch.randn(batch, cfg['dim'], hw, hw, generator=torch.Generator().manual_seed(1))
    def step(m):
        m.zero_grad(set_to_none=True)
        f = f0.clone().requires_grad_(True)
        o = m(f)
        loss = F.mse_loss(o.f_hat, f) + o.quant_loss + 0.05 * o.entropy_loss
        loss.backward()
        return o, loss, f.grad
    step(build(1024))                                                # warm-up: kernels and thread pools
    msq = build(cfg['codebook_size'])
    rss0 = current_rss_kb()
    t = time.perf_counter(); o, loss, gf = step(msq); first = time.perf_counter() - t
    peak_kb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0)
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); step(msq); times.append(time.perf_counter() - t)
    torch.save(dict(indices=[i for i in o.indices], loss=loss.detach(), quant=o.quant_loss.detach(), entropy=o.entropy_loss.detach(),
                    grads={'f': gf} | {n: p.grad for n, p in msq.quantizers[0].named_parameters()}), out_path)
    return dict(impl=impl, batch=batch, tokens=batch * msq.tokens_per_image, first_s=first, best_s=min(times), times_s=times,
                peak_mem_mib=peak_kb / 1024, rss_before_mib=rss0 / 1024, loss=loss.item())


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batches', type=int, nargs='*', default=[1, 2, 4]); p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=1); p.add_argument('--configs', nargs='*', default=list(CONFIGS))
    p.add_argument('--worker', nargs=4, metavar=('CONFIG', 'IMPL', 'BATCH', 'OUT'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        n, impl, b, out = a.worker
        print(json.dumps(worker(n, impl, int(b), a.repeats, a.threads, out))); return
    import torch
    import coda_nb
    results = dict(what='one quantizer training step (forward + backward), quantizer only', repeats=a.repeats, threads=a.threads,
                   omp_num_threads=str(a.threads), torch=torch.__version__, python=platform.python_version(),
                   coda_nb=getattr(coda_nb, '__version__', None), machine=platform.machine(), cpu_count=os.cpu_count(),
                   device='cpu', command=' '.join([Path(sys.executable).name, *sys.argv]), loadavg_start=os.getloadavg(),
                   configs={})
    t0 = time.perf_counter()
    env = os.environ | dict(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory() as d:
        for name in a.configs:
            runs = {impl: {} for impl in IMPLS}
            for b in a.batches:                  # the two paths of one batch run back to back, under similar load
                for impl in IMPLS:
                    prev = runs[impl]
                    if impl == 'materialising' and prev:
                        bmax = max(prev); pred = prev[bmax]['peak_mem_mib'] * b / bmax + prev[bmax]['rss_before_mib']
                        if pred > 0.7 * mem_available_mib():
                            runs[impl][b] = dict(skipped=f'predicted peak {pred:.0f} MiB > 70% of MemAvailable {mem_available_mib():.0f} MiB')
                            print(f"{name:16s} {impl:13s} batch {b}: skipped ({runs[impl][b]['skipped']})", flush=True); continue
                    out = str(Path(d)/f'{name}-{impl}-{b}.pt')
                    la = os.getloadavg()
                    cmd = [sys.executable, __file__, '--repeats', str(a.repeats), '--threads', str(a.threads), '--worker', name, impl, str(b), out]
                    r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1])
                    runs[impl][b] = r | dict(loadavg_before=la, loadavg_after=os.getloadavg(), out=out)
                    print(f"{name:16s} {impl:13s} batch {b}: step {r['best_s']:7.3f} s (first {r['first_s']:.3f} s), "
                          f"peak +{r['peak_mem_mib']:8.1f} MiB, load {la[0]:.2f}", flush=True)
            cmp = {}
            for b in a.batches:
                t, m = runs['tiled'].get(b, {}), runs['materialising'].get(b, {})
                if 'out' not in t or 'out' not in m: continue
                T, M = torch.load(t['out'], weights_only=True), torch.load(m['out'], weights_only=True)
                cmp[b] = dict(speedup=m['best_s'] / t['best_s'], memory_ratio=t['peak_mem_mib'] / max(m['peak_mem_mib'], 1e-9),
                              indices_identical=all(bool(torch.equal(x, y)) for x, y in zip(T['indices'], M['indices'])),
                              loss_abs_diff=float((T['loss'] - M['loss']).abs()),
                              grad_max_rel_diff={k: float((T['grads'][k] - M['grads'][k]).abs().max() / M['grads'][k].abs().max())
                                                 for k in M['grads']})
                print(f"{name:16s} batch {b}: speed-up {cmp[b]['speedup']:.2f}x, memory ratio {cmp[b]['memory_ratio']:.3f}, "
                      f"indices identical {cmp[b]['indices_identical']}, max grad rel. diff {max(cmp[b]['grad_max_rel_diff'].values()):.1e}", flush=True)
            for impl in IMPLS:
                for r in runs[impl].values(): r.pop('out', None)
            results['configs'][name] = dict(CONFIGS[name], tokens_per_image=sum(s * s for s in CONFIGS[name]['scales']),
                                            tiled=runs['tiled'], materialising=runs['materialising'], comparison=cmp)
    results |= dict(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f'wrote {OUT}')


if __name__ == '__main__': main()
