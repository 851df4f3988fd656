"""MaskGIT sampling and training throughput of the generator presets on this CPU (random weights: speed, not quality).

    .venv/bin/python benchmarks/bench_sampling.py [--threads 1] [--steps 8] [--batch 4]
    .venv/bin/python benchmarks/bench_sampling.py --batches 1 8 32 --steps 2 --presets maskgit-l   # per-step, by batch
    python benchmarks/bench_sampling.py --batches 1 8 32 128 --steps 8 --presets maskgit-l --device cuda --dtype bfloat16

For each preset, in its own subprocess, over CODA's MAR token layout (10 levels, 680 tokens, V = 16384, 1000 classes):
  * sampling: `Sampler.sample` with an 8-step cosine schedule and guidance (one batched forward of 2B rows per step);
    images/s counts token sequences (the tokenizer's decoder is not included), and the share of the time spent outside
    the transformer's forward is `1 - Sampler.forward_s / total` (target: at most 20 %);
  * training: forward + backward + AdamW step on batches of masked sequences (masked-token cross-entropy), tokens/s.
The first sampling call and the first training step are warm-ups and are not timed. `maskgit-l` and `maskgit-b` use
batch 1 for sampling and training (a CPU minute per image). Results go to benchmarks/results/sampling.json.

With `--batches`, each preset samples (no training) once per batch size in one subprocess, after a one-step warm-up
at batch 1, and the sampler's own timers give every decoding step's wall time and forward time
(`Sampler(timing=True)`: on CUDA it synchronises around each forward). A step's overhead is
`1 - forward / total`: masking, sampling the tokens, the confidences and the top-k, outside the transformer's forward
(which includes the embedding and the head at the masked positions). Results go to benchmarks/results/sampling_batches.json.
With `--device cuda` the model runs on the GPU (weights cast to `--dtype`, e.g. bfloat16; the sampler's logits, log p
and confidences stay fp32), each batch size is sampled `--repeats` times after a warm-up at that batch (the first call
of a shape pays for the kernels' selection), and the results go to benchmarks/results/sampling_cuda.json.
"""
import argparse, json, os, platform, subprocess, sys, time
from pathlib import Path

OUT = Path(__file__).resolve().parent/'results'/'sampling.json'
OUT_BATCHES = OUT.with_name('sampling_batches.json')
PRESETS = ['maskgit-tiny', 'maskgit-s', 'maskgit-b', 'maskgit-l']
MAR = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


def worker(preset, steps, batch, threads):
    import torch
    torch.set_num_threads(threads)
    from coda_nb.tokenizers.protocol import TokenSpec
    from coda_nb.generators.maskgit import build_maskgit
    from coda_nb.generators.schedules import SamplingSchedule, random_mask
    from coda_nb.generators.sampler import Sampler
    import torch.nn.functional as F
    if preset in ('maskgit-b', 'maskgit-l'): batch = 1
    spec = TokenSpec('index', [(s, s) for s in MAR], codebook_size=16384)
    model = build_maskgit(preset, spec, num_classes=1000).eval()
    params = sum(p.numel() for p in model.parameters())
    smp = Sampler(model, SamplingSchedule.make(model.L, steps, 'cosine', guidance=2.0))
    labels = torch.arange(batch)
    smp.sample(labels, seed=0)                                    # warm-up
    smp.forward_s = 0.0
    t = time.perf_counter(); smp.sample(labels, seed=1); total = time.perf_counter() - t
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 16384, (batch, model.L), generator=g)
    def train_step():
        mask = random_mask(batch, model.L, 'beta', g)
        loss = F.cross_entropy(model(x, mask, labels)[mask], x[mask], label_smoothing=0.1)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    train_step()
    t = time.perf_counter(); n_train = 2
    for _ in range(n_train): train_step()
    train_s = (time.perf_counter() - t) / n_train
    return dict(preset=preset, params=params, tokens=model.L, batch=batch, steps=steps, sample_s=total,
                images_per_s=batch / total, forward_s=smp.forward_s, outside_forward_share=1 - smp.forward_s / total,
                train_step_s=train_s, train_tokens_per_s=batch * model.L / train_s)


def batches_worker(preset, steps, batches, threads, guidance, device='cpu', dtype='float32', repeats=1):
    "Per-step wall and forward time of `Sampler.sample` at each batch size, for one preset (one process, one model)."
    import torch
    torch.set_num_threads(threads)
    dev, dt = torch.device(device), getattr(torch, dtype)
    from coda_nb.tokenizers.protocol import TokenSpec
    from coda_nb.generators.maskgit import build_maskgit
    from coda_nb.generators.schedules import SamplingSchedule
    from coda_nb.generators.sampler import Sampler
    spec = TokenSpec('index', [(s, s) for s in MAR], codebook_size=16384)
    model = build_maskgit(preset, spec, num_classes=1000).eval().to(dev, dt)
    sched = SamplingSchedule.make(model.L, steps, 'cosine', guidance=guidance)
    Sampler(model, SamplingSchedule.make(model.L, 1, 'cosine', guidance=guidance)).sample(torch.arange(1), seed=0)   # warm-up
    out = dict(preset=preset, params=sum(p.numel() for p in model.parameters()), tokens=model.L, steps=steps,
               masked_after_each_step=sched.masked, device=device, dtype=dtype, batches={})
    if dev.type == 'cuda': out['gpu'] = torch.cuda.get_device_name(dev)
    for b in batches:
        smp = Sampler(model, sched, timing=True)
        if dev.type == 'cuda': smp.sample(torch.arange(b) % 1000, seed=0)   # warm-up at this shape
        la = os.getloadavg()
        runs, best = [], None
        for r in range(repeats):
            t = time.perf_counter(); smp.sample(torch.arange(b) % 1000, seed=1 + r); runs.append(time.perf_counter() - t)
            if runs[-1] == min(runs): best = (list(smp.step_s), list(smp.step_forward_s))
        total = min(runs)                                                    # the fastest repeat, and its step timers
        smp.step_s, smp.step_forward_s = best
        untimed = None
        if dev.type == 'cuda':                                               # no syncs around the forwards: the GPU runs ahead
            free = Sampler(model, sched)
            torch.cuda.synchronize(dev); t = time.perf_counter()
            for r in range(repeats): free.sample(torch.arange(b) % 1000, seed=1 + r)
            torch.cuda.synchronize(dev); untimed = (time.perf_counter() - t) / repeats
        per = [dict(total_s=a, forward_s=f, overhead=1 - f / a) for a, f in zip(smp.step_s, smp.step_forward_s)]
        out['batches'][str(b)] = dict(batch=b, rows_per_forward=b * (2 if guidance else 1), sample_s=total, images_per_s=b / total,
                                      total_s_per_step=sum(smp.step_s) / steps, forward_s_per_step=sum(smp.step_forward_s) / steps,
                                      overhead=1 - sum(smp.step_forward_s) / sum(smp.step_s), max_step_overhead=max(p['overhead'] for p in per),
                                      per_step=per, repeats_s=runs, untimed_s=untimed, images_per_s_untimed=b / untimed if untimed else None,
                                      peak_mem_gb=torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == 'cuda' else None, loadavg_before=la, loadavg_after=os.getloadavg())
        print(json.dumps(dict(batch=b, **{k: out['batches'][str(b)][k] for k in ('total_s_per_step', 'forward_s_per_step', 'overhead')})),
              file=sys.stderr, flush=True)
    return out


def main_batches(a):
    import torch
    res = dict(command='python benchmarks/bench_sampling.py ' + ' '.join(sys.argv[1:]), threads=a.threads, torch=torch.__version__,
               os=f'{platform.system()} {platform.release()}', machine=platform.machine(), cpu_count=os.cpu_count(),
               loadavg_start=os.getloadavg(), tokens='CODA MAR layout, 680 tokens, V=16384, 1000 classes, random weights',
               guidance=f'w={a.guidance}, batched cond+uncond (2B rows per forward)' if a.guidance else 'none (B rows per forward)',
               schedule=f'{a.steps} cosine steps', device=a.device, dtype=a.dtype, repeats=a.repeats, configs={})
    if a.device == 'cpu': res['cuda'] = 'not measured here: see sampling_cuda.json (--device cuda)'
    else: res['note'] = ('token sequences only (no VAE decoding); random weights; the published speeds in the README are '
                         'images/s on other GPUs and precisions, with decoding, so they are a scale, not a like-for-like race')
    for preset in a.presets:
        env = os.environ | dict(OMP_NUM_THREADS=str(a.threads))
        r = subprocess.run([sys.executable, __file__, '--worker', preset, '--threads', str(a.threads), '--steps', str(a.steps),
                            '--guidance', str(a.guidance), '--device', a.device, '--dtype', a.dtype, '--repeats', str(a.repeats),
                            '--batches', *map(str, a.batches)], stdout=subprocess.PIPE, text=True, env=env)
        if r.returncode: raise SystemExit(f'{preset} failed (exit {r.returncode})')
        res['configs'][preset] = c = json.loads(r.stdout.strip().splitlines()[-1])
        for b in c['batches'].values():
            print(f"{preset:11s} batch {b['batch']:3d}: {b['total_s_per_step']:8.2f} s/step, forward {b['forward_s_per_step']:8.2f} s/step, "
                  f"outside forward {100 * b['overhead']:.2f} % (worst step {100 * b['max_step_overhead']:.2f} %), {b['images_per_s']:.4f} images/s", flush=True)
    res['loadavg_end'] = os.getloadavg()
    out = a.out or (OUT_BATCHES if a.device == 'cpu' else OUT.with_name('sampling_cuda.json'))
    out = Path(out); out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix('.tmp'); tmp.write_text(json.dumps(res, indent=2)); os.replace(tmp, out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--threads', type=int, default=1); p.add_argument('--steps', type=int, default=8)
    p.add_argument('--batch', type=int, default=4); p.add_argument('--presets', nargs='*', default=PRESETS)
    p.add_argument('--batches', type=int, nargs='*', default=None, help='per-step timings at these batch sizes (sampling only)')
    p.add_argument('--guidance', type=float, default=2.0)
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (with --batches)")
    p.add_argument('--dtype', default='float32', help='weights dtype with --batches, e.g. bfloat16 on CUDA')
    p.add_argument('--repeats', type=int, default=1, help='timed samples per batch size (the fastest is reported)')
    p.add_argument('--out', default=None, help='results JSON (default: by device, under benchmarks/results)')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.device != 'cpu' and not a.batches: p.error('--device is for the per-batch timings: add --batches, e.g. --batches 1 8 32')
    if a.worker and a.batches:
        print(json.dumps(batches_worker(a.worker, a.steps, a.batches, a.threads, a.guidance, a.device, a.dtype, a.repeats))); return
    if a.batches: return main_batches(a)
    if a.worker:
        print(json.dumps(worker(a.worker, a.steps, a.batch, a.threads))); return
    import torch
    res = dict(command='python benchmarks/bench_sampling.py ' + ' '.join(sys.argv[1:]), threads=a.threads, torch=torch.__version__,
               machine=platform.machine(), cpu_count=os.cpu_count(), loadavg_start=os.getloadavg(), tokens='CODA MAR layout, 680 tokens, V=16384',
               guidance='w=2, batched cond+uncond', configs={})
    for preset in a.presets:
        env = os.environ | dict(OMP_NUM_THREADS=str(a.threads))
        r = subprocess.run([sys.executable, __file__, '--worker', preset, '--threads', str(a.threads), '--steps', str(a.steps),
                            '--batch', str(a.batch)], capture_output=True, text=True, env=env)
        if r.returncode: raise SystemExit(f'{preset} failed:\n{r.stderr[-2000:]}')
        res['configs'][preset] = c = json.loads(r.stdout.strip().splitlines()[-1]) | dict(loadavg=os.getloadavg())
        print(f"{preset:13s} {c['params'] / 1e6:7.1f} M  sample {c['images_per_s']:.3f} img/s (batch {c['batch']}, {c['steps']} steps), "
              f"outside forward {100 * c['outside_forward_share']:.1f} %, train {c['train_tokens_per_s']:,.0f} tokens/s", flush=True)
    res['loadavg_end'] = os.getloadavg()
    OUT.parent.mkdir(parents=True, exist_ok=True); OUT.write_text(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
