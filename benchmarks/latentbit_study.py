"""LatentBit at CPU scale: why the preset's pixel-only objective does not learn TAEF2's latent (the objective study),
and how the reconstruction grows with the number of bits D and with the ViT's width and training steps (the capacity
study), with the fixed objective.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latentbit_study.py objective [--budget full|reduced] [--out PATH]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latentbit_study.py capacity  [--budget full|reduced] [--out PATH]

Every run is what `coda_nb.training.latentbit.train_latentbit` runs (the shared tokenizer task on the shared loop, `fit`:
TAEF2 frozen, its latents cached; here the cache is computed once and shared by the rows of a study, which use the same
crops), on 64 px photo crops, from the preset `latentbit-taef2-tiny` with the model and loss keys of the row; every
score is `coda_nb.eval.reconstruction.evaluate` on held-out crops (`PhotoCrops(split='test')`), with `quant_error` =
the latent MSE |f_hat - f|^2 beside the latent's variance on the same crops. No LPIPS (the VGG16 weights are not
offline here), no GAN, no EMA. Results: benchmarks/results/latentbit_<study>[_reduced].json, with the command, threads,
versions, load average and wall times; `nbs/api/78_train_latentbit.ipynb` and
`nbs/paper/latentbit/30_rate_distortion.ipynb` read them.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, tempfile, time, shutil
from pathlib import Path

OUT = Path(__file__).resolve().parent/'results'

# The objectives compared at D = 64 (2 bits per TAEF2 channel): the preset's, the latent term alone (no decoder pass),
# and both. Keys are `LatentBitTrainConfig` fields.
OBJECTIVES = dict(pixel=dict(), latent=dict(latent_only=True, latent_l2=1.0), pixel_latent=dict(latent_l2=1.0))

BUDGETS = dict(
    objective=dict(
        full=dict(n_train=1024, n_eval=256, batch=16, rows=[dict(name=k, objective=k, D=64, dim=64, depth=2, steps=200) for k in OBJECTIVES]
                  + [dict(name='latent-lr3e-4', objective='latent', D=64, dim=64, depth=2, steps=200, lr=3e-4),
                     dict(name='latent-lr3e-3', objective='latent', D=64, dim=64, depth=2, steps=200, lr=3e-3),
                     dict(name='latent-commit0', objective='latent', D=64, dim=64, depth=2, steps=200, commitment_weight=0.0)]),
        reduced=dict(n_train=32, n_eval=16, batch=4, rows=[dict(name=k, objective=k, D=16, dim=32, depth=1, steps=3) for k in OBJECTIVES])),
    # rows in order of priority (the JSON is saved after each): the D = 64 width / steps trend, the D sweep, FSQ at two
    # rates (its D is the number of FSQ channels, `levels` their levels), then the widest and longest rows
    capacity=dict(
        full=dict(n_train=1024, n_eval=256, batch=16,
                  rows=[dict(name=f'D64-w{w}-s1500', objective='latent', D=64, dim=w, depth=2, steps=1500) for w in (64, 128)]
                  + [dict(name=f'D{D}-w64-s1500', objective='latent', D=D, dim=64, depth=2, steps=1500) for D in (14, 32, 128)]
                  + [dict(name='D64-w64-s5000', objective='latent', D=64, dim=64, depth=2, steps=5000)]
                  + [dict(name=f'FSQ{b}-w64-s1500', objective='latent', D=len(lv), levels=lv, dim=64, depth=2, steps=1500)
                     for b, lv in ((14, [8, 8, 8, 6, 5]), (20, [8, 8, 8, 8, 8, 8, 4]))]
                  + [dict(name=f'D64-w{w}-s{s}', objective='latent', D=64, dim=w, depth=2, steps=s) for w, s in ((256, 1500), (128, 5000))]),
        # what one shared-CPU session had time for: the D = 64 width pair and the D sweep at 500 steps, then 1,500 steps
        short=dict(n_train=1024, n_eval=256, batch=16,
                   rows=[dict(name=f'D64-w{w}-s500', objective='latent', D=64, dim=w, depth=2, steps=500) for w in (64, 128)]
                   + [dict(name=f'D{D}-w64-s500', objective='latent', D=D, dim=64, depth=2, steps=500) for D in (14, 32, 128)]
                   + [dict(name='D64-w64-s1500', objective='latent', D=64, dim=64, depth=2, steps=1500)]),
        reduced=dict(n_train=32, n_eval=16, batch=4, rows=[dict(name=f'D{D}-w{w}-s3', objective='latent', D=D, dim=w, depth=1, steps=3)
                                                           for D, w in ((16, 32), (32, 32), (16, 64))]
                     + [dict(name='FSQ14-w32-s3', objective='latent', D=5, levels=[8, 8, 8, 6, 5], dim=32, depth=1, steps=3)])),
)


def _version(pkg):
    from importlib.metadata import version, PackageNotFoundError
    try: return version(pkg)
    except PackageNotFoundError: return None


def trainable_params(tok) -> int: return sum(p.numel() for p in tok.trainable_parameters())


_LATENTS = {}   # the training crops' TAEF2 latents, shared by the rows of one process (the same crops, seed and VAE)

def _task(tok):
    "The shared tokenizer task, its latent cache (`encode_all`, run once) shared across the rows of this process."
    from coda_nb.training.tokenizer import TokenizerTask
    class SharedLatents(TokenizerTask):
        def encode_all(self, acc, batch_size: int = 64):
            c = self.cfg
            key = (c.data, c.image_size, c.n_train, c.seed, str(c.vae_path))
            if key not in _LATENTS:
                t = time.time(); _LATENTS[key] = super().encode_all(acc, batch_size); self.cache_s = time.time() - t
            return _LATENTS[key]
        cache_s = 0.0
    return SharedLatents(tok)


def train_row(row, B, vae_path, out_dir, seed=0):
    "Train one row of the study; returns `(tokenizer, record)` with the training log and the wall time."
    from coda_nb.tokenizers.latentbit import build_latentbit
    from coda_nb.training.latentbit import LatentBitTrainConfig
    from coda_nb.training.loop import fit
    model = dict(bits=row['D'], dim=row['dim'], depth=row['depth'], heads=max(1, row['dim'] // 16))
    if 'commitment_weight' in row: model['quantizer.commitment_weight'] = row['commitment_weight']
    if 'levels' in row: model |= {'quantizer.quantizer': 'fsq', 'quantizer.levels': row['levels']}   # FSQ: D channels of these levels
    tok = build_latentbit('latentbit-taef2-tiny', vae_path=vae_path, seed=seed, **model)
    kw = dict(OBJECTIVES[row['objective']]) | ({'lr': row['lr']} if 'lr' in row else {})
    cfg = LatentBitTrainConfig.from_preset('latentbit-taef2-tiny', out=str(out_dir), steps=row['steps'], n_train=B['n_train'],
                                           batch_size=B['batch'], log_every=max(1, row['steps'] // 20), ckpt_every=0,
                                           progress=False, seed=seed, vae_path=str(vae_path), **kw)
    t0 = time.time()
    task = _task(tok)
    r = fit(task, cfg)                     # what `train_latentbit` runs, with the latent cache shared between rows
    secs = time.time() - t0 - task.cache_s   # the training steps' wall time; caching the latents is `cache_s`
    shutil.rmtree(out_dir, ignore_errors=True)
    log = [{k: float(v) for k, v in h.items() if k in ('step', 'loss', 'rec', 'commit', 'latent_mse', 'bit_balance')} for h in r['history']]
    return tok.eval(), dict(row=row, train_s=secs, cache_s=task.cache_s, s_per_step=secs / row['steps'], params=trainable_params(tok),
                            bpp=tok.bits_per_pixel, cached_latents=task.cache, train_log=log,
                            config=dict(lr=cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, l1=cfg.l1, l2=cfg.l2,
                                        latent_l2=cfg.latent_l2, latent_only=cfg.latent_only, batch_size=cfg.batch_size,
                                        commitment_weight=getattr(tok.quantizer, 'commitment_weight', None)))


def bit_usage(tok, x, batch=64):
    "Per-bit balance of the held-out tokens (`BitUsage`): dead bits (always the same sign) and the worst imbalance; {} for FSQ."
    import torch
    if not hasattr(tok.quantizer, 'stats'): return {}
    from coda_nb.quantizers.binary import BitUsage
    u = BitUsage(tok.bits)
    with torch.no_grad():
        for c in x.split(batch): u.update(tok.encode_indices(c)[0])
    s = u.summary(sync=False)
    return dict(dead_bits=sum(b in (0.0, 1.0) for b in s['balance']), max_imbalance=s['max_imbalance'], mean_bit_entropy=s['mean_bit_entropy'])


def main(study='objective', budget='full', out=None, log=print):
    "Run every row of `study` at `budget`; the JSON is rewritten after each row, so a stopped run keeps what it finished."
    import torch
    torch.set_num_threads(1)
    from coda_nb.weights import find_weights
    from coda_nb.vae.load import load_vae
    from coda_nb.data.photos import PhotoCrops
    from coda_nb.eval.reconstruction import evaluate
    B = BUDGETS[study][budget]
    out = Path(out or OUT/f"latentbit_{study}{'' if budget == 'full' else '_' + budget}.json")
    vae_path = find_weights('taef2', required=True)
    t_all = time.time()
    meta = dict(command=' '.join([Path(sys.executable).name, *sys.argv]) if __name__ == '__main__' else f'latentbit_study.main({study!r}, {budget!r})',
                threads=torch.get_num_threads(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'), torch=torch.__version__,
                coda_nb=_version('coda_nb'), python=platform.python_version(), machine=platform.machine(),
                loadavg_start=os.getloadavg(), study=study, budget=budget, vae='TAEF2 (real weights)',
                lpips='off: the VGG16 weights (vgg16-397923af.pth) are not on this machine', started=time.strftime('%Y-%m-%d %H:%M:%S'))
    held = PhotoCrops(size=64, n=B['n_eval'], split='test', seed=0)
    x_eval = torch.stack([held[i] for i in range(len(held))])
    vae = load_vae('tae', vae_path)
    with torch.no_grad(): f = torch.cat([vae.encode(c) for c in x_eval.split(64)])
    latent = dict(var=f.var().item(), mean_square=f.pow(2).mean().item(), var_about_channel_mean=f.transpose(0, 1).flatten(1).var(1).mean().item())
    res = dict(meta=meta, budget=B, latent=latent, continuous=evaluate(vae, held, batch_size=64, fid=False, progress=False), runs={})
    tmp = Path(tempfile.mkdtemp(prefix='lbstudy-'))
    for row in B['rows']:
        tok, rec = train_row(row, B, vae_path, tmp/row['name'])
        t = time.time()
        rec['final'] = evaluate(tok, held, batch_size=64, fid=False, progress=False)
        rec['eval_s'] = time.time() - t
        rec['bits'] = bit_usage(tok, x_eval)
        res['runs'][row['name']] = rec
        log(f"{row['name']:>18}: {rec['train_s']:6.0f} s ({rec['s_per_step']:.3f} s/step)  {rec['params'] / 1e6:.2f} M  "
            f"PSNR {rec['final']['psnr']:.2f}  latent MSE {rec['final']['quant_error']:.3f} (var {latent['var']:.3f})  "
            f"dead bits {rec['bits'].get('dead_bits', '-')}  ({time.time() - t_all:.0f} s)")
        meta.update(loadavg_end=os.getloadavg(), finished=time.strftime('%Y-%m-%d %H:%M:%S'), total_s=time.time() - t_all)
        out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(res, indent=1, default=float))
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('study', choices=list(BUDGETS))
    p.add_argument('--budget', choices=['full', 'short', 'reduced'], default='full')
    p.add_argument('--out', default=None)
    a = p.parse_args()
    main(a.study, a.budget, a.out)
