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
import argparse, json, os, sys, tempfile, time, shutil
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
                 rows=['base', 'lora-ed', 'lora-d', 'lora-e', 'warm-lora-ed']),
    # the second, independent set-up: 64 px, 300 steps x 16, scored on the held-out crops and on photos outside the
    # package's photo list (`unseen_crops`); rows in order of priority, each started only if its estimate fits the deadline
    px64=dict(preset='coda-taef2-tiny', size=64, n_train=1024, steps=300, batch=16, n_eval=128, n_fid=128, diag_n=64, n_unseen=70,
              rows=['base', 'lora-ed', 'lora-ed-lr1e-4', 'lora-d', 'lora-e']),
    px64_reduced=dict(preset='coda-taef2-tiny', size=64, n_train=16, steps=1, batch=4, n_eval=8, n_fid=0, diag_n=4, n_unseen=14, rows=['base', 'lora-ed']))
RESULTS = dict(full='lora_row.json', px64='lora_row_64.json')

# Offline photos that are not in `coda_nb.data.photos.PHOTO_SOURCES` (so no training crop, and no held-out crop of the
# package's own split, comes from them): scikit-image's retina fundus (its central 900 px square, inside the black
# border) and its real grayscale photographs, replicated to three channels. The package leaves these out of its list
# (grayscale, or mostly border); here they are a test set of images the training never saw, of other content.
UNSEEN = ('retina', 'camera', 'coins', 'moon', 'brick', 'grass', 'gravel')

def _unseen_source(name):
    def load():
        import numpy as np, skimage.data as d
        a = getattr(d, name)()
        if name == 'retina': a = a[255:1155, 255:1155]
        return np.repeat(a[..., None], 3, -1) if a.ndim == 2 else a
    return ('skimage', load)

def unseen_crops(size, n, seed=0):
    "`PhotoCrops` of the `UNSEEN` photos (whole images, no train/test cut): `n` crops cycling over the photos."
    import coda_nb.data.photos as P
    extra = {n_: _unseen_source(n_) for n_ in UNSEEN}
    assert not set(extra) & set(P.PHOTO_SOURCES)
    P.PHOTO_SOURCES.update(extra)
    try: return P.PhotoCrops(size=size, n=n, split='train', frac=1.0, seed=seed, names=list(UNSEEN))
    finally:
        for k in extra: P.PHOTO_SOURCES.pop(k)

# s/step before a row of this run has measured one (64 px, batch 16, one thread at load 3.4 on 2 cores, 5 steps each of
# `base` and `lora-ed`); once a row with cached latents has run, a row with encoder LoRA is estimated at `ENCODER_X` its rate
EST_S_PER_STEP, ENCODER_X = dict(cached=4.1, encoder=5.2), 1.3


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
    tok = build_tokenizer(B.get('preset', PRESET), vae_path=vae_path, seed=seed, **kw)
    if warm_from is not None: tok.quantizer.load_state_dict(warm_from.quantizer.state_dict())
    return tok


def train_row(row, B, vae_path, out_dir, seed=0, warm_from=None):
    "Train one row on the shared loop; returns `(tokenizer, record)` with its training log and wall time."
    from coda_nb.training.coda import CODATrainConfig
    from coda_nb.training.loop import fit
    tok = build_row(row, B, vae_path, seed, warm_from)
    steps = B['steps'] * row.get('steps_x', 1)
    cfg = CODATrainConfig.from_preset(B.get('preset', PRESET), image_size=B['size'], n_train=B['n_train'], steps=steps, batch_size=B['batch'],
                                      lr=row.get('lr', 1e-3), codebook_lr=1e-3, ema=False, eval_every=0, ckpt_every=0,
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


def main(budget='full', out=None, log=print, seed=0, rows=None, fid_all=False, merge=False, deadline=None):
    """Train and score `rows` (default: the budget's). `merge`: add them to the JSON at `out` (a row it already holds with
    its rFID is retrained only as a warm start's source, and must reproduce its PSNR); `fid_all`: rFID for every row;
    `deadline` ('HH:MM', UTC): start no row whose estimated training and scoring would end after it."""
    import torch
    torch.set_num_threads(1)
    from torch.utils.data import Subset
    from coda_nb.weights import find_weights
    from coda_nb.vae.load import load_vae
    from coda_nb.data.photos import PhotoCrops
    from coda_nb.eval.reconstruction import evaluate
    from coda_nb.eval.metrics import StreamingFID
    sys.path.insert(0, str(HERE))
    from latentbit_study import _deadline, write_results, run_meta
    B = BUDGETS[budget]
    out = Path(out or OUT/RESULTS.get(budget, f'lora_row_{budget}.json'))
    vae_path = find_weights('taef2', required=True)
    t_all = time.time()
    meta = run_meta('lora_row', f'lora_row.main({budget!r})', budget, cpus=os.cpu_count(), preset=B.get('preset', PRESET))
    stop_at = _deadline(deadline)
    if deadline: meta['deadline'] = deadline
    held = PhotoCrops(size=B['size'], n=B['n_eval'], split='test', seed=0)
    train_crops = Subset(PhotoCrops(size=B['size'], n=B['n_train'], split='train', seed=seed), range(B['diag_n']))
    x_diag = torch.stack([held[i] for i in range(B['diag_n'])])
    unseen = unseen_crops(B['size'], B['n_unseen']) if B.get('n_unseen') else None
    if unseen is not None: meta['unseen'] = dict(photos=unseen.names, n=len(unseen), note='whole images, grayscale ones replicated to RGB; retina: its central 900 px square')
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
    def held_out(model, fid):
        "The held-out scores, with rFID if `fid`; one pass over the crops when the rFID set is all of them."
        if fid and real is not None and B['n_fid'] == B['n_eval']:
            s = StreamingFID(inception=real.inception); s.real = real.real
            return evaluate(model, held, batch_size=64, fid=s, fid_real=False, progress=False) | dict(n_fid=B['n_fid'])
        return evaluate(model, held, batch_size=64, fid=False, progress=False) | (fid_of(model) if fid else {})
    if merge:
        res = json.loads(out.read_text())
        res['meta'].setdefault('added', []).append(dict(command=meta['command'], rows=rows, loadavg_start=meta['loadavg_start'], started=meta['started']))
        meta = res['meta']
    else:
        res = dict(meta=meta, budget=B, continuous=held_out(vae, True), runs={})
        if unseen is not None: res['continuous_unseen'] = evaluate(vae, unseen, batch_size=64, fid=False, progress=False)
    stamp = meta['added'][-1] if merge else meta
    tmp, toks = Path(tempfile.mkdtemp(prefix='lorarow-')), {}
    spec, rate, eval_s = {r['name']: r for r in ROWS}, dict(EST_S_PER_STEP), 120.0
    for name in rows or B['rows']:
        row = dict(spec[name])
        if row.get('best'):
            k, score = pick_best(res['runs'])
            row |= {kk: v for kk, v in res['runs'][k]['spec'].items() if kk in ('lora', 'lr', 'rank')} | dict(best_of=k, best_score=score)
        kind = 'encoder' if 'e' in (row.get('lora') or '') else 'cached'
        est = B['steps'] * row.get('steps_x', 1) * rate[kind] + eval_s
        if stop_at and time.time() + est > stop_at:
            stamp.setdefault('not_run', []).append(dict(row=name, estimate_s=est))
            log(f'{name}: not started (estimated {est:.0f} s, past the deadline {deadline})'); write_results(res, stamp, out, t_all); continue
        tok, rec = train_row(row, B, vae_path, tmp/name, seed, warm_from=toks.get(row.get('warm')))
        rate[kind] = rec['s_per_step']
        if kind == 'cached' and not any('e' in (r['spec'].get('lora') or '') for r in res['runs'].values()): rate['encoder'] = ENCODER_X * rate['cached']
        if name in ('base',): toks[name] = tok
        old = res['runs'].get(name) if merge else None
        if old and 'rfid' in old['final']:       # retrained only as a warm start's source: it must reproduce its score
            p = evaluate(tok, held, batch_size=64, fid=False, progress=False)['psnr']
            if abs(p - old['final']['psnr']) > 1e-4: raise RuntimeError(f'{name}: retrained PSNR {p:.4f} != saved {old["final"]["psnr"]:.4f}')
            old['reproduced'] = True; log(f'{name}: retrained, PSNR {p:.4f} reproduced'); continue
        t = time.time()
        rec['final'] = held_out(tok, row.get('fid') or fid_all)
        rec['train_crops'] = evaluate(tok, train_crops, batch_size=64, fid=False, progress=False)
        rec['diag'] = diagnose(tok, x_diag)
        if unseen is not None: rec['unseen'] = evaluate(tok, unseen, batch_size=64, fid=False, progress=False)
        rec['eval_s'] = eval_s = time.time() - t
        rec['estimate_s'] = est
        res['runs'][name] = rec
        f = rec['final']
        log(f"{name:>15}: {rec['steps']} steps {rec['train_s']:6.0f} s ({rec['s_per_step']:.2f} s/step)  PSNR {f['psnr']:.2f}  "
            f"latent {f['quant_error']:.3f}  rFID {f.get('rfid', float('nan')):.1f}  drift {rec['diag']['encoder_drift']:.3f}  "
            + (f"unseen PSNR {rec['unseen']['psnr']:.2f}  " if unseen is not None else '') +
            f"eval {eval_s:.0f} s  ({time.time() - t_all:.0f} s, load {os.getloadavg()[0]:.1f})")
        if old: rec['reproduced'] = abs(rec['final']['psnr'] - old['final']['psnr']) < 1e-4   # the same training again
        write_results(res, stamp, out, t_all)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--budget', default='full', choices=list(BUDGETS))
    ap.add_argument('--out', default=None)
    ap.add_argument('--rows', default=None, help='comma-separated row names (default: the budget\'s)')
    ap.add_argument('--fid-all', action='store_true', help='rFID for every row, not only the flagged ones')
    ap.add_argument('--merge', action='store_true', help='add the rows to the existing JSON instead of starting it over')
    ap.add_argument('--deadline', default=None, help='HH:MM (UTC): start no row whose estimate ends after this time')
    a = ap.parse_args()
    main(a.budget, a.out, log=lambda s: print(s, flush=True), rows=a.rows.split(',') if a.rows else None, fid_all=a.fid_all,
         merge=a.merge, deadline=a.deadline)
