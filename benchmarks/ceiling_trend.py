"""The capacity trend of the Fashion-MNIST tutorial's tokenizer ceiling: its chosen recipe with one thing changed per row.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ceiling_trend.py [--deadline HH:MM] [--rows a,b] [--merge] [--budget reduced]

The tutorial (nbs/tutorials/20_maskgit_fashion.ipynb, section 1) chooses candidate B: preset `coda-taef2-small` under the
paper's objective (L1 + L2 through the frozen TAEF2 decoder plus the quantization loss), V = 1024, levels 1, 2, 3, 4
(30 tokens on the 4 x 4 latent), the preset's 200 steps of 16 on the first 2,048 training images (N_FIT), trained by
the shared tokenizer task (`train` from `coda_nb.training.coda`, what `coda train` runs). Its ceiling is the gFID of its
reconstructions of the first 100 test images (N_EVAL) against those same images; TAEF2's continuous ceiling is the same
for `decode(encode(x))` of the frozen VAE. Each row here retrains that recipe with ONE change (the codebook size V, the
number of steps, or an extra 4 x 4 residual level) and scores it by the same protocol, in the same process as TAEF2's
continuous reconstructions, so the ratio to TAEF2 is measured within one run.

The tutorial's helpers `features` / `stats` / `fid` are notebook code; `inception_feats` and `fid` below are their
equivalents on the package's `InceptionFeatures`, `FeatureStats` and `gfid` (Inception in batches of 50, as there).
Latent MSE: mean (f_hat - f)^2 of the test images' TAEF2 latents; PSNR: `coda_nb.eval.metrics.psnr` of the clamped
reconstructions, averaged over the images. Bits per image: tokens x log2(V).

The JSON (benchmarks/results/ceiling_trend.json) is rewritten after every row, with the load average at the start and
end of each row and of the run (one thread on a shared two-core machine: wall times are upper bounds). `--deadline`:
a row starts only if its estimate (s/step measured by the rows before it, else the table below) ends before then.
"""
import argparse, json, math, os, platform, shutil, sys, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'benchmarks'))
from latentbit_study import _deadline as deadline_ts   # 'HH:MM' (UTC, today) -> seconds since the epoch
OUT = ROOT/'benchmarks'/'results'/'ceiling_trend.json'
PRESET = 'coda-taef2-small'          # the tutorial's chosen candidate B: the paper objective, the preset's defaults
BUDGETS = dict(full=dict(n_fit=2048, n_eval=100, steps=None),     # the tutorial's N_FIT / N_EVAL; steps None: the preset's 200
               reduced=dict(n_fit=64, n_eval=10, steps=2))         # a smoke test (the notebook's quick cell)
# rows by priority: (name, what changed, model / training overrides); 'steps_x' multiplies the preset's steps
ROWS = [('baseline', 'the tutorial\'s recipe (V 1024, levels 1,2,3,4, 200 steps)', dict()),
        ('V4096', 'V 1024 -> 4096', dict(codebook_size=4096)),
        ('steps_x2', 'steps x 2', dict(steps_x=2)),
        ('V256', 'V 1024 -> 256', dict(codebook_size=256)),
        ('steps_x4', 'steps x 4', dict(steps_x=4)),
        ('levels_12344', 'levels 1,2,3,4 -> 1,2,3,4,4', dict(scales=[1, 2, 3, 4, 4])),
        ('V16384', 'V 1024 -> 16384', dict(codebook_size=16384)),
        ('levels_123444', 'levels 1,2,3,4 -> 1,2,3,4,4,4', dict(scales=[1, 2, 3, 4, 4, 4]))]
EST_S_PER_STEP = 0.45        # before any row of this run has measured one (a reduced probe's measurement, rounded up)
EST_EVAL_S = 60              # per row: encoding + decoding + Inception features of N_EVAL reconstructions


def load_avg(): return [round(x, 2) for x in os.getloadavg()]


def save(res, out):
    "Write `res` atomically (a stopped run keeps the rows it finished)."
    res['loadavg_end'], res['finished'] = load_avg(), time.strftime('%Y-%m-%d %H:%M:%S')
    out.parent.mkdir(parents=True, exist_ok=True); tmp = out.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(res, indent=1)); os.replace(tmp, out)


class Protocol:
    "The tutorial's ceiling protocol: the first `n_eval` test images at 32 px, their Inception statistics as the reference, gFID of a set of images against them."
    def __init__(self, n_eval: int):
        from coda_nb.data.datasets import get_dataset
        from coda_nb.eval.metrics import InceptionFeatures
        self.n_eval, self.inc, self.wall = n_eval, InceptionFeatures(), {}
        test = get_dataset('fashion-mnist', 32, n=n_eval, split='test')
        self.x = torch.stack([test[i][0] for i in range(n_eval)])
        t = time.time(); self.ref = self.stats(self.inception_feats(self.x)); self.wall['inception_reference_s'] = time.time() - t
        self.proto = dict(labels='balanced', images='in-memory float', reference=f'fashion-mnist test, first {n_eval}, 32 px')

    @torch.no_grad()
    def inception_feats(self, x): return torch.cat([self.inc(x[i:i + 50]) for i in range(0, len(x), 50)])

    @staticmethod
    def stats(f):
        from coda_nb.eval.metrics import FeatureStats
        st = FeatureStats(); st.update(f); return st

    def fid(self, x) -> float:
        from coda_nb.eval.generation import gfid
        return float(gfid(self.stats(self.inception_feats(x)), self.ref, **self.proto)['fid'])

    @torch.no_grad()
    def taef2(self) -> dict:
        "TAEF2's continuous ceiling: `decode(encode(x))` of the frozen VAE (the tutorial's `build('coda-taef2-fm32').vae`)."
        from coda_nb.config import build
        from coda_nb.eval.metrics import psnr
        t = time.time(); vae = build('coda-taef2-fm32', seed=0).vae.eval()
        rec = torch.cat([vae.decode(vae.encode(self.x[i:i + 50])).float().clamp(-1, 1) for i in range(0, self.n_eval, 50)])
        return dict(gfid=self.fid(rec), psnr=float(psnr(rec, self.x).mean()), wall_s=time.time() - t)

    @torch.no_grad()
    def score(self, tok) -> dict:
        "Ceiling gFID (the tutorial's `decode_indices(encode_indices(x))`, clamped, batches of 50), PSNR and latent MSE of `tok` on the test images."
        from coda_nb.eval.metrics import psnr
        t = time.time(); rec, mse = [], []
        for i in range(0, self.n_eval, 50):
            xb = self.x[i:i + 50]
            rec.append(tok.decode_indices(tok.encode_indices(xb)).float().clamp(-1, 1))
            e = tok.encode(xb); mse.append((e.f_hat.float() - e.f.float()).pow(2).flatten(1).mean(1))
        rec = torch.cat(rec)
        return dict(gfid=self.fid(rec), psnr=float(psnr(rec, self.x).mean()), latent_mse=float(torch.cat(mse).mean()), eval_s=time.time() - t)


def train_row(name, over, n_fit, steps, out_dir, seed=0):
    "Train the tutorial's recipe (`coda-taef2-small`, the task `coda train` runs) with `over` changed; returns (tokenizer, facts)."
    from coda_nb.training.coda import CODATrainConfig, train
    over = dict(over); mult = over.pop('steps_x', 1)
    base = CODATrainConfig.from_preset(PRESET)
    kw = dict(steps=(steps or base.steps) * mult) | over
    cfg = CODATrainConfig.from_preset(PRESET, data='fashion-mnist', out=str(out_dir/name), n_train=n_fit, ckpt_every=0, eval_every=0,
                                      progress=False, seed=seed, **kw)
    load0, t = load_avg(), time.time()
    r = train(cfg, overwrite=True)
    wall = time.time() - t
    from coda_nb.training.loop import export_model          # the tutorial's path: export (EMA weights if any), then load
    from coda_nb.pretrained import load_pretrained
    tok = load_pretrained(export_model(r, out_dir/name/'tokenizer')).eval(); sp = tok.token_spec
    shutil.rmtree(out_dir/name, ignore_errors=True)
    h = [x for x in r['history'] if 'loss' in x]
    n_tok = sum(a * b for a, b in sp.levels)
    params = sum(p.numel() for p in tok.codebook_parameters()) + sum(p.numel() for p in tok.lora_parameters())
    return tok, dict(V=sp.codebook_size, levels=[a for a, _ in sp.levels], tokens=n_tok, bits_per_image=n_tok * math.log2(sp.codebook_size),
                     steps=cfg.steps, batch_size=cfg.batch_size, n_fit=n_fit, seed=seed, params=params, train_wall_s=wall,
                     s_per_step=wall / cfg.steps, loss_first=h[0]['loss'], loss_last=h[-1]['loss'],
                     latent_mse_train_last=h[-1].get('latent_mse'), loadavg_train_start=load0, loadavg_train_end=load_avg())


def main(budget='full', out=OUT, rows=None, deadline=None, merge=False, log=print, work_dir=None):
    "Run the rows (by priority; `rows`: a subset by name) and write `out` after each; returns the results dict."
    b = BUDGETS[budget]; t0 = time.time()
    res = json.loads(Path(out).read_text()) if merge and Path(out).is_file() else dict(rows={})
    res |= dict(preset=PRESET, budget=budget, n_fit=b['n_fit'], n_eval=b['n_eval'], threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(), started=time.strftime('%Y-%m-%d %H:%M:%S'),
                loadavg_start=load_avg(), command='OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ceiling_trend.py'
                + ('' if budget == 'full' else f' --budget {budget}') + (f' --rows {",".join(rows)}' if rows else '') + (' --merge' if merge else ''))
    P = Protocol(b['n_eval'])
    res['taef2_continuous'] = P.taef2() | dict(inception_reference_s=P.wall['inception_reference_s'])
    log(f"TAEF2 continuous: gFID {res['taef2_continuous']['gfid']:.1f} (n = {b['n_eval']}), PSNR {res['taef2_continuous']['psnr']:.2f} dB", flush=True)
    save(res, Path(out))
    measured = [r['s_per_step'] for r in res['rows'].values() if r.get('budget') == budget]
    work = Path(work_dir or tempfile.mkdtemp(prefix='ceiling_trend_'))
    for name, what, over in ROWS:
        if rows and name not in rows: continue
        steps = (b['steps'] or 200) * over.get('steps_x', 1)
        sps = max(measured) if measured else EST_S_PER_STEP
        est = steps * sps * (max(1.0, over.get('codebook_size', 1024) / 4096) if 'codebook_size' in over else 1.0) + EST_EVAL_S
        if deadline and time.time() + est > deadline:
            res.setdefault('skipped', {})[name] = dict(estimate_s=round(est), reason='would not finish before the deadline', at=time.strftime('%H:%M:%S'))
            log(f'{name}: skipped (estimate {est:.0f} s)', flush=True); save(res, Path(out)); continue
        load0 = load_avg()
        tok, facts = train_row(name, over, b['n_fit'], b['steps'], work)
        sc = P.score(tok)
        row = dict(name=name, changed=what, budget=budget) | facts | sc | dict(
            ratio_to_taef2=sc['gfid'] / res['taef2_continuous']['gfid'], loadavg_start=load0, loadavg_end=load_avg())
        res['rows'][name] = row; res.get('skipped', {}).pop(name, None); measured.append(row['s_per_step'])
        res['total_s'] = time.time() - t0; save(res, Path(out))
        log(f"{name}: V {row['V']} levels {row['levels']} ({row['tokens']} tokens, {row['bits_per_image']:.0f} bits), {row['steps']} steps "
            f"{row['train_wall_s']:.0f} s; latent MSE {row['latent_mse']:.4f}, PSNR {row['psnr']:.2f} dB, ceiling gFID {row['gfid']:.1f} "
            f"= {row['ratio_to_taef2']:.2f} x TAEF2; load {load0[0]:.1f} -> {row['loadavg_end'][0]:.1f}", flush=True)
        del tok
    res['total_s'] = time.time() - t0; save(res, Path(out))
    return res


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--budget', default='full', choices=list(BUDGETS))
    p.add_argument('--out', default=None, help='the JSON (default benchmarks/results/ceiling_trend.json; --budget reduced: ceiling_trend_reduced.json)')
    p.add_argument('--rows', default=None, help='comma-separated row names (default: all, by priority)')
    p.add_argument('--merge', action='store_true', help='add the rows to the saved JSON instead of starting a new one')
    p.add_argument('--deadline', default=None, help='HH:MM (UTC): start a row only if it is expected to finish by then')
    a = p.parse_args()
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    out = Path(a.out) if a.out else (OUT if a.budget == 'full' else OUT.with_name('ceiling_trend_reduced.json'))
    main(a.budget, out, a.rows.split(',') if a.rows else None, deadline_ts(a.deadline), a.merge)
