"""Training-step benchmark of the small presets through the real trainer (`coda_nb.training.coda.train` on the shared loop).

    .venv/bin/python benchmarks/bench_train_step.py [--warmup 2] [--steps 5] [--threads 1]

Configurations, each in its own subprocess:
  * `coda-small-kl-tiny` joint step (LoRA + quantizer, decoder pass, the preset's losses; its VAE is a fresh small KL-VAE),
  * `coda-small-kl-tiny` latent-only warm-up step (`latent_only=True`: quantizer on cached latents, no decoder;
    `lora_encoder=False`, which caching the latents requires),
  * the same two for `coda-taef2-tiny` when the TAEF2 weights are found (`coda_nb.weights.find_weights('taef2')`).
The presets' hyper-parameters are used as they are (batch 16, 64 px, photo crops). A step is the time between two
consecutive `on_step_end` callbacks of the shared loop (`coda_nb.training.loop.Callback`, called once at the end of
every optimiser step); the first `--warmup` steps are discarded, the mean of the next `--steps` is reported.
Results go to benchmarks/results/train_step.json.
"""
import argparse, json, os, platform, statistics, subprocess, sys, tempfile, time
from pathlib import Path

OUT = Path(__file__).resolve().parent/'results'/'train_step.json'


def taef2_path():
    from coda_nb.weights import find_weights
    return find_weights('taef2', required=False)


def worker(preset, mode, warmup, steps, threads):
    import torch
    torch.set_num_threads(threads)
    import coda_nb.training.coda as T
    from coda_nb.training.loop import Callback
    stamps = []
    class Stamp(Callback):
        def on_step_end(self, trainer, step): stamps.append(time.perf_counter())
    vae_path = str(taef2_path()) if preset == 'coda-taef2-tiny' else None
    with tempfile.TemporaryDirectory() as d:
        latent = dict(latent_only=True, lora_encoder=False) if mode == 'latent_only' else {}
        cfg = T.CODATrainConfig.from_preset(preset, steps=warmup + steps, n_train=64, data='photos', out=d, vae_path=vae_path,
                                        ckpt_every=0, log_every=10**9, progress=False, ema=True, **latent)
        t = time.perf_counter()
        T.train(cfg, callbacks=[Stamp()])
        total = time.perf_counter() - t
    dt = [b - a for a, b in zip(stamps, stamps[1:])][warmup - 1:]   # stamps[i] ends step i
    return dict(preset=preset, mode=mode, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, image_size=cfg.image_size,
                lpips=cfg.lpips, gan=cfg.gan, timed_steps=len(dt), step_s_mean=statistics.mean(dt),
                step_s_std=statistics.stdev(dt) if len(dt) > 1 else 0.0, step_s_min=min(dt), steps_s=dt,
                images_per_s=cfg.batch_size * cfg.grad_accum / statistics.mean(dt), run_total_s=total)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--warmup', type=int, default=2); p.add_argument('--steps', type=int, default=5)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--worker', nargs=2, metavar=('PRESET', 'MODE'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.warmup < 1 or a.steps < 1: p.error('--warmup and --steps must be >= 1')
    if a.worker:
        print(json.dumps(worker(*a.worker, a.warmup, a.steps, a.threads))); return
    import torch
    presets = ['coda-small-kl-tiny'] + (['coda-taef2-tiny'] if taef2_path() else [])
    results = dict(warmup=a.warmup, steps=a.steps, threads=a.threads, omp_num_threads=str(a.threads), torch=torch.__version__, machine=platform.machine(),
                   cpu_count=os.cpu_count(), device='cpu', taef2_found=bool(taef2_path()), loadavg_start=os.getloadavg(), configs={})
    t = time.perf_counter()
    for preset in presets:
        for mode in ['joint', 'latent_only']:
            cmd = [sys.executable, __file__, '--warmup', str(a.warmup), '--steps', str(a.steps), '--threads', str(a.threads), '--worker', preset, mode]
            env = os.environ | dict(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
            r = results['configs'][f'{preset}/{mode}'] = json.loads(out.strip().splitlines()[-1]) | dict(loadavg_after=os.getloadavg())
            print(f"{preset:20s} {mode:12s} {r['step_s_mean'] * 1000:8.1f} ms/step (± {r['step_s_std'] * 1000:.1f}, min "
                  f"{r['step_s_min'] * 1000:.1f}), {r['images_per_s']:.1f} img/s, batch {r['batch_size']} @ {r['image_size']} px", flush=True)
    results |= dict(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f'wrote {OUT}')


if __name__ == '__main__': main()
