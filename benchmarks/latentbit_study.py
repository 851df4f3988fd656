"""LatentBit at CPU scale: why the preset's pixel-only objective does not learn TAEF2's latent (the objective study),
how the reconstruction grows with the ViT's width and training steps at D = 64 (the capacity study), and LatentBit's
rate-distortion beside CODA and an FSQ bottleneck on the same axes (the rate-distortion study, Table 1 at CPU scale).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latentbit_study.py objective [--budget full|reduced] [--out PATH]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latentbit_study.py capacity  [--budget full|short|reduced] [--out PATH] [--rows NAME...] [--merge]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latentbit_study.py rd        [--budget full|reduced] [--out PATH]

Every LatentBit run is what `coda_nb.training.latentbit.train_latentbit` runs (the shared tokenizer task on the shared
loop, `fit`: TAEF2 frozen, its latents cached; here the cache is computed once and shared by the rows of a study, which
use the same crops), on 64 px photo crops, from the preset `latentbit-taef2-tiny` with the model and loss keys of the
row. CODA's rows are the preset `coda-taef2-tiny` (TAEF2, 64 px, attention levels) with its codebook size V and its
scales set by the row, trained on the same task and data with the same latent objective as LatentBit's rows (its
quantization loss plus `latent_l2`, `latent_only=True`, no LoRA: no decoder pass; the probe in the JSON measures a
step with the pixel loss through the decoder beside it). Every score is `coda_nb.eval.reconstruction.evaluate` on
held-out crops (`PhotoCrops(split='test')`), with `quant_error` = the latent MSE |f_hat - f|^2 beside the latent's
variance on the same crops; the rate-distortion study adds rFID on the first `fid_n` held-out crops against one set of
real-image Inception statistics shared by every point. No LPIPS (the VGG16 weights are not offline here), no GAN, no
EMA. Results: benchmarks/results/latentbit_<study>[_<budget>].json, with the command, threads, versions, load average
and wall times; `nbs/api/78_train_latentbit.ipynb` and `nbs/paper/latentbit/30_rate_distortion.ipynb` read them.
"""
from __future__ import annotations
import argparse, copy, hashlib, json, math, os, platform, sys, tempfile, time, shutil
from pathlib import Path

OUT = Path(__file__).resolve().parent/'results'

# The objectives compared at D = 64 (2 bits per TAEF2 channel): the preset's, the latent term alone (no decoder pass),
# and both. Keys are `LatentBitTrainConfig` fields.
OBJECTIVES = dict(pixel=dict(), latent=dict(latent_only=True, latent_l2=1.0), pixel_latent=dict(latent_l2=1.0))

def _lb(D, steps, dim=64, depth=2):
    return dict(name=f'LB-D{D}', method='latentbit', objective='latent', D=D, dim=dim, depth=depth, steps=steps)
def _fsq(levels, steps, dim=64, depth=2):
    b = round(sum(math.log2(l) for l in levels))
    return dict(name=f'FSQ{b}', method='latentbit', objective='latent', D=len(levels), levels=list(levels), dim=dim, depth=depth, steps=steps)
def _coda(scales, V, steps):
    return dict(name=f"CODA-V{V}-s{'.'.join(map(str, scales))}", method='coda', objective='latent', V=V, scales=list(scales), steps=steps)

BUDGETS = dict(
    objective=dict(
        full=dict(n_train=1024, n_eval=256, batch=16, rows=[dict(name=k, objective=k, D=64, dim=64, depth=2, steps=200) for k in OBJECTIVES]
                  + [dict(name='latent-lr3e-4', objective='latent', D=64, dim=64, depth=2, steps=200, lr=3e-4),
                     dict(name='latent-lr3e-3', objective='latent', D=64, dim=64, depth=2, steps=200, lr=3e-3),
                     dict(name='latent-commit0', objective='latent', D=64, dim=64, depth=2, steps=200, commitment_weight=0.0)]),
        reduced=dict(n_train=32, n_eval=16, batch=4, rows=[dict(name=k, objective=k, D=16, dim=32, depth=1, steps=3) for k in OBJECTIVES])),
    # rows in order of priority (the JSON is saved after each): at D = 64 the width pair at 1,500 steps, width 64 at
    # 5,000 steps, width 256 at 1,500, then widths 128 and 256 at 5,000
    capacity=dict(
        full=dict(n_train=1024, n_eval=1000, batch=16,
                  rows=[dict(name=f'D64-w{w}-s{s}', objective='latent', D=64, dim=w, depth=2, steps=s)
                        for w, s in ((64, 1500), (128, 1500), (64, 5000), (256, 1500), (128, 5000), (256, 5000))]
                  # the control for width 256 at 5,000 steps (78 epochs of the 1,024 crops): the same row on 8x the training crops
                  + [dict(name=f'D64-w256-s{s}-n8192', objective='latent', D=64, dim=256, depth=2, steps=s, n_train=8192) for s in (5000, 1500)]),
        # what one shared-CPU session had time for: the D = 64 width pair and the D sweep at 500 steps, then 1,500 steps
        short=dict(n_train=1024, n_eval=256, batch=16,
                   rows=[dict(name=f'D64-w{w}-s500', objective='latent', D=64, dim=w, depth=2, steps=500) for w in (64, 128)]
                   + [dict(name=f'D{D}-w64-s500', objective='latent', D=D, dim=64, depth=2, steps=500) for D in (14, 32, 128)]
                   + [dict(name='D64-w64-s1500', objective='latent', D=64, dim=64, depth=2, steps=1500)]),
        reduced=dict(n_train=32, n_eval=16, batch=4, rows=[dict(name=f'D{D}-w{w}-s3', objective='latent', D=D, dim=w, depth=1, steps=3)
                                                           for D, w in ((16, 32), (32, 32), (16, 64))]
                     + [dict(name='FSQ14-w32-s3', objective='latent', D=5, levels=[8, 8, 8, 6, 5], dim=32, depth=1, steps=3)])),
    # Table 1 at CPU scale: every point the same data, steps, batch and latent objective; LatentBit at width 64 (its step
    # costs about what CODA's does, see the probe); CODA's rate set by its scales (tokens) at V = 1024; FSQ at LatentBit's
    # 14 bits a token and at CODA's middle rate (20 bits). Rows in order of priority.
    rd=dict(
        full=dict(n_train=1024, n_eval=1000, fid_n=100, batch=16, probe=True,
                  fid_n_choice='100, not 250: Inception ran at 0.73 s/image on one loaded thread, so 250 crops would cost ~3 min per point (10 points)',
                  rows=[_lb(64, 500), _coda((1, 2, 3, 4, 6, 8), 1024, 500), _lb(14, 500), _coda((1, 2, 4, 8), 1024, 500),
                        _lb(128, 500), _coda((1, 2, 3, 4, 6, 8, 8, 8), 1024, 500), _lb(32, 500),
                        _fsq([8, 8, 8, 6, 5], 500), _fsq([8, 8, 8, 8, 8, 8, 4], 500)]),
        reduced=dict(n_train=32, n_eval=16, fid_n=0, batch=4, probe=False,
                     rows=[_lb(16, 3, 32, 1), _coda((1, 2, 8), 64, 3), _fsq([8, 8, 8, 6, 5], 3, 32, 1)])),
)


# s/step of one training step at batch 16, by ViT width (LatentBit's latent objective) and for CODA's latent objective,
# as the probe of the rate-distortion study measured them on the shared 2-core machine (load ~4.5): `--deadline` uses
# them to skip a row that would not finish in time (it is recorded under `skipped` with its estimate)
EST_S_PER_STEP = {16: 0.1, 32: 0.12, 64: 0.16, 128: 0.36, 256: 1.14, 'coda': 0.23}
EST_EVAL_S = 180   # the held-out evaluation and rFID of one row, loaded


def _fits(row, deadline, extra=0.0, measured=None):
    """Whether `row` is expected to finish before `deadline` (seconds since the epoch; None: always); returns (fits,
    estimate_s). `measured`: s/step by width that rows of this run measured, used before the table above."""
    key = 'coda' if row.get('method') == 'coda' else row['dim']
    est = row['steps'] * (measured or {}).get(key, EST_S_PER_STEP.get(key, 1.0)) + extra
    return (deadline is None or time.time() + est <= deadline), est


def _deadline(hhmm):
    "`HH:MM` (UTC, today) as seconds since the epoch; None stays None."
    if not hhmm: return None
    import calendar
    h, m = map(int, hhmm.split(':')); t = time.gmtime()
    return calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, h, m, 0))


def _version(pkg):
    from importlib.metadata import version, PackageNotFoundError
    try: return version(pkg)
    except PackageNotFoundError: return None


def write_results(res: dict, meta: dict, out: Path, t0: float):
    "Stamp `meta` (the end load average, time and total seconds since `t0`) and write `res` to `out` atomically: a stopped run keeps the rows it finished."
    meta.update(loadavg_end=os.getloadavg(), finished=time.strftime('%Y-%m-%d %H:%M:%S'), total_s=time.time() - t0)
    out.parent.mkdir(parents=True, exist_ok=True); tmp = out.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(res, indent=1, default=float)); os.replace(tmp, out)


def run_meta(script: str, call: str, budget: str, **extra) -> dict:
    """The run metadata a study's JSON starts with: the command (the argv when `script` -- the module name, e.g.
    'latentbit_study' -- is the program being run, `call` otherwise, e.g. "latentbit_study.main_rd('full')"), torch's
    threads, `OMP_NUM_THREADS`, the versions, the machine, the load average at the start, `budget`, the VAE, LPIPS and
    the start time; `extra` adds keys or replaces these (e.g. `study=`, `vae=`). Call it after `torch.set_num_threads`."""
    import torch
    as_script = Path(sys.argv[0]).name == f'{script}.py' if sys.argv and sys.argv[0] else False
    meta = dict(command=' '.join([Path(sys.executable).name, *sys.argv]) if as_script else call,
                threads=torch.get_num_threads(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'), torch=torch.__version__,
                coda_nb=_version('coda_nb'), python=platform.python_version(), machine=platform.machine(),
                loadavg_start=os.getloadavg(), budget=budget, vae='TAEF2 (real weights)',
                lpips='off: the VGG16 weights (vgg16-397923af.pth) are not on this machine', started=time.strftime('%Y-%m-%d %H:%M:%S'))
    return meta | extra


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
    cfg = LatentBitTrainConfig.from_preset('latentbit-taef2-tiny', out=str(out_dir), steps=row['steps'], n_train=row.get('n_train', B['n_train']),
                                           batch_size=B['batch'], log_every=max(1, row['steps'] // 20), ckpt_every=0,
                                           progress=False, seed=seed, vae_path=str(vae_path), **kw)
    t0 = time.time()
    task = _task(tok)
    r = fit(task, cfg)                     # what `train_latentbit` runs, with the latent cache shared between rows
    secs = time.time() - t0 - task.cache_s   # the training steps' wall time; caching the latents is `cache_s`
    shutil.rmtree(out_dir, ignore_errors=True)
    log = [{k: float(v) for k, v in h.items() if k in ('step', 'loss', 'rec', 'commit', 'latent_mse', 'bit_balance')} for h in r['history']]
    return tok.eval(), dict(row=row, n_train=cfg.n_train, train_s=secs, cache_s=task.cache_s, s_per_step=secs / row['steps'], params=trainable_params(tok),
                            bpp=tok.bits_per_pixel, cached_latents=task.cache, train_log=log,
                            config=dict(lr=cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, l1=cfg.l1, l2=cfg.l2,
                                        latent_l2=cfg.latent_l2, latent_only=cfg.latent_only, batch_size=cfg.batch_size,
                                        commitment_weight=getattr(tok.quantizer, 'commitment_weight', None)))


def train_coda_row(row, B, vae_path, out_dir, seed=0):
    """One CODA row: the preset `coda-taef2-tiny` at the row's V and scales, no LoRA, trained on the shared tokenizer task
    with the latent objective of LatentBit's rows (`latent_only`, its quantization loss + `latent_l2 = 1`), the codebook
    lr and entropy weight of `coda-taef2-small` (1e-2, 0), LatentBit's warm-up; returns `(tokenizer, record)`."""
    from coda_nb.tokenizers.coda import build_tokenizer
    from coda_nb.training.coda import CODATrainConfig
    from coda_nb.training.loop import fit
    tok = build_tokenizer('coda-taef2-tiny', vae_path=vae_path, seed=seed, **{'lora.rank': 0, 'lora.encoder': False, 'lora.decoder': False,
                          'quantizer.codebook_size': row['V'], 'quantizer.scales': row['scales']})
    cfg = CODATrainConfig.from_preset('coda-taef2-tiny', out=str(out_dir), image_size=64, steps=row['steps'], n_train=B['n_train'],
                                      batch_size=B['batch'], log_every=max(1, row['steps'] // 20), ckpt_every=0, progress=False,
                                      seed=seed, vae_path=str(vae_path), latent_only=True, latent_l2=1.0, codebook_lr=1e-2,
                                      entropy_weight=0.0, ema=False, warmup_steps=20, lora_encoder=False, lora_decoder=False)
    t0 = time.time()
    task = _task(tok)
    r = fit(task, cfg)
    secs = time.time() - t0 - task.cache_s
    shutil.rmtree(out_dir, ignore_errors=True)
    log = [{k: float(v) for k, v in h.items() if k in ('step', 'loss', 'quant', 'latent_mse')} for h in r['history']]
    tokens = sum(h * w for h, w in tok.scales)
    return tok.eval(), dict(row=row, train_s=secs, cache_s=task.cache_s, s_per_step=secs / row['steps'], params=trainable_params_coda(tok),
                            tokens=tokens, bpp=tokens * math.log2(row['V']) / 64 ** 2, cached_latents=task.cache, train_log=log,
                            config=dict(lr=cfg.lr, codebook_lr=cfg.codebook_lr, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps,
                                        latent_l2=cfg.latent_l2, latent_only=cfg.latent_only, batch_size=cfg.batch_size,
                                        entropy_weight=cfg.entropy_weight, quant_weight=cfg.quant_weight,
                                        quantizer=dict(tok.config['quantizer']), lora=dict(tok.config['lora'])))


def trainable_params_coda(tok) -> int: return sum(p.numel() for p in tok.quantizer.parameters() if p.requires_grad)


def memo_encode(vae, memo):
    "Reuse the held-out crops' TAEF2 latents across rows: `vae.encode` memoized on the batch's bytes (the mode only)."
    enc = vae.encode
    def encode(x, *a, sample=False, **k):
        if sample or a or any(v is not None for v in k.values()): return enc(x, *a, sample=sample, **k)
        key = (type(vae).__name__, hashlib.sha1(x.detach().contiguous().cpu().numpy().tobytes()).hexdigest())
        if key not in memo: memo[key] = enc(x)
        return memo[key]
    vae.encode = encode
    return vae


def probe_steps(vae_path, B, n=8, warm=2):
    """s/step of one training step (forward, backward, AdamW) on one batch of 16 cached latents, outside the trainer:
    LatentBit's latent objective at widths 64/128/256 (D = 64), CODA's latent objective and CODA's pixel objective
    (L1 + L2 through the frozen TAEF2 decoder) at V = 1024, scales 1..8."""
    import torch
    from coda_nb.tokenizers.latentbit import build_latentbit
    from coda_nb.tokenizers.coda import build_tokenizer
    from coda_nb.data.photos import PhotoCrops
    from coda_nb.training.losses import reconstruction_loss
    ds = PhotoCrops(size=64, n=B['batch'], split='train', seed=0)
    x = torch.stack([ds[i] for i in range(len(ds))])
    out = {}
    def bench(name, tok, pixel, params, steps=n):
        opt = torch.optim.AdamW(params, lr=1e-3)
        tok.train(); f = tok.vae.encode(x).detach(); ts = []
        for _ in range(steps):
            t = time.time()
            o = tok(x, latent=f, decode=pixel)
            loss = sum(v for v in o.losses.values() if v is not None) + (o.f_hat - o.f).pow(2).mean()
            if pixel: loss = loss + reconstruction_loss(o.x_hat.float(), x, 0.2, 1.0)
            opt.zero_grad(); loss.backward(); opt.step(); ts.append(time.time() - t)
        out[name] = dict(s_per_step=sum(ts[warm:]) / len(ts[warm:]), params=sum(p.numel() for p in params), steps_timed=len(ts) - warm)
    for w in (64, 128, 256):
        tok = build_latentbit('latentbit-taef2-tiny', vae_path=vae_path, bits=64, dim=w, depth=2, heads=max(1, w // 16))
        bench(f'latentbit-D64-w{w}-latent', tok, False, tok.trainable_parameters())
    tok = build_tokenizer('coda-taef2-tiny', vae_path=vae_path, **{'lora.rank': 0})
    bench('coda-V1024-s1..8-latent', tok, False, trainable_params_list(tok))
    bench('coda-V1024-s1..8-pixel', tok, True, trainable_params_list(tok), steps=5)
    return out


def trainable_params_list(tok): return [p for p in tok.quantizer.parameters() if p.requires_grad]


def main_rd(budget='full', out=None, log=print, deadline=None):
    """The rate-distortion study: the continuous TAEF2, then each row trained, scored with `evaluate` on `n_eval`
    held-out crops, and rFID on the first `fid_n` of them against one set of real-image statistics; the JSON is
    rewritten after each row."""
    import torch
    torch.set_num_threads(1)
    from coda_nb.weights import find_weights
    from coda_nb.vae.load import load_vae
    from coda_nb.data.photos import PhotoCrops
    from coda_nb.eval.reconstruction import evaluate
    from coda_nb.eval.metrics import StreamingFID, InceptionFeatures
    B = BUDGETS['rd'][budget]
    out = Path(out or OUT/f"latentbit_rd{'' if budget == 'full' else '_' + budget}.json")
    vae_path = find_weights('taef2', required=True)
    t_all = time.time()
    meta = run_meta('latentbit_study', f'latentbit_study.main_rd({budget!r})', budget, study='rd')
    res = dict(meta=meta, budget=B, timing={}, runs={})
    def save():
        write_results(res, meta, out, t_all)
    if B.get('probe'):
        t = time.time(); res['probe'] = probe_steps(vae_path, B); res['timing']['probe_s'] = time.time() - t; save()
        log({k: f"{v['s_per_step']:.3f} s/step, {v['params'] / 1e6:.3f} M" for k, v in res['probe'].items()})
    held = PhotoCrops(size=64, n=B['n_eval'], split='test', seed=0)
    held_fid = PhotoCrops(size=64, n=B['fid_n'], split='test', seed=0) if B['fid_n'] else None
    memo = {}
    vae = memo_encode(load_vae('tae', vae_path), memo)
    x_eval = torch.stack([held[i] for i in range(len(held))])
    with torch.no_grad(): f = torch.cat([vae.encode(c) for c in x_eval.split(64)])
    res['latent'] = dict(var=f.var().item(), mean_square=f.pow(2).mean().item())
    t = time.time(); res['continuous'] = evaluate(vae, held, batch_size=64, fid=False, progress=False); res['timing']['eval_continuous_s'] = time.time() - t
    inc, real = None, None
    def rfid(model):
        nonlocal inc, real
        if not held_fid: return None
        inc = inc or InceptionFeatures()
        if real is None:
            t = time.time(); real = StreamingFID(inc, batch_size=50).update(real=torch.stack([held_fid[i] for i in range(len(held_fid))])).real
            res['timing']['fid_real_s'] = time.time() - t; res['timing']['fid_n'] = B['fid_n']
        sf = StreamingFID(inc, batch_size=50); sf.real = copy.deepcopy(real)
        t = time.time(); r = evaluate(model, held_fid, batch_size=50, fid=sf, fid_real=False, progress=False)
        return dict(rfid=r['rfid'], n=r['n_images'], s=time.time() - t)
    res['continuous']['fid'] = rfid(vae); save()
    log(f"continuous TAEF2: PSNR {res['continuous']['psnr']:.2f}  rFID {(res['continuous']['fid'] or {}).get('rfid', float('nan')):.2f}  ({time.time() - t_all:.0f} s)")
    tmp = Path(tempfile.mkdtemp(prefix='lbrd-'))
    for row in B['rows']:
        ok, est = _fits(row, deadline, EST_EVAL_S)
        if not ok:
            res.setdefault('skipped', {})[row['name']] = dict(estimate_s=est, reason='would not finish before the deadline', at=time.strftime('%H:%M:%S'))
            log(f"{row['name']}: skipped (estimated {est:.0f} s)"); save(); continue
        tok, rec = (train_coda_row if row['method'] == 'coda' else train_row)(row, B, vae_path, tmp/row['name'])
        if row['method'] == 'latentbit': rec['params'] = trainable_params(tok)
        memo_encode(tok.vae, memo)
        t = time.time()
        rec['final'] = evaluate(tok, held, batch_size=64, fid=False, progress=False)
        rec['eval_s'] = time.time() - t
        rec['fid'] = rfid(tok)
        rec['bits'] = bit_usage(tok, x_eval) if row['method'] == 'latentbit' else {}
        res['runs'][row['name']] = rec
        log(f"{row['name']:>22}: {rec['bpp']:.3f} bpp  {rec['train_s']:6.0f} s ({rec['s_per_step']:.3f} s/step)  {rec['params'] / 1e6:.3f} M  "
            f"PSNR {rec['final']['psnr']:.2f}  SSIM {rec['final']['ssim']:.4f}  rFID {(rec['fid'] or {}).get('rfid', float('nan')):.2f}  "
            f"latent MSE {rec['final']['quant_error']:.3f} (var {res['latent']['var']:.3f})  ({time.time() - t_all:.0f} s)")
        save()
    shutil.rmtree(tmp, ignore_errors=True)
    return res


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


def main(study='objective', budget='full', out=None, log=print, deadline=None, rows=None, merge=False):
    """Run the rows of `study` at `budget` (`rows`: only those names); the JSON is rewritten after each row, so a stopped
    run keeps what it finished. `merge`: keep the rows already in `out` (run on the same crops and budget) and add these."""
    if study == 'rd': return main_rd(budget, out, log, deadline)
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
    meta = run_meta('latentbit_study', f'latentbit_study.main({study!r}, {budget!r})', budget, study=study)
    held = PhotoCrops(size=64, n=B['n_eval'], split='test', seed=0)
    x_eval = torch.stack([held[i] for i in range(len(held))])
    memo = {}
    vae = memo_encode(load_vae('tae', vae_path), memo)
    with torch.no_grad(): f = torch.cat([vae.encode(c) for c in x_eval.split(64)])
    latent = dict(var=f.var().item(), mean_square=f.pow(2).mean().item(), var_about_channel_mean=f.transpose(0, 1).flatten(1).var(1).mean().item())
    res = dict(meta=meta, budget=B, latent=latent, continuous=evaluate(vae, held, batch_size=64, fid=False, progress=False), runs={})
    if merge and out.exists():
        old = json.loads(out.read_text())
        if old['budget']['n_eval'] != B['n_eval'] or old['budget']['n_train'] != B['n_train']:
            raise ValueError(f"--merge: {out.name} was run at another budget ({old['budget']['n_train']} train / {old['budget']['n_eval']} held-out crops)")
        res['runs'] = old['runs']
        meta['merged'] = old['meta'].get('merged', []) + [{k: old['meta'].get(k) for k in ('command', 'started', 'finished', 'loadavg_start', 'loadavg_end')}]
    tmp = Path(tempfile.mkdtemp(prefix='lbstudy-'))
    todo = [r for r in B['rows'] if rows is None or r['name'] in rows]
    if rows and len(todo) != len(rows):
        raise ValueError(f"unknown rows {sorted(set(rows) - {r['name'] for r in B['rows']})}; the {study} study has {[r['name'] for r in B['rows']]}")
    for row in todo:
        measured = {r['row']['dim']: r['s_per_step'] for r in res['runs'].values() if 'dim' in r.get('row', {})}
        ok, est = _fits(row, deadline, 60, measured)
        if not ok:
            res.setdefault('skipped', {})[row['name']] = dict(estimate_s=est, reason='would not finish before the deadline', at=time.strftime('%H:%M:%S'))
            log(f"{row['name']}: skipped (estimated {est:.0f} s)"); out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=1, default=float)); continue
        tok, rec = train_row(row, B, vae_path, tmp/row['name'])
        memo_encode(tok.vae, memo)
        t = time.time()
        rec['final'] = evaluate(tok, held, batch_size=64, fid=False, progress=False)
        rec['eval_s'] = time.time() - t
        rec['bits'] = bit_usage(tok, x_eval)
        res['runs'][row['name']] = rec
        log(f"{row['name']:>18}: {rec['train_s']:6.0f} s ({rec['s_per_step']:.3f} s/step)  {rec['params'] / 1e6:.2f} M  "
            f"PSNR {rec['final']['psnr']:.2f}  latent MSE {rec['final']['quant_error']:.3f} (var {latent['var']:.3f})  "
            f"dead bits {rec['bits'].get('dead_bits', '-')}  ({time.time() - t_all:.0f} s)")
        write_results(res, meta, out, t_all)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('study', choices=list(BUDGETS))
    p.add_argument('--budget', choices=['full', 'short', 'reduced'], default='full')
    p.add_argument('--out', default=None)
    p.add_argument('--deadline', default=None, help='HH:MM (UTC): start a row only if it is expected to finish by then')
    p.add_argument('--rows', nargs='*', default=None, help='run only these rows (capacity and objective studies)')
    p.add_argument('--merge', action='store_true', help="keep the rows already in the JSON and add these")
    a = p.parse_args()
    main(a.study, a.budget, a.out, deadline=_deadline(a.deadline), rows=a.rows, merge=a.merge)
