"""CODA's LoRA row (the last row of the paper's Table 1) at CPU scale: controlled runs that find out why LoRA does not
help here. Every row is trained against the same no-LoRA baseline (same init seed, crops, data order, steps, batch
and objective) and differs in one thing: where LoRA sits (encoder + decoder, decoder only, encoder only), its
learning rate (the codebook's stays), its rank, a warm start from the baseline's trained quantizer, or 3x the steps.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/lora_row.py [--budget full|reduced] [--out PATH]

Set-up: the preset `coda-taef2-t1-lora` (TAEF2, the paper's objective: 0.2 L1 + 1.0 L2 through the decoder, quantization
loss, 0.05 x entropy; no LPIPS, no GAN, no EMA), trained by `coda_nb.training` (the shared tokenizer task on the shared
loop, `fit`). Rows whose encoder is frozen cache their latents once per process (the cache of
`benchmarks/latentbit_study.py`, shared by the rows). Scores: `coda_nb.eval.reconstruction.evaluate` on held-out crops
(`PhotoCrops(split='test')`, a region of the photos no training crop touches), rFID with one set of real-image
statistics shared by the rows; then a latent-vs-decoder diagnosis of each row (`diagnose`). Rows are saved to the JSON
as they finish (benchmarks/results/lora_row.json, with the command, threads, versions and load average); the notebook
`nbs/paper/coda/57_lora_row.ipynb` reads it.
"""
from __future__ import annotations
import argparse, json, os, platform, sys, tempfile, time, shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE/'results'
PRESET = 'coda-taef2-t1-lora'

# Rows in order of priority (the JSON is rewritten after each). `lora`: 'ed' encoder + decoder, 'd' decoder, 'e' encoder,
# None no LoRA; `lr`: LoRA's learning rate (the codebook's is the preset's 1e-3 in every row); `rank` (default 4);
# `warm`: start from that row's trained quantizer; `steps_x`: times the budget's steps; `best`: the LoRA placement, lr and
# rank of the single-stage LoRA row with the lowest final training pixel loss (chosen on training crops, not held-out ones).
ROWS = [dict(name='base', lora=None, fid=True),
        dict(name='lora-ed', lora='ed', fid=True),
        dict(name='lora-d', lora='d', fid=True),
        dict(name='lora-e', lora='e', fid=True),
        dict(name='lora-ed-lr1e-4', lora='ed', lr=1e-4, fid=True),
        dict(name='warm-base', lora=None, warm='base', fid=True),
        dict(name='warm-lora-ed', lora='ed', warm='base', fid=True),
        dict(name='lora-d-lr1e-4', lora='d', lr=1e-4),
        dict(name='lora-d-lr1e-2', lora='d', lr=1e-2),
        dict(name='lora-d-r1', lora='d', rank=1),
        dict(name='lora-d-r16', lora='d', rank=16),
        dict(name='base-x3', lora=None, steps_x=3, fid=True),
        dict(name='best-x3', best=True, steps_x=3, fid=True),
        dict(name='lora-ed-lr1e-4-x3', lora='ed', lr=1e-4, steps_x=3, fid=True)]

BUDGETS = dict(
    full=dict(size=32, n_train=1024, steps=120, batch=16, n_eval=256, n_fid=128, diag_n=128, rows=[r['name'] for r in ROWS]),
    reduced=dict(size=32, n_train=32, steps=2, batch=4, n_eval=8, n_fid=0, diag_n=8,
                 rows=['base', 'lora-ed', 'lora-d', 'lora-e', 'warm-lora-ed']))


def _version(pkg):
    from importlib.metadata import version, PackageNotFoundError
    try: return version(pkg)
    except PackageNotFoundError: return None


def _shared_task(tok):
    "The shared tokenizer task with the latent cache of `latentbit_study` (one `encode_all` per process for frozen encoders)."
    sys.path.insert(0, str(HERE))
    from latentbit_study import _task
    return _task(tok)


def build_row(row, B, vae_path, seed=0, warm_from=None):
    "A fresh tokenizer for `row` (the preset's model with this row's LoRA), its quantizer copied from `warm_from` if given."
    from coda_nb.tokenizers.coda import build_tokenizer
    lora = row.get('lora')
    kw = {'lora.rank': row.get('rank', 4) if lora else 0, 'lora.encoder': 'e' in (lora or ''), 'lora.decoder': 'd' in (lora or '')}
    tok = build_tokenizer(PRESET, vae_path=vae_path, seed=seed, **kw)
    if warm_from is not None: tok.quantizer.load_state_dict(warm_from.quantizer.state_dict())
    return tok


def train_row(row, B, vae_path, out_dir, seed=0, warm_from=None):
    "Train one row on the shared loop; returns `(tokenizer, record)` with its training log and wall time."
    from coda_nb.training.coda import CODATrainConfig
    from coda_nb.training.loop import fit
    tok = build_row(row, B, vae_path, seed, warm_from)
    steps = B['steps'] * row.get('steps_x', 1)
    cfg = CODATrainConfig.from_preset(PRESET, image_size=B['size'], n_train=B['n_train'], steps=steps, batch_size=B['batch'],
                                      lr=row.get('lr', 1e-3), codebook_lr=1e-3, eval_every=0, ckpt_every=0,
                                      log_every=max(1, steps // 20), progress=False, seed=seed, out=str(out_dir), vae_path=str(vae_path))
    task = _shared_task(tok)
    t0 = time.time()
    r = fit(task, cfg)
    secs = time.time() - t0 - task.cache_s
    shutil.rmtree(out_dir, ignore_errors=True)
    log = [{k: float(v) for k, v in h.items() if k in ('step', 'loss', 'rec', 'quant', 'entropy', 'latent_mse')} for h in r['history']]
    n_lora = sum(p.numel() for p in tok.lora_parameters())
    return tok.eval(), dict(spec=row, steps=steps, train_s=secs, s_per_step=secs / steps, cache_s=task.cache_s, cached_latents=task.cache,
                            lora_params=n_lora, train_log=log,
                            config=dict(lr=cfg.lr, codebook_lr=cfg.codebook_lr, entropy_weight=cfg.entropy_weight, batch_size=cfg.batch_size,
                                        ema=cfg.ema, schedule=cfg.schedule, lora=tok.config['lora'], warm=row.get('warm')))


def diagnose(tok, x):
    """Where the error sits: the row's latent error (its own encoder's `f` to `f_hat`) against what its decoder makes of it.
    `f0` and `dec0` are the frozen TAEF2 (the tokenizer's LoRA switched off); every pixel error is a mean square in [-1, 1]."""
    import torch
    base = tok.continuous_vae()
    mse = lambda a, b: float((a.float() - b.float()).pow(2).mean())
    with torch.no_grad():
        f0, f = base.encode(x), tok.vae.encode(x)
        f_hat = tok.quantizer(f, compute_loss=False).f_hat
        dec, dec0 = (lambda z: tok.decode(z).clamp(-1, 1)), (lambda z: base.decode(z).clamp(-1, 1))
        return dict(latent_mse=mse(f_hat, f), latent_mse_to_frozen=mse(f_hat, f0), encoder_drift=mse(f, f0),
                    latent_var=float(f.var()), frozen_latent_var=float(f0.var()),
                    pixel_mse=mse(dec(f_hat), x),                 # what the row reconstructs (its PSNR)
                    pixel_mse_continuous=mse(dec(f), x),          # its own encoder and decoder, no quantizer
                    pixel_mse_decoder_on_frozen=mse(dec(f0), x),  # its decoder on the frozen encoder's latent
                    pixel_mse_frozen_decoder=mse(dec0(f_hat), x), # the frozen decoder on its quantized latent
                    pixel_mse_from_quant=mse(dec(f_hat), dec(f)))  # the pixels the quantization error costs, same decoder


def pick_best(runs, last=3):
    "The single-stage LoRA row with the lowest mean training pixel loss over its last `last` logs (training crops only)."
    cand = {k: r for k, r in runs.items() if r['spec'].get('lora') and not r['spec'].get('warm') and r['spec'].get('steps_x', 1) == 1}
    score = {k: sum(l['rec'] for l in r['train_log'][-last:]) / last for k, r in cand.items()}
    return min(score, key=score.get), score


def main(budget='full', out=None, log=print, seed=0, rows=None, fid_all=False, merge=False):
    """Train and score `rows` (default: the budget's). `merge`: add them to the JSON at `out` (a row it already holds with
    its rFID is retrained only as a warm start's source, and must reproduce its PSNR); `fid_all`: rFID for every row."""
    import torch
    torch.set_num_threads(1)
    from torch.utils.data import Subset
    from coda_nb.weights import find_weights
    from coda_nb.vae.load import load_vae
    from coda_nb.data.photos import PhotoCrops
    from coda_nb.eval.reconstruction import evaluate
    from coda_nb.eval.metrics import StreamingFID
    B = BUDGETS[budget]
    out = Path(out or OUT/f"lora_row{'' if budget == 'full' else '_' + budget}.json")
    vae_path = find_weights('taef2', required=True)
    t_all = time.time()
    meta = dict(command=' '.join([Path(sys.executable).name, *sys.argv]) if __name__ == '__main__' else f'lora_row.main({budget!r})',
                threads=torch.get_num_threads(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'), torch=torch.__version__,
                coda_nb=_version('coda_nb'), python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
                loadavg_start=os.getloadavg(), budget=budget, preset=PRESET, vae='TAEF2 (real weights)',
                lpips='off: the VGG16 weights (vgg16-397923af.pth) are not on this machine', started=time.strftime('%Y-%m-%d %H:%M:%S'))
    held = PhotoCrops(size=B['size'], n=B['n_eval'], split='test', seed=0)
    train_crops = Subset(PhotoCrops(size=B['size'], n=B['n_train'], split='train', seed=seed), range(B['diag_n']))
    x_diag = torch.stack([held[i] for i in range(B['diag_n'])])
    vae = load_vae('tae', vae_path)
    real = None
    if B['n_fid']:
        t = time.time(); real = StreamingFID(); fid_ds = Subset(held, range(B['n_fid']))
        real.update(real=torch.stack([held[i] for i in range(B['n_fid'])]))
        meta['fid_real_s'] = time.time() - t
    def fid_of(model):
        if real is None: return {}
        s = StreamingFID(inception=real.inception); s.real = real.real          # the real statistics, computed once
        return dict(rfid=evaluate(model, fid_ds, batch_size=64, fid=s, fid_real=False, progress=False)['rfid'], n_fid=B['n_fid'])
    if merge:
        res = json.loads(out.read_text())
        res['meta'].setdefault('added', []).append(dict(command=meta['command'], rows=rows, loadavg_start=meta['loadavg_start'], started=meta['started']))
        meta = res['meta']
    else:
        res = dict(meta=meta, budget=B, continuous=evaluate(vae, held, batch_size=64, fid=False, progress=False) | fid_of(vae), runs={})
    tmp, toks = Path(tempfile.mkdtemp(prefix='lorarow-')), {}
    spec = {r['name']: r for r in ROWS}
    for name in rows or B['rows']:
        row = dict(spec[name])
        if row.get('best'):
            k, score = pick_best(res['runs'])
            row |= {kk: v for kk, v in res['runs'][k]['spec'].items() if kk in ('lora', 'lr', 'rank')} | dict(best_of=k, best_score=score)
        tok, rec = train_row(row, B, vae_path, tmp/name, seed, warm_from=toks.get(row.get('warm')))
        if name in ('base',): toks[name] = tok
        old = res['runs'].get(name) if merge else None
        if old and 'rfid' in old['final']:       # retrained only as a warm start's source: it must reproduce its score
            p = evaluate(tok, held, batch_size=64, fid=False, progress=False)['psnr']
            if abs(p - old['final']['psnr']) > 1e-4: raise RuntimeError(f'{name}: retrained PSNR {p:.4f} != saved {old["final"]["psnr"]:.4f}')
            old['reproduced'] = True; log(f'{name}: retrained, PSNR {p:.4f} reproduced'); continue
        t = time.time()
        rec['final'] = evaluate(tok, held, batch_size=64, fid=False, progress=False) | (fid_of(tok) if row.get('fid') or fid_all else {})
        rec['train_crops'] = evaluate(tok, train_crops, batch_size=64, fid=False, progress=False)
        rec['diag'] = diagnose(tok, x_diag)
        rec['eval_s'] = time.time() - t
        res['runs'][name] = rec
        f = rec['final']
        log(f"{name:>15}: {rec['steps']} steps {rec['train_s']:6.0f} s ({rec['s_per_step']:.2f} s/step)  PSNR {f['psnr']:.2f}  "
            f"latent {f['quant_error']:.3f}  rFID {f.get('rfid', float('nan')):.1f}  drift {rec['diag']['encoder_drift']:.3f}  "
            f"({time.time() - t_all:.0f} s, load {os.getloadavg()[0]:.1f})")
        if old: rec['reproduced'] = abs(rec['final']['psnr'] - old['final']['psnr']) < 1e-4   # the same training again
        (meta['added'][-1] if merge else meta).update(loadavg_end=os.getloadavg(), finished=time.strftime('%Y-%m-%d %H:%M:%S'),
                                                      total_s=time.time() - t_all)
        out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(res, indent=1, default=float))
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--budget', default='full', choices=list(BUDGETS))
    ap.add_argument('--out', default=None)
    ap.add_argument('--rows', default=None, help='comma-separated row names (default: the budget\'s)')
    ap.add_argument('--fid-all', action='store_true', help='rFID for every row, not only the flagged ones')
    ap.add_argument('--merge', action='store_true', help='add the rows to the existing JSON instead of starting it over')
    a = ap.parse_args()
    main(a.budget, a.out, log=lambda s: print(s, flush=True), rows=a.rows.split(',') if a.rows else None, fid_all=a.fid_all, merge=a.merge)
