"""LatentBit's tokenizer ablations (the paper's Table 4) at CPU scale: (a) a frozen VAE against fine-tuning its decoder
(LoRA on the decoder, or the whole decoder unfrozen), and (b) the auxiliary objective: none, the entropy term, the
commitment loss, with the per-bit usage of the held-out tokens.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latentbit_ablations.py [--budget full|reduced] [--out PATH] [--rows ...]
        [--deadline HH:MM] [--merge]

Set-up (that of `benchmarks/latentbit_study.py`, whose `train_row`, shared latent cache and `bit_usage` are reused):
TAEF2 (real weights), 64 px photo crops, the preset `latentbit-taef2-tiny` at D = 64 (2 bits per TAEF2 channel), width
64, 2 blocks per half, trained on the shared tokenizer task with the latent term (`latent_only=True, latent_l2=1`).

(b) Each objective row is that training for the same steps from the same seed, with the quantizer's auxiliary loss
changed: `none` (commitment 0), `entropy` (the LFQ entropy term, weight 0.1, no commitment), `commit` (commitment 0.25,
the preset's and the paper's) and, last, both.

(a) The paper: "we first train the tokenizer following the procedure in Section 2. We then freeze the encoders and
fine-tune the decoders for additional steps." So every (a) row starts from the `commit` row's tokenizer (stage 1),
freezes the VAE encoder, the ViT encoder and the bottleneck, and trains for the same number of further steps with the
pixel loss through the decoder (0.2 L1 + L2, plus the latent term): the ViT decoder alone with the VAE frozen (`ft-frozen`,
the control at an equal budget in steps), the ViT decoder and LoRA (rank 4) on the VAE decoder's convs (`ft-lora`),
or the ViT decoder and the whole VAE decoder (`ft-full`). `base` is stage 1 alone (the paper's Base row).

Scores: `coda_nb.eval.reconstruction.evaluate` on held-out crops (`PhotoCrops(split='test')`): PSNR, SSIM, the latent MSE
|z_hat - z|^2 beside the latent's variance; rFID against one set of real statistics of the first `n_fid` held-out crops
(Inception computed once); per-bit balance (fraction of +1) of the held-out tokens. A fine-tuned VAE decoder is also
scored as a continuous VAE (its frozen encoder's latent, decoded), to see what the fine-tuning does to the continuous
path. No LPIPS (the VGG16 weights are not offline here), no GAN, no EMA. Results: benchmarks/results/
latentbit_ablations[_reduced].json (rewritten after each row), read by nbs/paper/latentbit/40_ablations.ipynb.
"""
from __future__ import annotations
import argparse, copy, importlib.util, json, os, platform, sys, tempfile, time, shutil
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE/'results'
_spec = importlib.util.spec_from_file_location('latentbit_study', HERE/'latentbit_study.py')
lbs = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(lbs)

# (b): the quantizer's auxiliary loss per row; `model` keys are LatentBit model keys the study's `train_row` does not take
OBJECTIVES_B = {'none': dict(commitment_weight=0.0), 'entropy': dict(commitment_weight=0.0, model={'quantizer.entropy_weight': 0.1}),
                'commit': dict(commitment_weight=0.25), 'entropy+commit': dict(commitment_weight=0.25, model={'quantizer.entropy_weight': 0.1})}
# (a): what stage 2 trains besides the ViT decoder
MODES_A = ('frozen', 'lora', 'full')

BUDGETS = dict(
    full=dict(n_train=1024, n_eval=256, n_fid=128, batch=16, D=64, dim=64, depth=2, steps=1500,
              ft=dict(steps=60, lr=3e-4, warmup_steps=6, rank=4, l1=0.2, l2=1.0, latent_l2=1.0),
              # in order of priority (the JSON is saved after each): (b)'s commit row is (a)'s stage 1
              rows=['commit', 'none', 'ft-frozen', 'ft-full', 'entropy', 'ft-lora', 'entropy+commit']),
    reduced=dict(n_train=32, n_eval=16, n_fid=0, batch=4, D=16, dim=32, depth=1, steps=3,
                 ft=dict(steps=2, lr=3e-4, warmup_steps=1, rank=2, l1=0.2, l2=1.0, latent_l2=1.0),
                 rows=['commit', 'none', 'entropy', 'ft-frozen', 'ft-lora', 'ft-full']),
)


@contextmanager
def model_keys(keys: dict):
    "Inside the block, `build_latentbit` (which the study's `train_row` calls) adds these model keys."
    import coda_nb.tokenizers.latentbit as L
    orig = L.build_latentbit
    L.build_latentbit = lambda *a, **k: orig(*a, **(k | keys))
    try: yield
    finally: L.build_latentbit = orig


def usage(tok, x, batch=64, group=8):
    "The held-out tokens' per-bit balance (fraction of +1), the study's summary of it, group-of-8 entropies and the share of distinct codes."
    import torch
    from coda_nb.quantizers.binary import BitUsage
    u, codes = BitUsage(tok.bits, group=group), []
    with torch.no_grad():
        for c in x.split(batch):
            b = tok.encode_indices(c)[0]; u.update(b); codes.append(b.reshape(-1, tok.bits))
    s, codes = u.summary(sync=False), torch.cat(codes)
    return lbs.bit_usage(tok, x, batch) | dict(
        balance=s['balance'], bit_entropy=s['bit_entropy'], min_bit_entropy=s['min_bit_entropy'], entropy_bound=s['entropy_bound'],
        group=group, group_entropy_bound=s['group_entropy_bound'], group_utilization=s['group_utilization'], tokens=s['tokens'],
        distinct_codes=int(torch.unique(codes, dim=0).shape[0]))


def finetune(tok0, mode, B, vae_path, out_dir, seed=0):
    """Stage 2 of a (a) row: a copy of the trained tokenizer with its encoders and bottleneck frozen; the ViT decoder, and
    with `mode` 'lora' LoRA on the VAE decoder's convs or with 'full' the whole VAE decoder, trained with the pixel loss
    through the decoder (and the latent term) for `B['ft']['steps']` steps. The library's LatentBit hooks train the
    bottleneck only, so this sets the tokenizer's groups here."""
    import torch
    from coda_nb.nn.lora import inject_lora, lora_parameters
    from coda_nb.training.latentbit import LatentBitTrainConfig
    from coda_nb.training.loop import fit
    F = B['ft']
    tok = copy.deepcopy(tok0).train()
    tae = tok.vae.vae.model                                   # the TAE inside the FramewiseVAE wrapper
    tok.requires_grad_(False)
    groups = [dict(params=list(tok.decoder.parameters()), lr=F['lr'], name='vit_decoder')]
    if mode == 'lora':
        inject_lora(tae, ['conv.'], F['rank'], encoder=False, decoder=True)   # TAEF2's LoRA targets, the decoder's only
        groups.append(dict(params=lora_parameters(tae), lr=F['lr'], name='vae_decoder_lora'))
    elif mode == 'full': groups.append(dict(params=list(tae.decoder.parameters()), lr=F['lr'], name='vae_decoder'))
    elif mode != 'frozen': raise ValueError(mode)
    for g in groups:
        for p in g['params']: p.requires_grad_(True)
    tok.param_groups = lambda cfg: groups
    tok.trainable_parameters = lambda: [p for g in groups for p in g['params']]
    tok.trainable_state = lambda: {k: v.detach().cpu().contiguous() for k, v in tok.state_dict().items()}
    cfg = LatentBitTrainConfig.from_preset('latentbit-taef2-tiny', out=str(out_dir), steps=F['steps'], n_train=B['n_train'],
                                           batch_size=B['batch'], log_every=max(1, F['steps'] // 20), ckpt_every=0, progress=False,
                                           seed=seed, vae_path=str(vae_path), lr=F['lr'], warmup_steps=F['warmup_steps'],
                                           l1=F['l1'], l2=F['l2'], latent_l2=F['latent_l2'], latent_only=False)
    t0 = time.time()
    task = lbs._task(tok)
    r = fit(task, cfg)
    secs = time.time() - t0 - task.cache_s
    shutil.rmtree(out_dir, ignore_errors=True)
    log = [{k: float(v) for k, v in h.items() if k in ('step', 'loss', 'rec', 'latent_mse', 'bit_balance')} for h in r['history']]
    n = {g['name']: sum(p.numel() for p in g['params']) for g in groups}
    assert not any(p.requires_grad for p in tok.encoder.parameters()) and not any(p.requires_grad for p in tae.encoder.parameters())
    return tok.eval(), dict(mode=mode, train_s=secs, cache_s=task.cache_s, steps=F['steps'], s_per_step=secs / F['steps'],
                            params=sum(n.values()), params_by_group=n, cached_latents=task.cache, train_log=log,
                            config=dict(lr=cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, l1=cfg.l1, l2=cfg.l2,
                                        latent_l2=cfg.latent_l2, latent_only=cfg.latent_only, batch_size=cfg.batch_size,
                                        lora_rank=F['rank'] if mode == 'lora' else None))


def main(budget='full', out=None, log=print, rows=None, deadline=None, merge=False):
    """Run the rows of `budget` (default all, in order); the JSON is rewritten after each, so a stopped run keeps what it
    finished; no row starts after `deadline` ('HH:MM', UTC). `merge`: add the rows to the saved JSON at `out` (same budget
    only), its metadata under `meta['merged']`; a row it already holds (the `commit` row, the `ft-*` rows' stage 1) is
    retrained and must reproduce its saved score, which is kept."""
    import torch
    torch.set_num_threads(1)
    from torch.utils.data import Subset
    from coda_nb.weights import find_weights
    from coda_nb.vae.load import load_vae
    from coda_nb.data.photos import PhotoCrops
    from coda_nb.eval.reconstruction import evaluate
    from coda_nb.eval.metrics import StreamingFID
    B = BUDGETS[budget]
    out = Path(out or OUT/f"latentbit_ablations{'' if budget == 'full' else '_' + budget}.json")
    vae_path = find_weights('taef2', required=True)
    t_all = time.time()
    meta = lbs.run_meta('latentbit_ablations', f'latentbit_ablations.main({budget!r})', budget)
    held = PhotoCrops(size=64, n=B['n_eval'], split='test', seed=0)
    x_eval = torch.stack([held[i] for i in range(len(held))])
    vae = load_vae('tae', vae_path)
    with torch.no_grad(): f = torch.cat([vae.encode(c) for c in x_eval.split(64)])
    latent = dict(var=f.var().item(), mean_square=f.pow(2).mean().item())
    real = None
    if B['n_fid']:
        t = time.time(); real = StreamingFID(); fid_ds = Subset(held, range(B['n_fid']))
        real.update(real=x_eval[:B['n_fid']]); meta['fid_real_s'] = time.time() - t
    def fid_of(model):
        if real is None: return {}
        s = StreamingFID(inception=real.inception); s.real = real.real          # the real statistics, computed once
        return dict(rfid=evaluate(model, fid_ds, batch_size=64, fid=s, fid_real=False, progress=False)['rfid'], n_fid=B['n_fid'])
    def score(model, fid=True):
        t = time.time(); r = evaluate(model, held, batch_size=64, fid=False, progress=False) | (fid_of(model) if fid else {})
        return r, time.time() - t
    if merge:
        res = json.loads(out.read_text())
        if res['budget'] != json.loads(json.dumps(B)): raise ValueError(f'--merge: the saved run at {out.name} has another budget')
        if abs(res['latent']['var'] - latent['var']) > 1e-6: raise ValueError('--merge: the held-out latents differ from the saved run')
        res['meta'].setdefault('merged', []).append(meta | dict(rows=list(rows or B['rows'])))
        meta = res['meta']['merged'][-1]
        meta.pop('budget', None)
    else: res = dict(meta=meta, budget=B, latent=latent, continuous=score(vae)[0], runs={})
    tmp, toks = Path(tempfile.mkdtemp(prefix='lbablate-')), {}
    def save():
        lbs.write_results(res, meta, out, t_all)
    stop_at = lbs._deadline(deadline)
    if deadline: meta['deadline'] = deadline
    for name in rows or B['rows']:
        if stop_at and time.time() > stop_at:
            meta.setdefault('not_run', []).append(name); log(f'{name}: not started (past the deadline {deadline})'); save(); continue
        if name.startswith('ft-'):
            if 'commit' not in toks: raise RuntimeError(f'{name} fine-tunes the commit row: run it first')
            tok, rec = finetune(toks['commit'], name[3:], B, vae_path, tmp/name)
            rec['table'], rec['stage1'] = '4a', dict(row='commit', steps=B['steps'], train_s=res['runs']['commit']['train_s'])
            if merge: rec['stage1']['retrained_in_merge'] = True     # the commit row retrained in this process (checked against the saved one)
            if name != 'ft-frozen': rec['continuous_finetuned'] = score(tok.vae.vae, fid=False)[0]   # the fine-tuned decoder on TAEF2's own latent
        else:
            o = OBJECTIVES_B[name]
            row = dict(name=name, objective='latent', D=B['D'], dim=B['dim'], depth=B['depth'], steps=B['steps'],
                       commitment_weight=o['commitment_weight'])
            with model_keys(o.get('model', {})): tok, rec = lbs.train_row(row, B, vae_path, tmp/name)
            rec['table'], rec['model_keys'] = '4b', o.get('model', {})
            rec['config']['entropy_weight'] = tok.quantizer.entropy_weight
            if name == 'commit': toks['commit'] = tok
        rec['final'], rec['eval_s'] = score(tok)
        rec['bits'] = usage(tok, x_eval)
        old = res['runs'].get(name)
        if old is not None:                      # retrained in a merge: the same training must give the saved score
            same = all(abs(rec['final'][k] - old['final'][k]) < 1e-4 for k in ('psnr', 'ssim', 'quant_error')) and \
                abs(rec['final'].get('rfid', 0) - old['final'].get('rfid', 0)) < 1e-2 and rec['bits']['balance'] == old['bits']['balance']
            check = dict(row=name, saved={k: old['final'][k] for k in ('psnr', 'ssim', 'quant_error', 'rfid') if k in old['final']},
                         retrained={k: rec['final'][k] for k in ('psnr', 'ssim', 'quant_error', 'rfid') if k in rec['final']},
                         reproduced=same, train_s=rec['train_s'], kept='saved' if same else 'saved; the retrained record is in retrained_record')
            if not same: check['retrained_record'] = rec
            meta.setdefault('reproduction', []).append(check)
            log(f"{name}: retrained, saved {check['saved']} / retrained {check['retrained']}: "
                f"{'reproduced, the saved record kept' if same else 'NOT reproduced: the saved record kept, the retrained one under meta.merged.reproduction'}")
            save(); continue
        res['runs'][name] = rec
        log(f"{name:>15}: {rec['train_s']:6.0f} s ({rec['s_per_step']:.3f} s/step)  {rec['params'] / 1e6:.2f} M  PSNR {rec['final']['psnr']:.2f}  "
            f"SSIM {rec['final']['ssim']:.4f}  latent MSE {rec['final']['quant_error']:.4f} (var {latent['var']:.3f})  "
            f"rFID {rec['final'].get('rfid', float('nan')):.2f}  dead bits {rec['bits'].get('dead_bits', '-')}  ({time.time() - t_all:.0f} s)")
        save()
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--budget', choices=list(BUDGETS), default='full')
    p.add_argument('--out', default=None)
    p.add_argument('--rows', nargs='*', default=None)
    p.add_argument('--deadline', default=None, help="HH:MM (UTC): start no row after this time")
    p.add_argument('--merge', action='store_true', help='add the rows to the saved JSON (same budget), keeping its runs')
    a = p.parse_args()
    main(a.budget, a.out, log=lambda s: print(s, flush=True), rows=a.rows, deadline=a.deadline, merge=a.merge)
