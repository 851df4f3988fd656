"""Video LatentBit at CPU scale (the LatentBit paper's Table 2, video reconstruction): a video tokenizer with a temporal
patch of 2 or 4 latent frames against the image tokenizer applied frame by frame, at the same bits per pixel per frame.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latentbit_video.py [--budget full|reduced] [--out PATH]

The VAE is TAEF2 (real weights, 8x spatial, 32 channels) run frame by frame (`FramewiseVAE`, temporal stride 1): the
WAN 2.1 VAE the paper uses is in the package (`coda_nb.vae.wan`) but its weights are not available offline, and a
random-weight WAN would make every number meaningless. So all temporal compression is the tokenizer's: a video row
patchifies `k_t` consecutive latent frames into one token of `D = 32 k_t` bits, the frame-wise row codes every frame's
latent on its own with `D = 32` bits, and both are `D / (k_t 8 8) = 0.5` bits per pixel per frame. (Seventeen frames
do not divide by `k_t`: the last token frame is zero-padded, so a clip's video tokens carry a few more bits than the
frame-wise ones; `bpp_effective` records it and the `framewise-D38` row is the frame-wise tokenizer at the rate of
the `k_t = 4` row including its padding.)

Data: the package's test clips (`coda_nb.data.video.sample_clips`: pans and zooms over photos alternating with
moving patterns), 17 frames at 64 px. Training clips pan over the *train* regions of the package's photos and held-out
clips over their *test* regions (`split_region`, the split `PhotoCrops` uses), with different pattern seeds, so no
held-out pixel was trained on. Every row trains the preset `latentbit-taef2-tiny` (width 64, 2 blocks per half)
with its rate keys changed, on the shared trainer (`coda_nb.training.loop.fit`) with the latent term alone
(`latent_only=True, latent_l2=1`, commitment 0.25, as the capacity study `latentbit_study.py capacity`): the TAEF2
latents of the training clips are computed once and shared by all rows; every row sees the same clips in the same
order (8 clips a step; the frame-wise tokenizer gets their 8 x 17 frames as a batch of images), for the same steps.
Scores on the held-out clips: per-frame PSNR and SSIM (uint8, the package's `psnr` / `ssim`), the temporal error
`|(x̂_{t+1} - x̂_t) - (x_{t+1} - x_t)|` (mean absolute, pixels in [0, 1]) per frame pair, the latent MSE, for every row
and for the continuous TAEF2; a frame strip (base64 JPEG) of two held-out clips. No rFVD: it needs the I3D network,
whose weights the package cannot fetch offline. No LPIPS (no VGG16 weights offline). Results:
benchmarks/results/latentbit_video[_reduced].json (rewritten after each row), with the command, threads, versions,
load average at the start and end, and wall times; `nbs/paper/latentbit/45_video.ipynb` reads it.
"""
from __future__ import annotations
import argparse, importlib.util, base64, io, json, os, platform, shutil, sys, tempfile, time
from pathlib import Path

_spec = importlib.util.spec_from_file_location('latentbit_study', Path(__file__).resolve().parent/'latentbit_study.py')
lbs = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(lbs)   # the shared results writer
OUT = Path(__file__).resolve().parent/'results'

# rows in order of priority (the JSON is saved after each); `kt`: the temporal patch (1 with frames=1: the image
# tokenizer, frame by frame); D: bits per token
BUDGETS = dict(
    full=dict(frames=17, size=64, n_train=64, n_eval=16, batch=8, steps=400, dim=64, depth=2,
              rows=[dict(name='framewise-D32', kt=1, D=32), dict(name='video-kt2-D64', kt=2, D=64),
                    dict(name='video-kt4-D128', kt=4, D=128), dict(name='framewise-D38', kt=1, D=38)],
              strip_clips=[0, 1], strip_frames=list(range(0, 17, 2)), strip_rows=['framewise-D32', 'video-kt2-D64', 'video-kt4-D128']),
    reduced=dict(frames=9, size=64, n_train=4, n_eval=2, batch=2, steps=3, dim=32, depth=1,
                 rows=[dict(name='framewise-D32', kt=1, D=32), dict(name='video-kt2-D64', kt=2, D=64),
                       dict(name='video-kt4-D128', kt=4, D=128)],
                 strip_clips=[0, 1], strip_frames=list(range(0, 9, 2)), strip_rows=['framewise-D32', 'video-kt2-D64', 'video-kt4-D128']),
)


def _version(pkg):
    from importlib.metadata import version, PackageNotFoundError
    try: return version(pkg)
    except PackageNotFoundError: return None


def split_photos(split: str):
    "The package's photos cut to their `split` region (`split_region`, as `PhotoCrops`), as `3 x H x W` tensors in [-1, 1]."
    from coda_nb.data.photos import load_photos, split_region
    from coda_nb.data.images import to_tensor
    out = []
    for p in load_photos():
        y0, y1, x0, x1 = split_region(*p.image.shape[:2], split)
        out.append(to_tensor(p.image[y0:y1, x0:x1].copy()))
    return out


def make_clips(n: int, frames: int, size: int, split: str):
    "`n` test clips (`sample_clips`): photo pans / zooms over the `split` regions, alternating with moving patterns (seed 0 train, 1 held-out)."
    import torch
    from coda_nb.data.video import sample_clips
    return torch.stack(sample_clips(n, frames, size, seed=dict(train=0, test=1)[split], photos=split_photos(split)))


def build_row(row, B, seed=0):
    "The row's tokenizer: `latentbit-taef2-tiny` with D bits, the temporal patch `kt` over `frames` frames (kt = 1: the image tokenizer)."
    from coda_nb.tokenizers.latentbit import build_latentbit
    from coda_nb.weights import find_weights
    video = row['kt'] > 1
    kw = dict(bits=row['D'], dim=B['dim'], depth=B['depth'], heads=max(1, B['dim'] // 16), image_size=B['size'])
    if video: kw |= dict(frames=B['frames'], patch=[row['kt'], 1, 1])
    return build_latentbit('latentbit-taef2-tiny', vae_path=find_weights('taef2', required=True), seed=seed, **kw)


def make_task(tok, latents, framewise: bool):
    "The shared tokenizer task's latent-only step on cached clip latents `N x C x T x h x w` (frame-wise: the clips' frames as images)."
    import torch
    from torch.utils.data import Dataset
    from coda_nb.training.tokenizer import TokenizerTask
    from coda_nb.training.loop import Part

    class ClipIndex(Dataset):
        "Item `(i, position)` -> `(placeholder, i)`: the step reads clip i's cached latent (latent_only needs no pixels)."
        def __len__(self): return len(latents)
        def __getitem__(self, key): return torch.zeros(()), key[0]

    class ClipLatentTask(TokenizerTask):
        def build(self, cfg, acc):       # TokenizerTask.build on clips: the same optimizer and part, the latents already cached
            self.cfg, self.name = cfg, 'latentbit'
            self.tok.to(acc.device)
            self.ds, self.latents, self.cache = ClipIndex(), latents, True
            groups = self.tok.param_groups(cfg)
            opt = torch.optim.AdamW([g for g in groups if g['params']], betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
            return dict(tokenizer=Part(self.tok, opt, state=lambda m: m.trainable_state()))
        def data_identity(self, cfg): return dict(data='sample_clips (train regions)', n_clips=len(latents))
        def step(self, models, batch, ctx):
            _, idx = batch
            f = self.latents[idx].to(ctx.device)
            if framewise: f = f.transpose(1, 2).flatten(0, 1)            # (B*T, C, h, w): every frame an image
            model = models['tokenizer']
            with ctx.no_sync(model):
                o = model(None, latent=f, decode=False)
                loss = self.weighted_losses(o)                           # latent_l2 |f_hat - f|^2 + commitment
                ctx.backward(loss)
            return dict(loss=loss.detach()) | self._logs(o)
    return ClipLatentTask(tok)


def train_row(row, B, latents, out_dir, seed=0):
    from coda_nb.training.latentbit import LatentBitTrainConfig
    from coda_nb.training.loop import fit
    tok = build_row(row, B, seed)
    cfg = LatentBitTrainConfig.from_preset('latentbit-taef2-tiny', out=str(out_dir), steps=B['steps'], n_train=len(latents),
                                           batch_size=B['batch'], log_every=max(1, B['steps'] // 20), ckpt_every=0,
                                           progress=False, seed=seed, latent_only=True, latent_l2=1.0)
    task = make_task(tok, latents, framewise=row['kt'] == 1)
    t0 = time.time()
    r = fit(task, cfg)
    secs = time.time() - t0
    shutil.rmtree(out_dir, ignore_errors=True)
    log = [{k: float(v) for k, v in h.items() if k in ('step', 'loss', 'commit', 'latent_mse', 'bit_balance')} for h in r['history']]
    T, S = B['frames'], B['size']
    bits_per_clip = (tok.token_frames(T) if row['kt'] > 1 else T) * (S // 8) ** 2 * row['D']
    return tok.eval(), dict(row=row, steps=B['steps'], train_s=secs, s_per_step=secs / B['steps'],
                            params=sum(p.numel() for p in tok.trainable_parameters()), bpp=tok.bits_per_pixel,
                            bits_per_clip=bits_per_clip, bpp_effective=bits_per_clip / (T * S * S),
                            token_frames=tok.token_frames(T) if row['kt'] > 1 else T, train_log=log,
                            config=dict(lr=cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, latent_l2=cfg.latent_l2,
                                        latent_only=cfg.latent_only, batch_clips=cfg.batch_size, betas=list(cfg.betas),
                                        weight_decay=cfg.weight_decay, clip_grad=cfg.clip_grad,
                                        commitment_weight=tok.quantizer.commitment_weight))


def reconstruct(tok, f, frames: int, batch: int = 4):
    "Decoded clips `N x 3 x T x H x W` (clamped to [-1, 1]) and reconstructed latents from cached clip latents `f`; `tok=None`: the continuous VAE."
    import torch
    vae, xs, fh = tok_vae(), [], []          # every row's VAE is TAEF2 frame by frame: one decoder for all
    with torch.no_grad():
        for c in f.split(batch):
            if tok is None: fhat = c
            elif tok.config['frames'] == 1:                                 # the image tokenizer, frame by frame
                fhat = tok.encode_latent(c.transpose(1, 2).flatten(0, 1)).f_hat.unflatten(0, (len(c), c.shape[2])).transpose(1, 2)
            else: fhat = tok.encode_latent(c).f_hat
            xs.append(vae.decode(fhat, frames=frames).float().clamp(-1, 1)); fh.append(fhat)
    return torch.cat(xs), torch.cat(fh)

_VAE = {}
def tok_vae():
    "TAEF2 (real weights) as a `FramewiseVAE`, loaded once."
    if 'v' not in _VAE:
        from coda_nb.vae.load import load_vae
        from coda_nb.vae.video import FramewiseVAE
        from coda_nb.weights import find_weights
        _VAE['v'] = FramewiseVAE(load_vae('tae', find_weights('taef2', required=True))).eval()
    return _VAE['v']


def scores(x_hat, x, f_hat=None, f=None) -> dict:
    "Per clip and frame PSNR / SSIM, per clip and frame pair temporal error (pixels in [0, 1]), their means; latent MSE."
    from coda_nb.eval.metrics import psnr, ssim
    N, _, T = x.shape[:3]
    a, b = x_hat.transpose(1, 2).flatten(0, 1), x.transpose(1, 2).flatten(0, 1)
    p, s = psnr(a, b).view(N, T), ssim(a, b).view(N, T)
    d = ((x_hat.diff(dim=2) - x.diff(dim=2)).abs() / 2).mean((1, 3, 4))        # N x (T-1), [-1,1] -> [0,1] units
    out = dict(psnr=float(p.mean()), ssim=float(s.mean()), temporal_error=float(d.mean()),
               psnr_frames=p.tolist(), ssim_frames=s.tolist(), temporal_error_pairs=d.tolist(),
               flicker_ref=float((x.diff(dim=2).abs() / 2).mean()))
    if f_hat is not None: out['latent_mse'] = float((f_hat - f).pow(2).mean())
    return out


def jpeg_b64(img_uint8) -> str:
    "A picture as base64 JPEG (quality 95: the strip is for looking at; every score is computed on the decoded tensors)."
    from PIL import Image
    buf = io.BytesIO(); Image.fromarray(img_uint8).save(buf, format='JPEG', quality=95)
    return base64.b64encode(buf.getvalue()).decode()


def main(budget='full', out=None, log=print):
    "Run every row at `budget`; the JSON is rewritten after each row, so a stopped run keeps what it finished."
    import torch
    torch.set_num_threads(1)
    from coda_nb.data.video import frame_strip
    B = BUDGETS[budget]
    out = Path(out or OUT/f"latentbit_video{'' if budget == 'full' else '_' + budget}.json")
    t_all = time.time()
    meta = lbs.run_meta('latentbit_video', f'latentbit_video.main({budget!r})', budget,
                        vae='TAEF2 (real weights) frame by frame (FramewiseVAE, temporal stride 1); WAN 2.1 weights are not available offline',
                        rfvd='not computed: rFVD needs the I3D network, whose weights the package cannot fetch offline',
                        lpips='off: the VGG16 weights are not on this machine')
    T, S = B['frames'], B['size']
    t = time.time()
    x_train, x_eval = make_clips(B['n_train'], T, S, 'train'), make_clips(B['n_eval'], T, S, 'test')
    vae = tok_vae()
    with torch.no_grad():
        f_train = torch.cat([vae.encode(c) for c in x_train.split(4)])
        f_eval = torch.cat([vae.encode(c) for c in x_eval.split(4)])
    cache_s = time.time() - t
    kinds = ['photo' if i % 2 == 0 else 'pattern' for i in range(B['n_eval'])]
    res = dict(meta=meta, budget={k: v for k, v in B.items() if k != 'rows'}, cache_s=cache_s, eval_kinds=kinds,
               latent=dict(var=f_eval.var().item(), shape=list(f_eval.shape[1:])), runs={})
    t = time.time()
    xc, _ = reconstruct(None, f_eval, T)
    res['continuous'] = scores(xc, x_eval) | dict(eval_s=time.time() - t)
    recs = dict(original=x_eval[B['strip_clips']], continuous=xc[B['strip_clips']])
    log(f"cached {len(x_train)} + {len(x_eval)} clips in {cache_s:.0f} s; continuous TAEF2 PSNR {res['continuous']['psnr']:.2f}")
    tmp = Path(tempfile.mkdtemp(prefix='lbvideo-'))
    for row in B['rows']:
        tok, rec = train_row(row, B, f_train, tmp/row['name'])
        t = time.time()
        xh, fh = reconstruct(tok, f_eval, T)
        rec['final'] = scores(xh, x_eval, fh, f_eval)
        bits = tok.encode_latent(f_eval[:4] if row['kt'] > 1 else f_eval[:4].transpose(1, 2).flatten(0, 1)).tokens[0]
        bal = bits.float().flatten(0, -2).mean(0)
        rec['dead_bits'] = int(((bal == 0) | (bal == 1)).sum())
        rec['eval_s'] = time.time() - t
        if row['name'] in B['strip_rows']: recs[row['name']] = xh[B['strip_clips']]
        res['runs'][row['name']] = rec
        fr = B['strip_frames']
        res['strip'] = dict(rows=list(recs), clips=B['strip_clips'], frames=fr,
                            jpeg=[jpeg_b64(frame_strip([v[i][:, fr] for v in recs.values()])) for i in range(len(B['strip_clips']))])
        f_ = rec['final']
        log(f"{row['name']:>16}: {rec['train_s']:5.0f} s ({rec['s_per_step']:.3f} s/step)  {rec['params'] / 1e6:.3f} M  "
            f"bpp {rec['bpp']:.3f} (eff {rec['bpp_effective']:.3f})  PSNR {f_['psnr']:.2f}  SSIM {f_['ssim']:.4f}  "
            f"temporal {f_['temporal_error']:.4f}  latent MSE {f_['latent_mse']:.3f}  ({time.time() - t_all:.0f} s)")
        lbs.write_results(res, meta, out, t_all)
    shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--budget', choices=list(BUDGETS), default='full')
    p.add_argument('--out', default=None)
    a = p.parse_args()
    main(a.budget, a.out)
