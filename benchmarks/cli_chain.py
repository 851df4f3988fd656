"""The README's command-line chain for Fashion-MNIST generation, run end to end as `coda` subprocesses, timed and scored.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cli_chain.py [--tiny] [--sample-seeds 2,3,4,5] [--train-seeds 1]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/cli_chain.py --maskgit-steps 250,500   # the budget sweep

The chain is the one the Fashion-MNIST tutorial (nbs/tutorials/20_maskgit_fashion.ipynb) runs through the same tasks and
presets: tokenizer `coda-taef2-small` (its preset's 200 steps of 16 on the first 2,048 training images, 32 px),
4,000 tokenized training images, `maskgit-tiny` (its preset's 1,000 steps of 64), 100 class-balanced samples at the
preset's sampling with the tutorial's sampling seed (1), gFID against the first 100 test images at 32 px. Added to the
chain: `coda eval` of the tokenizer on the same 100 test images (its rFID is the tutorial's tokenizer ceiling:
reconstructions of the reference images against those images), and the seed noise of the gFID: the same model sampled
with other seeds (`--sample-seeds`) and, optionally, MaskGIT retrained with other training seeds (`--train-seeds`).
One control runs in-process: the tutorial scores float images, `coda sample` writes uint8; the same seed-1 samples are
scored both ways against the same reference statistics.

Every command runs in a fresh `.venv/bin/coda` process with OMP_NUM_THREADS=--threads, in runs/cli_chain/ (git-ignored;
runs/cli_chain_tiny/ with --tiny, a smoke test of a few seconds' budget per stage). The JSON
(benchmarks/results/cli_chain.json, or cli_chain_tiny.json) is rewritten after every command: the command line, wall
seconds, exit status, load average before and after, and what it measured.

`--maskgit-steps N1,N2,...` is the budget sweep: the same tokenizer, tokens and reference, then MaskGIT trained for each
number of steps (the preset's recipe otherwise: 100 warm-up steps, then a constant lr 3e-3, EMA 0.99), sampled at seed 1 and
scored the same way, into runs/cli_chain_budget/ and benchmarks/results/cli_chain_budget.json (with the full chain's
1,000-step numbers read from cli_chain.json beside them): how short a run still gives the tutorial's samples.
"""
import argparse, json, os, platform, shlex, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODA = ROOT/'.venv'/'bin'/'coda'

def chain(tiny: bool) -> list:
    "The chain, as `(name, argv)`: the README's commands (paths relative to the run folder)."
    tok_kw = ['n_train=64', 'steps=2'] if tiny else ['n_train=2048']
    n_tok, n = ('200', '10') if tiny else ('4000', '100')
    gen_kw = ['steps=30', 'eval_every=10', 'log_every=5'] if tiny else []
    return [
        ('train tokenizer', ['train', '--preset', 'coda-taef2-small', '--data', 'fashion-mnist', '--out', 'runs/fm-tok', *tok_kw,
                             'eval_every=0', '--no-progress']),
        ('eval tokenizer', ['eval', '--tokenizer', 'runs/fm-tok/tokenizer', '--data', 'fashion-mnist', '--split', 'test', '--limit', n,
                            '--size', '32', '--out', 'runs/fm-tok/eval', '--no-progress']),
        ('tokenize', ['tokenize', '--tokenizer', 'runs/fm-tok/tokenizer', '--data', 'fashion-mnist', '--split', 'train', '--limit', n_tok,
                      '--batch-size', '64', '--out', 'runs/fm-tokens', '--no-progress']),
        ('train maskgit', ['train', '--preset', 'maskgit-tiny', '--tokens', 'runs/fm-tokens', '--out', 'runs/fm-maskgit', *gen_kw,
                           'ckpt_every=0', '--no-progress']),
        ('sample', ['sample', '--model', 'runs/fm-maskgit/model', '--tokenizer', 'runs/fm-tok/tokenizer', '--n', n, '--seed', '1',
                    '--out', 'runs/fm-samples', '--no-progress']),
        ('fid', ['fid', '--samples', 'runs/fm-samples/samples.npz', '--real', 'fashion-mnist', '--limit', n, '--size', '32',
                 '--save-ref', 'runs/fm-ref.npz', '--out', 'runs/fm-samples', '--no-progress']),
    ]

def run(name, argv, cwd, threads, res, out_json, parse=None):
    "Run `coda ARGV` in `cwd`; record the command, wall s, rc, load before/after and `parse(cwd)`; rewrite the JSON."
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
    load0, t = os.getloadavg(), time.time()
    p = subprocess.run([str(CODA), *argv], cwd=cwd, env=env, capture_output=True, text=True)
    wall, load1 = time.time() - t, os.getloadavg()
    row = dict(name=name, command='coda ' + shlex.join(argv), rc=p.returncode, wall_s=round(wall, 1),
               loadavg_start=[round(x, 2) for x in load0], loadavg_end=[round(x, 2) for x in load1],
               stdout_tail=[l for l in p.stdout.splitlines() if l.strip()][-6:])
    if p.returncode != 0: row['stderr_tail'] = p.stderr.splitlines()[-15:]
    elif parse: row |= parse(cwd)
    res['commands'].append(row); save(res, out_json)
    print(f"{name}: rc {p.returncode}, {wall:.0f} s, load {load0[0]:.2f} -> {load1[0]:.2f}"
          + ''.join(f', {k} {v}' for k, v in row.items() if k in ('rfid', 'gfid', 'level0_outside_fraction', 'psnr')), flush=True)
    if p.returncode != 0:
        print(p.stdout[-3000:], p.stderr[-3000:], sep='\n', flush=True); sys.exit(f'{name} failed')
    return row

def save(res, out_json):
    res['loadavg_end'] = [round(x, 2) for x in os.getloadavg()]
    out_json.parent.mkdir(exist_ok=True)
    tmp = out_json.with_suffix('.tmp'); tmp.write_text(json.dumps(res, indent=1)); tmp.replace(out_json)

def jload(p): return json.loads(Path(p).read_text())

def parse_eval(d): r = jload(d/'runs/fm-tok/eval/metrics.json'); return dict(rfid=round(r['rfid'], 2), psnr=round(r['psnr'], 2), n_images=r['n_images'])
def parse_train(folder):
    def f(d):
        s = d/folder/'train_config.json'; c = jload(s) if s.is_file() else {}
        log = [json.loads(l) for l in (d/folder/'log.jsonl').read_text().splitlines() if l.strip()]
        ev = [h['eval'] for h in log if 'eval' in h]
        r = dict(steps=c.get('steps'), batch_size=c.get('batch_size'), seed=c.get('seed'))
        if ev: r['last_heldout'] = ev[-1]
        return r
    return f
def parse_sample(folder):
    def f(d):
        c = jload(d/folder/'sample_config.json'); s = c.get('token_support') or {}
        return dict(sampling=c['protocol']['sampling'], sampling_sources=c['protocol']['sampling_sources'], seed=c['protocol']['seed'],
                    level0_outside=s.get('n_outside'), level0_outside_fraction=s.get('fraction_outside'))
    return f
def parse_fid(folder):
    def f(d): r = jload(d/folder/'fid.json'); return dict(gfid=round(r['fid'], 2), n_samples=r['n_samples'], reference=r['reference'])
    return f

def float_control(d, seed, n, res, out_json):
    "The tutorial's scoring in-process: the same seed's samples as float images (no uint8 rounding), against the chain's reference statistics."
    import torch, numpy as np
    from coda_nb.pretrained import load_pretrained
    from coda_nb.config import method_of
    from coda_nb.eval.generation import sample_images, balanced_labels, image_stats, gfid
    from coda_nb.eval.metrics import InceptionFeatures
    from coda_nb.generators.sampler import to_uint8_hwc
    t = time.time()
    model, tok = load_pretrained(d/'runs/fm-maskgit/model').eval(), load_pretrained(d/'runs/fm-tok/tokenizer').eval()
    c = jload(d/'runs/fm-samples/sample_config.json')
    a = argparse.Namespace(**c['protocol']['sampling'])
    sched = method_of(model.config).cli.sampling_schedule(a, model)
    x = sample_images(model, tok, balanced_labels(n, max(model.num_classes, 1)), 100, seed, schedule=sched)
    with np.load(d/'runs/fm-samples/samples.npz') as z: same = bool((to_uint8_hwc(x) == z['arr_0']).all())
    with np.load(d/'runs/fm-ref.npz') as z: ref = dict(mu=z['mu'], sigma=z['sigma'], n=int(z['n']))
    inc = InceptionFeatures()
    g_float = gfid(image_stats(x, inc), ref)['fid']
    g_uint8 = gfid(image_stats(to_uint8_hwc(x), inc), ref)['fid']
    res['float_control'] = dict(seed=seed, same_images_as_coda_sample=same, gfid_float=round(g_float, 2), gfid_uint8=round(g_uint8, 2),
                                wall_s=round(time.time() - t, 1))
    save(res, out_json); print('float control:', res['float_control'], flush=True)

def tutorial_scoring(d, n, res, out_json):
    "The chain's tokenizer and seed-1 samples scored exactly as the tutorial scores them: float images, Inception in batches of 50, the reference from the first `n` test images."
    import torch
    from coda_nb.pretrained import load_pretrained
    from coda_nb.config import method_of
    from coda_nb.data.datasets import get_dataset
    from coda_nb.eval.generation import sample_images, balanced_labels, gfid
    from coda_nb.eval.metrics import InceptionFeatures, FeatureStats
    t = time.time()
    model, tok = load_pretrained(d/'runs/fm-maskgit/model').eval(), load_pretrained(d/'runs/fm-tok/tokenizer').eval()
    test = get_dataset('fashion-mnist', 32, n=n, split='test'); x = torch.stack([test[i][0] for i in range(n)])
    inc = InceptionFeatures()
    def stats(imgs):
        st = FeatureStats(); st.update(torch.cat([inc(imgs[i:i + 50]) for i in range(0, len(imgs), 50)])); return st
    ref = stats(x)
    with torch.no_grad(): rec = torch.cat([tok.decode_indices(tok.encode_indices(x[i:i + 50])).float().clamp(-1, 1) for i in range(0, n, 50)])
    c = jload(d/'runs/fm-samples/sample_config.json')
    sched = method_of(model.config).cli.sampling_schedule(argparse.Namespace(**c['protocol']['sampling']), model)
    gen = sample_images(model, tok, balanced_labels(n, max(model.num_classes, 1)), 100, 1, schedule=sched)
    res['tutorial_scoring'] = dict(ceiling=round(gfid(stats(rec), ref)['fid'], 2), gfid_seed1=round(gfid(stats(gen), ref)['fid'], 2),
                                   how='float images, Inception in batches of 50, reference: the first n test images (the tutorial\'s features())',
                                   wall_s=round(time.time() - t, 1))
    save(res, out_json); print('tutorial scoring:', res['tutorial_scoring'], flush=True)

def tokenizer_seeds(a, d, n, res, out_json):
    "The tokenizer retrained with other seeds (`--tok-seeds`), each scored by `coda eval` on the same test images: the ceiling's seed noise."
    res.setdefault('tokenizer_seeds', {'0': res['chain']['tokenizer_ceiling_rfid']})
    for s in [x for x in a.tok_seeds.split(',') if x]:
        t = f'runs/fm-tok-seed{s}'
        run(f'train tokenizer seed {s}', ['train', '--preset', 'coda-taef2-small', '--data', 'fashion-mnist', '--out', t, '--seed', s,
                                          *(['n_train=64', 'steps=2'] if a.tiny else ['n_train=2048']), 'eval_every=0', '--no-progress'],
            d, a.threads, res, out_json, parse_train(t))
        r = run(f'eval tokenizer seed {s}', ['eval', '--tokenizer', f'{t}/tokenizer', '--data', 'fashion-mnist', '--split', 'test',
                                             '--limit', str(n), '--size', '32', '--out', f'{t}/eval', '--no-progress'], d, a.threads, res, out_json,
                lambda dd: (lambda r: dict(rfid=round(r['rfid'], 2), psnr=round(r['psnr'], 2)))(jload(dd/t/'eval/metrics.json')))
        res['tokenizer_seeds'][s] = r['rfid']; save(res, out_json)

def class_agreement(d, steps, res, out_json, n_real: int = 1000):
    """The tutorial's class agreement of each budget's samples: the share whose Inception features are nearest the
    centroid of their own class, the centroids from the first `n_real` training and the 100 reference test images."""
    import torch, numpy as np
    from coda_nb.data.datasets import get_dataset
    from coda_nb.eval.metrics import InceptionFeatures
    t, inc = time.time(), InceptionFeatures()
    def feats(x): return torch.cat([inc(x[i:i + 50]) for i in range(0, len(x), 50)]).double()
    xs, ys = [], []
    for split, n in (('train', n_real), ('test', 100)):
        ds = get_dataset('fashion-mnist', 32, n=n, split=split)
        xs.append(torch.stack([ds[i][0] for i in range(n)])); ys.append(torch.tensor([int(ds[i][1]) for i in range(n)]))
    f, y = feats(torch.cat(xs)), torch.cat(ys)
    cent = torch.stack([f[y == c].mean(0) for c in range(10)])
    for n in steps:
        with np.load(d/f'runs/fm-samples-{n}/samples.npz') as z: a, lab = z['arr_0'], torch.from_numpy(z['arr_1']).long()
        fs = feats(torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1)
        res['budgets'][str(n)]['class_agreement'] = round(float((torch.cdist(fs, cent).argmin(1) == lab).double().mean()), 3)
    res['class_agreement'] = dict(how=f'nearest class centroid of Inception pool features; centroids from the first {n_real} training and 100 test images; chance 0.10',
                                  wall_s=round(time.time() - t, 1))
    save(res, out_json); print('class agreement:', {k: b['class_agreement'] for k, b in res['budgets'].items()}, flush=True)

def budget_sweep(a):
    "The chain's tokenizer, tokens and reference once, then MaskGIT at each of `--maskgit-steps`, sampled and scored like the chain."
    import torch
    steps = [int(x) for x in a.maskgit_steps.split(',') if x]
    d, out_json = ROOT/'runs'/'cli_chain_budget', ROOT/'benchmarks'/'results'/'cli_chain_budget.json'
    if d.exists() and not a.keep: shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    res = dict(script='benchmarks/cli_chain.py', argv=sys.argv[1:], budget='maskgit steps ' + ','.join(map(str, steps)), threads=a.threads,
               torch=torch.__version__, python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
               started=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), loadavg_start=[round(x, 2) for x in os.getloadavg()],
               note='the chain of cli_chain.py with MaskGIT trained for each number of steps; paths relative to the run folder',
               commands=[], budgets={})
    full = ROOT/'benchmarks'/'results'/'cli_chain.json'
    if full.is_file():
        f = jload(full); tm = next(c for c in f['commands'] if c['name'] == 'train maskgit')
        res['reference_run'] = dict(steps=tm.get('steps'), train_s=tm['wall_s'], gfid=f['chain']['gfid'], ceiling=f['chain']['tokenizer_ceiling_rfid'],
                                    level0_outside_fraction=f['chain']['level0_outside_fraction'], sample_seeds=f.get('sample_seeds'),
                                    last_heldout=tm.get('last_heldout'), source='benchmarks/results/cli_chain.json')
    head = dict(chain(False)[:3])
    run('train tokenizer', head['train tokenizer'], d, a.threads, res, out_json, parse_train('runs/fm-tok'))
    run('eval tokenizer', head['eval tokenizer'], d, a.threads, res, out_json, parse_eval)
    run('tokenize', head['tokenize'], d, a.threads, res, out_json)
    for i, n in enumerate(steps):
        m, o = f'runs/fm-maskgit-{n}', f'runs/fm-samples-{n}'
        t = run(f'train maskgit {n} steps', ['train', '--preset', 'maskgit-tiny', '--tokens', 'runs/fm-tokens', '--out', m, f'steps={n}',
                                              'ckpt_every=0', '--no-progress'], d, a.threads, res, out_json, parse_train(m))
        sm = run(f'sample {n}', ['sample', '--model', f'{m}/model', '--tokenizer', 'runs/fm-tok/tokenizer', '--n', '100', '--seed', '1',
                                 '--out', o, '--no-progress'], d, a.threads, res, out_json, parse_sample(o))
        real = ['--real', 'fashion-mnist', '--limit', '100', '--size', '32', '--save-ref', 'runs/fm-ref.npz'] if i == 0 else ['--real', 'runs/fm-ref.npz']
        fd = run(f'fid {n}', ['fid', '--samples', f'{o}/samples.npz', *real, '--out', o, '--no-progress'], d, a.threads, res, out_json, parse_fid(o))
        res['budgets'][str(n)] = dict(steps=n, train_s=t['wall_s'], gfid=fd['gfid'], level0_outside_fraction=sm['level0_outside_fraction'],
                                      last_heldout=t.get('last_heldout'))
        save(res, out_json)
    res['ceiling'] = res['commands'][1]['rfid']
    class_agreement(d, steps, res, out_json)
    res['finished'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()); save(res, out_json)
    print(json.dumps(dict(ceiling=res['ceiling'], budgets=res['budgets'], reference_run=res.get('reference_run')), indent=1))

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--tiny', action='store_true', help='a smoke test: a few steps per stage, 10 images scored')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--sample-seeds', default='2,3,4,5', help='other sampling seeds of the same model (gFID seed noise); empty: none')
    p.add_argument('--train-seeds', default='', help='other MaskGIT training seeds (retrained, sampled at seed 1, scored); empty: none')
    p.add_argument('--keep', action='store_true', help='keep the run folder of an earlier run (default: start from scratch)')
    p.add_argument('--tok-seeds', default='', help='other tokenizer training seeds (retrained, scored by coda eval: the ceiling\'s seed noise); empty: none')
    p.add_argument('--no-controls', action='store_true', help='with --controls-only: skip the in-process scoring controls (only --tok-seeds)')
    p.add_argument('--controls-only', action='store_true', help="only the in-process scoring controls, on the last run's folder and JSON")
    p.add_argument('--maskgit-steps', default='', help='the budget sweep: MaskGIT trained for each of these step counts (e.g. 250,500)')
    a = p.parse_args()
    if a.maskgit_steps: return budget_sweep(a)
    import torch
    d = ROOT/'runs'/('cli_chain_tiny' if a.tiny else 'cli_chain')
    out_json = ROOT/'benchmarks'/'results'/('cli_chain_tiny.json' if a.tiny else 'cli_chain.json')
    n = 10 if a.tiny else 100
    if a.controls_only:
        torch.set_num_threads(a.threads); res = jload(out_json)
        tokenizer_seeds(a, d, n, res, out_json)
        if not a.no_controls: float_control(d, 1, n, res, out_json); tutorial_scoring(d, n, res, out_json)
        return
    if d.exists() and not a.keep: shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    res = dict(script='benchmarks/cli_chain.py', argv=sys.argv[1:], budget='tiny' if a.tiny else 'tutorial', threads=a.threads,
               torch=torch.__version__, python=platform.python_version(), machine=platform.machine(), cpus=os.cpu_count(),
               started=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()), loadavg_start=[round(x, 2) for x in os.getloadavg()],
               note='paths in the commands are relative to the run folder; every command a fresh process at OMP_NUM_THREADS=threads',
               commands=[])
    parsers = {'train tokenizer': parse_train('runs/fm-tok'), 'eval tokenizer': parse_eval, 'train maskgit': parse_train('runs/fm-maskgit'),
               'sample': parse_sample('runs/fm-samples'), 'fid': parse_fid('runs/fm-samples')}
    for name, argv in chain(a.tiny): run(name, argv, d, a.threads, res, out_json, parsers.get(name))
    res['chain'] = dict(gfid=res['commands'][-1]['gfid'], tokenizer_ceiling_rfid=res['commands'][1]['rfid'],
                        level0_outside_fraction=res['commands'][-2]['level0_outside_fraction'],
                        wall_s_total=round(sum(c['wall_s'] for c in res['commands']), 1))
    save(res, out_json)
    torch.set_num_threads(a.threads)
    float_control(d, 1, n, res, out_json); tutorial_scoring(d, n, res, out_json)
    res['sample_seeds'] = {'1': res['chain']['gfid']}
    for s in [x for x in a.sample_seeds.split(',') if x]:
        o = f'runs/fm-samples-seed{s}'
        run(f'sample seed {s}', ['sample', '--model', 'runs/fm-maskgit/model', '--tokenizer', 'runs/fm-tok/tokenizer', '--n', str(n),
                                 '--seed', s, '--out', o, '--no-progress'], d, a.threads, res, out_json, parse_sample(o))
        r = run(f'fid seed {s}', ['fid', '--samples', f'{o}/samples.npz', '--real', 'runs/fm-ref.npz', '--out', o, '--no-progress'],
                d, a.threads, res, out_json, parse_fid(o))
        res['sample_seeds'][s] = r['gfid']; save(res, out_json)
    res['train_seeds'] = {'0': res['chain']['gfid']}
    for s in [x for x in a.train_seeds.split(',') if x]:
        m, o = f'runs/fm-maskgit-seed{s}', f'runs/fm-samples-train{s}'
        run(f'train maskgit seed {s}', ['train', '--preset', 'maskgit-tiny', '--tokens', 'runs/fm-tokens', '--out', m, '--seed', s,
                                        *(['steps=30', 'eval_every=10', 'log_every=5'] if a.tiny else []), 'ckpt_every=0', '--no-progress'],
            d, a.threads, res, out_json, parse_train(m))
        run(f'sample train seed {s}', ['sample', '--model', f'{m}/model', '--tokenizer', 'runs/fm-tok/tokenizer', '--n', str(n), '--seed', '1',
                                       '--out', o, '--no-progress'], d, a.threads, res, out_json, parse_sample(o))
        r = run(f'fid train seed {s}', ['fid', '--samples', f'{o}/samples.npz', '--real', 'runs/fm-ref.npz', '--out', o, '--no-progress'],
                d, a.threads, res, out_json, parse_fid(o))
        res['train_seeds'][s] = r['gfid']; save(res, out_json)
    tokenizer_seeds(a, d, n, res, out_json)
    res['finished'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()); save(res, out_json)
    print(json.dumps(dict(chain=res['chain'], float_control=res['float_control'], sample_seeds=res['sample_seeds'],
                          train_seeds=res['train_seeds']), indent=1))

if __name__ == '__main__': main()
