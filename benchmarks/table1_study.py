"""Table 1 of the CODA paper at CPU scale, every row under the paper's objective, with seeds, two codebook sizes, rFID on
1000 held-out crops, and the diagnosis of issue 12 (per-level / per-channel error, entropy weight / temperature /
codebook lr sweeps, the entropy term's batch-mean part, decoder sensitivity).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/table1_study.py [--budget full|reduced] [--out PATH]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/table1_study.py --tuned     # then: every row at its own best codebook lr

Rows are the presets `coda-taef2-t1-{vq,rq,attn,lora}` (`coda_nb.presets`): TAEF2, 32 px photo crops, the same data,
init seed, steps, batch and objective (L1 + L2 through the frozen TAEF2 decoder, quantization loss, entropy term; no
LPIPS: the VGG16 weights are not offline here). Training is `coda_nb.training.coda.train` (the shared loop); the VAE is
frozen except in the LoRA row, so the other rows cache their latents and only the decoder runs per step. Learning curves
are the trainer's own `eval_every` evaluations (PSNR, quantization error, utilization on the first `eval_n` held-out
crops). Results go to benchmarks/results/table1_study[_reduced].json; `nbs/paper/coda/55_table1_study.ipynb` plots them.
One thread, one process. Every number in the JSON comes with the command, thread count, versions and wall times.
"""
from __future__ import annotations
import argparse, json, math, os, platform, sys, tempfile, time, shutil
from pathlib import Path

BUDGETS = dict(
    full=dict(size=32, n_train=1024, steps=200, batch=16, eval_every=20, val_n=128, n_eval=1000, seeds=[0, 1, 2],
              sizes=[1024, 4096], rows={1024: ['vq', 'rq', 'attn', 'attn-e0', 'lora'], 4096: ['rq', 'attn', 'attn-e0']},
              fid_n=1000, fid_keys=['vq/V1024', 'rq/V1024', 'attn/V1024', 'attn-e0/V1024', 'lora/V1024'],
              fid_keys_late=['rq/V4096', 'attn/V4096'],
              sweeps=[('attn', 'entropy_weight', [0.0, 0.01, 0.1]), ('attn', 'entropy_temperature', [0.1, 1.0]),
                      ('attn', 'codebook_lr', [1e-2]), ('rq', 'codebook_lr', [3e-3, 1e-2]), ('vq', 'codebook_lr', [1e-2]),
                      ('rq', 'steps', [600]), ('attn', 'steps', [600])],
              diag_n=256, probe_batches=[4, 16, 64, 256]),
    reduced=dict(size=32, n_train=32, steps=4, batch=4, eval_every=2, val_n=8, n_eval=16, seeds=[0, 1], sizes=[64, 128],
                 rows={64: ['vq', 'rq', 'attn', 'attn-e0', 'lora'], 128: ['rq', 'attn']}, fid_n=0, fid_keys=[], fid_keys_late=[],
                 sweeps=[('attn', 'entropy_weight', [0.0]), ('rq', 'codebook_lr', [1e-2])], diag_n=16, probe_batches=[4, 16]),
)
ROWS = ['vq', 'rq', 'attn', 'lora']   # + 'attn-e0': the attention row with entropy weight 0
OUT = Path(__file__).resolve().parent/'results'


def _version(pkg):
    from importlib.metadata import version, PackageNotFoundError
    try: return version(pkg)
    except PackageNotFoundError: return None


def run_key(row, V, seed, tag=''): return f'{row}{tag}/V{V}/s{seed}'


def train_row(row, V, seed, B, vae_path, out_dir, quantizer_kw=None, **train_kw):
    "Train one row with the preset's objective; returns `(tokenizer, record)`: final metrics come later, the curve now."
    import torch
    from coda_nb.presets import get_preset
    from coda_nb.tokenizers.coda import build_tokenizer
    from coda_nb.training.coda import CODATrainConfig, train
    m = get_preset(f'coda-taef2-t1-{row}').model
    m['quantizer']['codebook_size'] = V
    m['quantizer'] |= quantizer_kw or {}
    tok = build_tokenizer(m, vae_path=vae_path, seed=seed)
    cfg = CODATrainConfig.from_preset(f'coda-taef2-t1-{row}', image_size=B['size'], n_train=B['n_train'], steps=B['steps'],
                                      batch_size=B['batch'], eval_every=B['eval_every'], eval_n=B['val_n'], seed=seed,
                                      progress=False, out=str(out_dir), **train_kw)
    t0 = time.time()
    r = train(cfg, tokenizer=tok)
    secs = time.time() - t0
    hist = r['history']
    curve = [dict(step=h['step'], **{k: h['eval'][k] for k in ('psnr', 'quant_error', 'utilization', 'ssim') if k in h['eval']})
             for h in hist if 'eval' in h]
    logs = [{k: v for k, v in h.items() if k != 'eval'} for h in hist if 'eval' not in h]
    shutil.rmtree(out_dir, ignore_errors=True)
    return tok.eval(), dict(row=row, V=V, seed=seed, train_s=secs, cached_latents=r['cached_latents'], curve=curve, train_log=logs,
                            config=dict(entropy_weight=cfg.entropy_weight, lr=cfg.lr, codebook_lr=cfg.codebook_lr,
                                        steps=cfg.steps, batch_size=cfg.batch_size, quantizer=m['quantizer'], lora=m['lora']))


def reconstructions(model, x, batch=64):
    import torch
    from coda_nb.eval.reconstruction import reconstruct
    with torch.no_grad(): return torch.cat([reconstruct(model, c)[0].float().clamp(-1, 1) for c in x.split(batch)])


def fid_at_n(real_ND, fake_ND, ns):
    "rFID of the first `n` real vs first `n` fake features for each n, and (n < N) mean/sd over disjoint blocks of n."
    import torch
    from coda_nb.eval.metrics import FeatureStats, frechet_distance
    def fd(a, b):
        sa, sb = FeatureStats(a.shape[1]).update(a), FeatureStats(b.shape[1]).update(b)
        return frechet_distance(sa.mean, sa.cov, sb.mean, sb.cov)
    out = {}
    for n in ns:
        blocks = [fd(real_ND[i:i + n], fake_ND[i:i + n]) for i in range(0, len(real_ND) - n + 1, n)]
        t = torch.tensor(blocks, dtype=torch.float64)
        out[str(n)] = dict(first=blocks[0], mean=float(t.mean()), sd=float(t.std()) if len(blocks) > 1 else 0.0, blocks=len(blocks))
    return out


def diagnose(toks, vae, x, B):
    "Per-level / per-channel quantization error, decoder sensitivity, for the seed-0 models at each V."
    import torch, torch.nn.functional as F
    from coda_nb.figures import prefix_latents
    from coda_nb.tokenizers.coda import CODATokenizer
    out = {}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        f0 = torch.cat([vae.encode(c) for c in x.split(64)])
        x0 = torch.cat([vae.decode(c) for c in f0.split(64)]).clamp(-1, 1)
        var_c = f0.var(dim=(0, 2, 3))
        for key, tok in toks.items():
            f = torch.cat([tok.vae.encode(c) for c in x.split(64)])         # LoRA row: its own encoder
            q = tok.quantizer(f, compute_loss=False)
            pre = prefix_latents(q)
            lvl = [float((f - p).pow(2).mean()) for p in pre]
            err = f - q.f_hat
            ch = err.pow(2).mean(dim=(0, 2, 3))
            dec = lambda z: torch.cat([tok.decode(c) for c in z.split(64)])
            xd, xq = dec(f), dec(q.f_hat)
            lat_mse = float(err.pow(2).mean())
            pix_q = float((xq - xd).pow(2).mean())              # pixel error the quantization error causes (same decoder)
            # the same latent MSE as isotropic noise, and as noise shaped like the quantizer's per-channel error
            n_iso = torch.randn(f.shape, generator=g) * math.sqrt(lat_mse)
            n_ch = torch.randn(f.shape, generator=g) * ch.sqrt()[None, :, None, None]
            pix_iso = float((dec(f + n_iso) - xd).pow(2).mean()); pix_ch = float((dec(f + n_ch) - xd).pow(2).mean())
            out[key] = dict(level_error=lvl, channel_error=ch.tolist(), channel_var=var_c.tolist(),
                            latent_mse=lat_mse, pixel_mse=pix_q, sensitivity=pix_q / lat_mse,
                            sensitivity_iso_noise=pix_iso / lat_mse, sensitivity_channel_noise=pix_ch / lat_mse,
                            pixel_mse_vs_input=float((xq.clamp(-1, 1) - x).pow(2).mean()),
                            vae_pixel_mse_vs_input=float((x0 - x).pow(2).mean()))
    return out


def entropy_probe(tok, x_N3HW, f_NChw, batches=(16, 64, 256), seed=0):
    """The entropy term on a trained attention quantizer: per level, tokens per batch, sample entropy, batch-mean entropy,
    and the gradient norms (quantizer parameters) of the pixel loss, the quantization loss and each entropy part,
    with the cosine between the pixel-loss and entropy-loss gradients; at several batch sizes."""
    import torch, torch.nn.functional as F
    from coda_nb.training.losses import reconstruction_loss
    params = [p for p in tok.quantizer.parameters() if p.requires_grad]
    def grad(loss):
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, params)])
    out = {}
    g = torch.Generator().manual_seed(seed)
    tok.train()
    for b in batches:
        if b > len(f_NChw): continue
        i = torch.randperm(len(f_NChw), generator=g)[:b]
        f, x = f_NChw[i], x_N3HW[i]
        o = tok.quantizer(f, compute_loss=True, track_usage=False)
        x_hat = tok.decode(o.f_hat)
        rec = reconstruction_loss(x_hat, x, 0.2, 1.0)
        L = len(o.levels)
        sample = torch.stack([lv.sample_entropy for lv in o.levels]).mean()
        avg = torch.stack([lv.avg_entropy for lv in o.levels]).mean()
        gr, gq, gs, ga = grad(rec), grad(o.quant_loss), grad(sample), grad(-avg)
        ge = gs + ga
        cos = lambda a, c: float(F.cosine_similarity(a[None], c[None])) if a.norm() > 0 and c.norm() > 0 else float('nan')
        out[str(b)] = dict(tokens_per_level=[b * h * w for h, w in tok.scales],
                           sample_entropy=[float(lv.sample_entropy.detach()) for lv in o.levels],
                           avg_entropy=[float(lv.avg_entropy.detach()) for lv in o.levels],
                           max_avg_entropy=[math.log(min(b * h * w, tok.quantizer.codebook_size)) for h, w in tok.scales],
                           grad_norm=dict(pixel=float(gr.norm()), quant=float(gq.norm()), entropy=float(ge.norm()),
                                          entropy_sample=float(gs.norm()), entropy_batch_mean=float(ga.norm())),
                           cos_pixel_entropy=cos(-gr, -ge), cos_pixel_batch_mean=cos(-gr, -ga), cos_pixel_quant=cos(-gr, -gq))
    tok.eval()
    return out


def grad_reaches_codebook(row, V, vae_path, size=32):
    "Does the pixel loss alone give the codebook a gradient? (VQ/RQ: no, the straight-through estimator blocks it.)"
    import torch
    from coda_nb.presets import get_preset
    from coda_nb.tokenizers.coda import build_tokenizer
    m = get_preset(f'coda-taef2-t1-{row}').model; m['quantizer']['codebook_size'] = V
    tok = build_tokenizer(m, vae_path=vae_path, seed=0).train()
    from coda_nb.data.photos import photo_batch
    x = photo_batch(4, size, split='train')
    o = tok(x)
    torch.nn.functional.mse_loss(o.x_hat, x).backward()
    return {n: float(p.grad.norm()) if p.grad is not None else 0.0 for n, p in tok.quantizer.named_parameters()}


def main(budget='full', out=None, log=print):
    """Stages, each saved to the JSON as soon as it is done (a stopped run keeps what it finished): 1. the rows at the
    first V, all seeds; 2. rFID of those rows (first seed); 3. diagnosis; 4. the rows at the other V; 5. sweeps;
    6. rFID of the other V's rows."""
    import torch
    torch.set_num_threads(1)
    from coda_nb.weights import find_weights
    from coda_nb.vae.load import load_vae
    from coda_nb.data.photos import PhotoCrops
    from coda_nb.eval.reconstruction import evaluate
    B = BUDGETS[budget]
    out = Path(out or OUT/f"table1_study{'' if budget == 'full' else '_' + budget}.json")
    vae_path = find_weights('taef2', required=True)
    t_all = time.time(); timing = {}
    meta = dict(command=' '.join([Path(sys.executable).name, *sys.argv]) if __name__ == '__main__' else f'table1_study.main({budget!r})',
                threads=torch.get_num_threads(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'), torch=torch.__version__,
                coda_nb=_version('coda_nb'), python=platform.python_version(), machine=platform.machine(), processor=platform.processor(),
                loadavg_start=os.getloadavg(), budget=budget, lpips='off: the VGG16 weights (vgg16-397923af.pth) are not on this machine',
                vae='TAEF2 (real weights)', started=time.strftime('%Y-%m-%d %H:%M:%S'))
    tmp = Path(tempfile.mkdtemp(prefix='t1study-'))
    held = PhotoCrops(size=B['size'], n=B['n_eval'], split='test', seed=0)
    x_eval = torch.stack([held[i] for i in range(len(held))])
    vae = load_vae('tae', vae_path)
    res = dict(meta=meta, budget={k: (v if k != 'rows' else {str(a): b for a, b in v.items()}) for k, v in B.items()}, timing=timing,
               continuous=evaluate(vae, held, batch_size=64, fid=False, progress=False), runs={}, fid={}, stages_done=[])
    runs, toks, s0 = res['runs'], {}, B['seeds'][0]

    def save(stage):
        res['stages_done'].append(stage); timing['total_s'] = time.time() - t_all
        meta.update(loadavg_end=os.getloadavg(), finished=time.strftime('%Y-%m-%d %H:%M:%S'))
        out.parent.mkdir(parents=True, exist_ok=True); out.write_text(json.dumps(res, indent=1, default=float))
        log(f'[{stage} saved to {out}, {timing["total_s"]:.0f} s]')

    def one(row, V, seed, k, b=B, quantizer_kw=None, **kw):
        base, tag = (row[:-3], '-e0') if row.endswith('-e0') else (row, '')
        if tag: kw |= dict(entropy_weight=0.0)
        tok, rec = train_row(base, V, seed, b, vae_path, tmp/k.replace('/', '_').replace('=', ''), quantizer_kw=quantizer_kw, **kw)
        rec['row'] = row
        rec['final'] = evaluate(tok, held, batch_size=64, fid=False, progress=False)
        runs[k] = rec
        log(f"{k:>32}: {rec['train_s']:5.1f} s  PSNR {rec['final']['psnr']:.2f}  qerr {rec['final']['quant_error']:.4f}  "
            f"util {rec['final'].get('utilization', float('nan')):.1f}%  ({time.time() - t_all:.0f} s)")
        return tok

    def rows_at(V, stage):
        t = time.time()
        for seed in B['seeds']:
            for row in B['rows'][V]:
                k = f'{row}/V{V}/s{seed}'; tok = one(row, V, seed, k)
                if seed == s0: toks[k] = tok
        timing[stage] = time.time() - t; save(stage)

    inc, real = None, None
    def fid_stage(keys, stage):
        nonlocal inc, real
        t = time.time()
        if B['fid_n']:
            from coda_nb.eval.metrics import InceptionFeatures
            inc = inc or InceptionFeatures()
            feats = lambda imgs: torch.cat([inc(c) for c in imgs.split(50)]).double()
            n = B['fid_n']; ns = [m for m in (100, 250, 500, 1000) if m <= n]
            if real is None:
                real = feats(x_eval[:n]); log(f'real features ({time.time() - t:.0f} s)')
                res['fid']['continuous'] = fid_at_n(real, feats(reconstructions(vae, x_eval[:n])), ns)
            for key in keys:
                row, V = key.split('/'); k = f'{row}/{V}/s{s0}'
                res['fid'][k] = fid_at_n(real, feats(reconstructions(toks[k], x_eval[:n])), ns)
                log(f"rFID {k}: {res['fid'][k][str(n)]['first']:.2f} (n={n})  ({time.time() - t:.0f} s)")
        timing[stage] = time.time() - t; save(stage)

    V0, V1 = B['sizes'][0], B['sizes'][-1]
    rows_at(V0, f'train_V{V0}_s')
    fid_stage(B['fid_keys'], f'fid_V{V0}_s')

    t = time.time()
    tr = PhotoCrops(size=B['size'], n=256, split='train', seed=s0)
    train_x = torch.stack([tr[i] for i in range(len(tr))])
    with torch.no_grad(): train_f = torch.cat([vae.encode(c) for c in train_x.split(64)])
    res['pixel_loss_grad_on_quantizer'] = {row: grad_reaches_codebook(row, V0, vae_path) for row in ('rq', 'attn')}
    res['diagnosis'] = diagnose({k: v for k, v in toks.items()}, vae, x_eval[:B['diag_n']], B)
    res['entropy_probe'] = {k: entropy_probe(toks[k], train_x, train_f, batches=B['probe_batches']) for k in toks if k.startswith('attn')}
    timing['diagnosis_s'] = time.time() - t; save('diagnosis_s')

    if V1 != V0:
        rows_at(V1, f'train_V{V1}_s')
        res['diagnosis'] |= diagnose({k: v for k, v in toks.items() if f'/V{V1}/' in k}, vae, x_eval[:B['diag_n']], B)
        save('diagnosis_V1')

    t = time.time()
    for row, name, values in B['sweeps']:
        for v in values:
            k = f'{row}-{name}={v}/V{V0}/s{s0}'
            if name == 'entropy_weight' and v == 0.0: runs[k] = runs[f'attn-e0/V{V0}/s{s0}']; continue
            qkw, tkw = (dict(entropy_temperature=v), {}) if name == 'entropy_temperature' else ({}, {name: v})
            b = B | dict(steps=v) if name == 'steps' else B
            one(row, V0, s0, k, b, quantizer_kw=qkw, **{kk: vv for kk, vv in tkw.items() if kk != 'steps'})
    timing['sweeps_s'] = time.time() - t; save('sweeps_s')

    fid_stage(B['fid_keys_late'], f'fid_V{V1}_s')
    shutil.rmtree(tmp, ignore_errors=True)
    log(f'wrote {out} in {timing["total_s"]:.0f} s')
    return res


def best_codebook_lr(R, row, V0, s0=0, last=3):
    "The codebook lr (the main row's or a swept one) with the lowest final *training* pixel loss (mean of the last `last` logs)."
    cands = {R['runs'][f'{row}/V{V0}/s{s0}']['config']['codebook_lr'] or R['runs'][f'{row}/V{V0}/s{s0}']['config']['lr']:
             R['runs'][f'{row}/V{V0}/s{s0}']}
    cands |= {r['config']['codebook_lr']: r for k, r in R['runs'].items() if k.startswith(f'{row}-codebook_lr=')}
    score = {lr: sum(l['rec'] for l in r['train_log'][-last:]) / last for lr, r in cands.items()}
    return min(score, key=score.get), score


def tuned(src=None, out=None, log=print, rows=None):
    """Stage 7, a second command: every row again at its own best codebook lr (chosen on the training pixel loss of the
    full run's sweep, never on held-out crops), same seeds, steps and batch; final metrics on the same held-out crops."""
    import torch
    torch.set_num_threads(1)
    from coda_nb.weights import find_weights
    from coda_nb.data.photos import PhotoCrops
    from coda_nb.eval.reconstruction import evaluate
    src = Path(src or OUT/'table1_study.json'); R = json.loads(src.read_text())
    B = R['budget']; V0 = B['sizes'][0]
    out = Path(out or OUT/'table1_study_tuned.json')
    vae_path = find_weights('taef2', required=True)
    held = PhotoCrops(size=B['size'], n=B['n_eval'], split='test', seed=0)
    t_all = time.time(); tmp = Path(tempfile.mkdtemp(prefix='t1tuned-'))
    choice = {row: best_codebook_lr(R, row, V0) for row in ('vq', 'rq', 'attn')}
    choice['attn-e0'] = choice['attn']
    res = dict(meta=dict(command=' '.join([Path(sys.executable).name, *sys.argv]) if __name__ == '__main__' else 'table1_study.tuned()',
                         threads=torch.get_num_threads(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'), torch=torch.__version__,
                         loadavg_start=os.getloadavg(), started=time.strftime('%Y-%m-%d %H:%M:%S'), source=str(src.name)),
               choice={r: dict(codebook_lr=c[0], train_rec_by_lr={str(k): v for k, v in c[1].items()}) for r, c in choice.items()}, runs={})
    # first the quantizer-only control (issue 12's explanation 1): the same rows at lr 1e-3 without the pixel loss
    plan = rows or ([(V0, r, True) for r in ('rq', 'attn')] + [(V0, r, False) for r in ('vq', 'rq', 'attn', 'attn-e0')]
                    + [(B['sizes'][-1], r, False) for r in ('rq', 'attn')])
    for V, row, warmup in plan:
        for seed in B['seeds']:
            base = row.removesuffix('-e0'); kw = dict(entropy_weight=0.0) if row.endswith('-e0') else {}
            if warmup: kw['latent_only'] = True
            lr = 1e-3 if warmup else choice[row][0]
            tok, rec = train_row(base, V, seed, B, vae_path, tmp/f'{row}_{V}_{seed}', codebook_lr=lr, **kw)
            rec['row'] = row; rec['final'] = evaluate(tok, held, batch_size=64, fid=False, progress=False)
            name = f'{row}-latent_only' if warmup else row
            res['runs'][f'{name}/V{V}/s{seed}'] = rec
            log(f"tuned {name}/V{V}/s{seed} (codebook lr {lr:g}): PSNR {rec['final']['psnr']:.2f}  qerr {rec['final']['quant_error']:.4f}  "
                f"util {rec['final']['utilization']:.1f}%  ({time.time() - t_all:.0f} s)")
        res['meta'] |= dict(loadavg_end=os.getloadavg(), finished=time.strftime('%Y-%m-%d %H:%M:%S'), total_s=time.time() - t_all)
        out.write_text(json.dumps(res, indent=1, default=float))
    shutil.rmtree(tmp, ignore_errors=True)
    log(f'wrote {out} in {time.time() - t_all:.0f} s')
    return res


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--budget', default='full', choices=list(BUDGETS))
    ap.add_argument('--tuned', action='store_true', help="stage 7: every row at its best codebook lr (needs the full run's JSON)")
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    if a.tuned: tuned(out=a.out, log=lambda s: print(s, flush=True))
    else: main(a.budget, a.out, log=lambda s: print(s, flush=True))
