"""Thread matrix of the attention quantizer at FLUX-65536: 1 and 2 threads, idle and beside one busy process.

    .venv/bin/python benchmarks/scale_threads.py [--quick]

Two measurements, each at every cell of {1, 2 threads} x {idle, busy}:
  * `train`: one quantizer training step (multi-scale forward on a random latent, seed 1, + `mse(f_hat, f) + quant_loss
    + 0.05 entropy_loss` + backward; quantizer alone, batch 1, V = 65,536), on three paths of ONE quantizer (seed 0):
    `tiled` (the default tiles, `tile_sizes`), `tiled_before` (the earlier rule: 2^21 logits per tile at any thread count,
    i.e. 32 tokens x 65,536 codes) and `materialising` (`tiled=False`, the authors' N x V tensors);
  * `encode`: `tok.encode_indices(x)` of the FLUX-65536 tokenizer (random VAE of the real architecture, one 256-px photo)
    against `tok.vae.encode(x)` alone, with the default inference tiles (`encode_indices`: `tile_budget(inference=True)`),
    with the earlier fixed 1024 x 4096 tiles (`encode_indices_before`) and with whole-row tiles of 2^21 and 2^25 logits
    (`encode_indices_b21`, `_b25`: the one-thread rule and the earlier many-thread rule) where they differ from the default.
Every cell runs in its own subprocess with `OMP_NUM_THREADS` / `torch.set_num_threads` = its thread count. Within a cell
the paths are interleaved (A/B/C, then C/B/A, ...) and each path's figure is the median of the repeats, so that the
paths compare under the same noise; ratios are also given as the median of the per-repeat ratios. `os.getloadavg()` is
recorded before every timed pass. "idle" means no load added by this script (the machine may run other work: see the
load averages); "busy" means one extra process spinning in a pure-Python loop for the whole cell, started and stopped
by this script. Results go to benchmarks/results/scale_threads.json (`--merge --kinds encode`: re-measure one kind, keep the other's cells;
`--quick`: a small codebook, one repeat, not
written unless `--out` is given; `--repeats`: timed rounds per cell, default 3, about 6 minutes on a quiet machine).
"""
import argparse, json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

OUT = Path(__file__).resolve().parent/'results'/'scale_threads.json'
SCALES = [1, 2, 3, 4, 6, 9, 13, 18, 24, 32]
CELLS = [(1, 'idle'), (2, 'idle'), (1, 'busy'), (2, 'busy')]
BEFORE_TRAIN_BUDGET, BEFORE_INFER_CHUNKS = 2**21, (1024, 4096)
IDLE_NOTE = ('"idle" means no load added by the benchmark; other work on the machine is not controlled and shows in the '
             'load averages recorded before every pass. "busy" adds one process spinning in a pure-Python loop.')


def _interleave(arms, fns, repeats):
    "Run `fns[arm]()` for every arm, `repeats` rounds, alternating the order; times and load averages per arm."
    import torch
    times, loads = {a: [] for a in arms}, {a: [] for a in arms}
    for r in range(repeats):
        for a in (arms if r % 2 == 0 else arms[::-1]):
            loads[a].append(os.getloadavg())
            t = time.perf_counter(); fns[a](); times[a].append(time.perf_counter() - t)
    return times, loads


def _summary(times, loads, base, others):
    out = {a: dict(median_s=statistics.median(t), min_s=min(t), times_s=t, loadavg_before=loads[a]) for a, t in times.items()}
    for o in others:
        out[f'{o}_over_{base}'] = dict(ratio_of_medians=out[o]['median_s'] / out[base]['median_s'],
                                       median_of_ratios=statistics.median(x / y for x, y in zip(times[o], times[base])))
    return out


def worker_train(threads, repeats, V):
    import torch, torch.nn.functional as F
    torch.set_num_threads(threads)
    from coda_nb.quantizers.multiscale import MultiScaleResidualQuantizer
    from coda_nb.quantizers.tiled import tile_sizes
    torch.manual_seed(0)
    msq = MultiScaleResidualQuantizer(16, V, SCALES, attn_dim=32).train()
    aq = msq.quantizers[0]
    f0 = torch.randn(1, 16, 32, 32, generator=torch.Generator().manual_seed(1))
    settings = dict(tiled=(True, (None, None)), tiled_before=(True, (max(1, BEFORE_TRAIN_BUDGET // V), None)),
                    materialising=(False, (None, None)))
    def step(arm):
        aq.tiled, aq.train_chunks = settings[arm]
        msq.zero_grad(set_to_none=True)
        f = f0.clone().requires_grad_(True)
        o = msq(f, track_usage=False)
        loss = F.mse_loss(o.f_hat, f) + o.quant_loss + 0.05 * o.entropy_loss
        loss.backward()
        return [i.clone() for i in o.indices], loss.item(), f.grad.clone()
    warm = {a: step(a) for a in settings}                      # warm-up, and the exactness check of this cell
    (it, lt, gt), (im, lm, gm) = warm['tiled'], warm['materialising']
    check = dict(indices_identical=all(bool(torch.equal(a, b)) for a, b in zip(it, im)), loss_abs_diff=abs(lt - lm),
                 latent_grad_max_rel_diff=float((gt - gm).abs().max() / gm.abs().max()))
    arms = list(settings)
    times, loads = _interleave(arms, {a: (lambda a=a: step(a)) for a in arms}, repeats)
    N = [s * s for s in SCALES]
    return dict(threads=torch.get_num_threads(), codebook_size=V, tokens=sum(N), check=check,
                tile_sizes={'tiled': {n: tile_sizes(n, V) for n in N}, 'tiled_before': {n: tile_sizes(n, V, budget=BEFORE_TRAIN_BUDGET) for n in N}},
                paths=_summary(times, loads, 'tiled', ['tiled_before', 'materialising']))


def worker_encode(threads, repeats, V):
    import torch
    torch.set_num_threads(threads)
    from coda_nb.tokenizers.coda import build_tokenizer
    from coda_nb.vae.autoencoder_kl import load_diffusers_vae, FLUX_VAE_CONFIG, FLUX_LORA_TARGETS
    from coda_nb.data.photos import photo_batch
    from coda_nb.quantizers.tiled import tile_sizes, tile_budget
    vae = load_diffusers_vae(config=FLUX_VAE_CONFIG, default_lora_targets=FLUX_LORA_TARGETS)
    tok = build_tokenizer('coda-flux-65536', vae=vae, **({} if V == 65536 else dict(codebook_size=V))).eval()
    aq = tok.quantizer.quantizers[0]
    x = photo_batch(1, tok.image_size, split='test')
    # the default inference tiles, the earlier fixed 1024 x 4096 tiles, and whole-row tiles of 2^21 and 2^25 logits (the
    # one-thread rule and the earlier many-thread rule) where they differ from the default at this thread count
    chunks = dict(encode_indices=(None, None), encode_indices_before=BEFORE_INFER_CHUNKS)
    for b in (21, 25):
        if 2**b != tile_budget(threads=threads, inference=True): chunks[f'encode_indices_b{b}'] = (2**b // V, None)
    def enc(arm):
        aq.chunks = chunks[arm]
        for q in tok.quantizer.quantizers: q.chunks = chunks[arm]
        return tok.encode_indices(x)
    fns = dict(vae_encode=lambda: tok.vae.encode(x)) | {arm: (lambda arm=arm: enc(arm)) for arm in chunks}
    with torch.no_grad():
        ref = enc('encode_indices'); fns['vae_encode']()
        check = dict(indices_identical_to_before=all(all(bool(torch.equal(u, w)) for u, w in zip(ref, enc(a))) for a in chunks))
        arms = list(fns)
        times, loads = _interleave(arms, fns, repeats)
    N = [h * w for h, w in tok.quantizer.scales]
    return dict(threads=torch.get_num_threads(), codebook_size=tok.quantizer.codebook_size, check=check,
                tile_sizes={'encode_indices': {n: tile_sizes(n, V, inference=True) for n in N}, 'encode_indices_before': BEFORE_INFER_CHUNKS}
                | {a: [c[0], V] for a, c in chunks.items() if a.startswith('encode_indices_b')},
                paths=_summary(times, loads, 'vae_encode', [a for a in chunks]))


def _cell(kind, threads, load, repeats, V):
    "One (measurement, threads, load) cell in a fresh subprocess, with the busy process around it when asked."
    env = os.environ | dict(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    busy = subprocess.Popen([sys.executable, '-c', 'while True: pass']) if load == 'busy' else None
    try:
        if busy: time.sleep(1.0)                                 # let the spinner take its core
        la = os.getloadavg(); t0 = time.perf_counter()
        cmd = [sys.executable, __file__, '--worker', kind, str(threads), str(repeats), str(V)]
        r = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
        res = json.loads(r.stdout.strip().splitlines()[-1])
        busy_alive = busy.poll() is None if busy else None
    finally:
        if busy: busy.terminate(); busy.wait()
    return res | dict(load=load, loadavg_before_cell=la, loadavg_after_cell=os.getloadavg(), wall_s=time.perf_counter() - t0,
                      busy_process_ran_throughout=busy_alive)


def _write(res, out):
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp'); tmp.write_text(json.dumps(res, indent=2)); os.replace(tmp, out)


def run(quick=False, repeats=None, out=None, kinds=('train', 'encode'), note=None, merge=False) -> dict:
    """The whole matrix (`quick`: V = 4,096 and one repeat, a smoke run; `repeats`: timed rounds per cell); returns the
    results dict, and with `out` also writes it there after every cell (`complete` says whether all cells ran).
    `kinds`: which measurements (default both); `note`: a remark stored with the results; `merge`: keep the other
    kinds' cells from the JSON already at `out` (recorded under `earlier`, with that run's command and load)."""
    import torch
    V, rep_train, rep_enc = (4096, 1, 1) if quick else (65536, 3, 3)
    if repeats: rep_train = rep_enc = repeats
    res = dict(what='attention quantizer, FLUX-65536 scales and tokenizer, V = %d: training step and encode_indices, thread matrix' % V,
               command=' '.join([Path(sys.executable).name, *sys.argv]), quick=quick, torch=torch.__version__,
               python=platform.python_version(), machine=platform.machine(), cpu_count=os.cpu_count(), device='cpu',
               idle_means=IDLE_NOTE, repeats=dict(train=rep_train, encode=rep_enc),
               before=dict(train_tile_budget=BEFORE_TRAIN_BUDGET, infer_chunks=BEFORE_INFER_CHUNKS),
               loadavg_start=os.getloadavg(), complete=False, kinds=list(kinds), note=note, train={}, encode={})
    if merge and out and Path(out).is_file():
        prev = json.loads(Path(out).read_text())
        keep = [k for k in ('train', 'encode') if k not in kinds and prev.get(k)]
        for k in keep: res[k], res['repeats'][k] = prev[k], (prev.get('repeats') or {}).get(k)
        res['earlier'] = dict(kinds=keep, command=prev.get('command'), note=prev.get('note'), repeats=prev.get('repeats'),
                              loadavg_start=prev.get('loadavg_start'), loadavg_end=prev.get('loadavg_end'))
    t0 = time.perf_counter()
    for kind, reps in [(k, r) for k, r in [('train', rep_train), ('encode', rep_enc)] if k in kinds]:
        for threads, load in CELLS:
            c = _cell(kind, threads, load, reps, V)
            res[kind][f'{threads}t-{load}'] = c
            p = c['paths']
            if kind == 'train':
                msg = (f"tiled {p['tiled']['median_s']:.3f} s, before {p['tiled_before']['median_s']:.3f} s, "
                       f"materialising {p['materialising']['median_s']:.3f} s")
            else:
                msg = f"vae {p['vae_encode']['median_s']:.3f} s, " + ', '.join(
                    f"{k[:-len('_over_vae_encode')]} +{100 * (v['median_of_ratios'] - 1):.1f} %" for k, v in p.items() if k.endswith('_over_vae_encode'))
            print(f"{kind:6s} {threads} thread(s) {load:4s}: {msg}  (load {c['loadavg_before_cell'][0]:.2f})", flush=True)
            if out: _write(res | dict(wall_s=time.perf_counter() - t0), Path(out))
    res |= dict(complete=True, loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t0)
    if out: _write(res, Path(out))
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true'); p.add_argument('--out', default=None)
    p.add_argument('--repeats', type=int, default=None, help='timed rounds per cell (default 3; 1 with --quick)')
    p.add_argument('--kinds', nargs='*', default=['train', 'encode'], choices=['train', 'encode'])
    p.add_argument('--note', default=None, help='a remark stored in the JSON')
    p.add_argument('--merge', action='store_true', help="keep the cells of the kinds not run from the JSON at --out")
    p.add_argument('--worker', nargs=4, metavar=('KIND', 'THREADS', 'REPEATS', 'V'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        kind, th, rep, V = a.worker
        print(json.dumps(dict(train=worker_train, encode=worker_encode)[kind](int(th), int(rep), int(V)))); return
    out = Path(a.out) if a.out else (None if a.quick else OUT)
    run(a.quick, a.repeats, out, a.kinds, a.note, a.merge)
    if out: print(f'wrote {out}')


if __name__ == '__main__': main()
