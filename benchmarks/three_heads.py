"""Three MaskGIT heads on the same LatentBit tokens at the same compute budget (CPU seconds of one thread, so wall seconds on an idle core): the index head (one 2^D-way softmax),
the bitwise head (D independent bits, LatentBit eq. 4) and the grouped head (G softmaxes over 2^(D/G) codes, MaskBit's
subgrouping). Held-out NLL in bits per token (-log2 p(token), the same quantity for all three), gFID at the same n, and
the within-token dependence between bits: empirical (total correlation, pairwise mutual information, group MI) and
under the index head's own predictions (what factorising them into independent bits or groups costs).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/three_heads.py            # the full run
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/three_heads.py --data photos     # the same on 32 px photo crops
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/three_heads.py --quick --out runs/th_quick.json  # a smoke test

Writes benchmarks/results/three_heads.json (three_heads_photos.json with `--data photos`) after every stage. Photo crops
have no classes: their MaskGIT heads are unconditional (every label the null class, so guidance has no effect), and
the gFID reference is the first held-out crops. Tokenizer, tokens and Inception features are cached under
.cache/three_heads/ (delete it to start from scratch)."""
import argparse, json, math, os, time, platform
from pathlib import Path
import numpy as np, torch

ROOT = Path(__file__).resolve().parents[1]
ap = argparse.ArgumentParser()
ap.add_argument('--data', default='fashion-mnist', choices=['fashion-mnist', 'photos'], help='the images the tokens are made of')
ap.add_argument('--out', default=None, help='results JSON (default: benchmarks/results/three_heads.json, or three_heads_photos.json)')
ap.add_argument('--budget-s', type=float, default=100, help='training CPU seconds per head (the matched budget; one thread: wall seconds on an idle core)')
ap.add_argument('--n-fid', type=int, default=250, help='samples per gFID (and reference images)')
ap.add_argument('--groups', type=int, default=2)
ap.add_argument('--quick', action='store_true')
ap.add_argument('--only', choices=['grouped-factorised'], default=None,
                help="grouped-factorised: from the cached tokens and the saved grouped head, add to the JSON what factorising its groups into independent bits costs")
args = ap.parse_args()

from coda_nb.core import seed_everything
from coda_nb.weights import find_weights
from coda_nb.data.datasets import get_dataset
from coda_nb.data.tokens import tokenize_folder
from coda_nb.tokenizers.latentbit import build_latentbit
from coda_nb.pretrained import load_pretrained
from coda_nb.token_kinds import TokenSpec
from coda_nb.quantizers.binary import bits_to_indices
from coda_nb.training.latentbit import LatentBitTrainConfig, train_latentbit
from coda_nb.training.maskgit import MaskGITTrainConfig, TokenSequences, GeneratorTask
from coda_nb.training.loop import Callback, fit
from coda_nb.generators.schedules import SamplingSchedule, random_mask
from coda_nb.generators.sampler import Sampler
from coda_nb.config import get_preset
from coda_nb.eval.generation import masked_nll, sample_images, balanced_labels, gfid
from coda_nb.eval.metrics import InceptionFeatures, FeatureStats

torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
seed_everything(0)
Q = args.quick
TOK_STEPS, N_TOK_TRAIN, N_TRAIN, N_VAL = (20, 256, 512, 128) if Q else (600, 4096, 10000, 1000)
BUDGET, N_FID, G = (6.0 if Q else args.budget_s), (20 if Q else args.n_fid), args.groups
DATA = args.data
CACHE = ROOT/'.cache'/'three_heads'/(('quick' if Q else 'full') + ('' if DATA == 'fashion-mnist' else f'-{DATA}'))
CACHE.mkdir(parents=True, exist_ok=True)
OUT = Path(args.out or ROOT/'benchmarks'/'results'/('three_heads.json' if DATA == 'fashion-mnist' else f'three_heads_{DATA}.json'))
R = dict(script='benchmarks/three_heads.py', quick=Q, threads=torch.get_num_threads(), torch=torch.__version__,
         cpu=platform.processor() or platform.machine(), loadavg_start=os.getloadavg(), budget_cpu_s_per_head=BUDGET,
         tokens=dict(tokenizer='latentbit-taef2-tiny', D=14, image_size=32, data=DATA, tok_steps=TOK_STEPS,
                     n_tok_train=N_TOK_TRAIN, n_train=N_TRAIN, n_val=N_VAL), stages={})
T0 = time.time()
def save():
    R['loadavg_end'], R['total_s'] = os.getloadavg(), round(time.time() - T0, 1)
    OUT.parent.mkdir(parents=True, exist_ok=True); t = OUT.with_suffix('.tmp'); t.write_text(json.dumps(R, indent=1)); t.replace(OUT)

# ---------------------------------------------------------------- 1. the tokens (the bitwise notebook's recipe), cached
t = time.time()
tok_dir = CACHE/'tokenizer'
if not (tok_dir/'config.json').is_file():
    tok = build_latentbit('latentbit-taef2-tiny', vae_path=find_weights('taef2'), seed=0, image_size=32)
    r = train_latentbit(LatentBitTrainConfig.from_preset('latentbit-taef2-tiny', out=str(CACHE/'tok-run'), data=DATA, image_size=32,
                                                         n_train=N_TOK_TRAIN, steps=TOK_STEPS, ckpt_every=0, progress=False), tokenizer=tok)
    r['tokenizer'].save_pretrained(tok_dir)                   # the trained tokenizer as the notebook uses it (not the EMA)
tok = load_pretrained(tok_dir).eval()
for split, n in (('train', N_TRAIN), ('test', N_VAL)):
    if not (CACHE/split/'manifest.json').is_file():
        tokenize_folder(tok, get_dataset(DATA, 32, n=n, split=split), CACHE/split, shard_size=2048, batch_size=128, progress=False)
mt, mv = TokenSequences.from_folder(CACHE/'train'), TokenSequences.from_folder(CACHE/'test')
bit_train, bit_val = (TokenSequences(*m.rows(range(len(m))), m.spec, m.fingerprint) for m in (mt, mv))
D = bit_train.spec.bits
R['stages']['tokens_s'] = round(time.time() - t, 1)

def respec(ts, **kw):
    return TokenSequences(ts.seq, ts.labels, TokenSpec(levels=ts.spec.levels, image_size=ts.spec.image_size, downsample=ts.spec.downsample, **kw), ts.fingerprint)
def as_index(ts):
    return TokenSequences(bits_to_indices(ts.seq > 0), ts.labels, TokenSpec('index', ts.spec.levels, codebook_size=2 ** D, image_size=ts.spec.image_size,
                                                                             downsample=ts.spec.downsample), ts.fingerprint)
HEADS = {'index': (as_index(bit_train), as_index(bit_val)),
         'bitwise': (bit_train, bit_val),
         f'grouped (G = {G})': (respec(bit_train, kind='bit_groups', bits=D, groups=G), respec(bit_val, kind='bit_groups', bits=D, groups=G))}

@torch.no_grad()
def grouped_factorised(model, va, seed=0, batch=128):
    "On held-out masks: -log2 of the true token under the grouped head, and under the product of the bit marginals of each group's softmax; KL(groups || bits) under the head."
    kind, g = model.kind, torch.Generator().manual_seed(seed)
    tot, n = dict(groups=0.0, bits=0.0, kl=0.0), 0
    for i in range(0, len(va.seq), batch):
        s, y = va.seq[i:i + batch], va.labels[i:i + batch]
        mask = random_mask(len(s), s.shape[1], 'cosine', generator=g)
        logp = model(s, mask, y, at=mask).float().unflatten(-1, (kind.G, kind.K)).log_softmax(-1).double()    # M x G x K
        x = kind.codes(s[mask]); p = logp.exp(); b = kind.group_bits
        pb = p.view(len(p), kind.G, *[2] * b)
        lpd = torch.stack([pb.sum([k for k in range(2, b + 2) if k != d + 2]).clamp_min(1e-300).log() for d in range(b)], 2)   # M x G x b x 2
        xb = torch.stack([(x >> (b - 1 - d)) & 1 for d in range(b)], 2)                                                    # M x G x b
        tot['groups'] -= float(logp.gather(2, x[..., None]).sum()); tot['bits'] -= float(lpd.gather(3, xb[..., None]).sum())
        tot['kl'] += float(((-(lpd.exp() * lpd).sum(-1)).sum(-1) + (p * logp).sum(-1)).sum())                         # sum_d H(p_d) - H(p), per group
        n += len(x)
    L2 = math.log(2)
    return dict(hidden_tokens=n, nll_groups=tot['groups'] / n / L2, nll_product_of_bit_marginals=tot['bits'] / n / L2, expected_tc_within_groups=tot['kl'] / n / L2,
                note="the grouped head's G softmaxes on held-out masks (cosine, seed 0, one mask a sequence), each factorised into the product of its bit marginals: "
                     "the within-group dependence the head uses given the context")
if args.only == 'grouped-factorised':
    from coda_nb.generators.maskgit import MaskGIT
    R = json.loads(OUT.read_text()); name = f'grouped (G = {G})'; tr, va = HEADS[name]
    model = MaskGIT.from_token_spec(tr.spec, 'maskgit-tiny', num_classes=tr.num_classes)
    model.load_state_dict(torch.load(CACHE/f'model-{name.split()[0]}.pt')); model.eval()
    t = time.time(); R['grouped_head_factorised'] = grouped_factorised(model, va) | dict(seconds=round(time.time() - t, 1), command='--only grouped-factorised')
    check = masked_nll(model, va.seq, va.labels, 'cosine', seed=0, masks_per_seq=2)['bits_per_token']
    assert abs(check - R['heads'][name]['nll_bits_per_token']) < 1e-6, (check, R['heads'][name]['nll_bits_per_token'])   # the same model as the run's
    print(R['grouped_head_factorised']); OUT.write_text(json.dumps(R, indent=1)); raise SystemExit

# ---------------------------------------------------------------- 2. within-token dependence in the data (no model)
def H(counts):
    "Plug-in entropy (bits) and its Miller-Madow correction of a count vector."
    c = counts[counts > 0].double(); n = c.sum(); p = c / n
    h = float(-(p * p.log2()).sum()); return h, h + (len(c) - 1) / (2 * float(n) * math.log(2))
def ce(train_codes, val_codes, K, alpha=0.5):
    "Held-out cross-entropy (bits) of a K-way unigram fitted on the training codes with add-alpha smoothing."
    p = (torch.bincount(train_codes, minlength=K).double() + alpha); p = p / p.sum()
    return float(-p[val_codes].log2().mean())
t = time.time()
btr, bva = (bit_train.seq > 0).flatten(0, 1), (bit_val.seq > 0).flatten(0, 1)           # tokens x D
itr, iva = bits_to_indices(btr), bits_to_indices(bva)
gb = D // G
w = 2 ** torch.arange(gb - 1, -1, -1)
gtr, gva = ((btr.long().unflatten(-1, (G, gb)) * w).sum(-1), (bva.long().unflatten(-1, (G, gb)) * w).sum(-1))
h_bits = [H(torch.bincount(btr[:, d].long(), minlength=2)) for d in range(D)]
h_joint = H(torch.bincount(itr, minlength=2 ** D))
h_groups = [H(torch.bincount(gtr[:, g], minlength=2 ** gb)) for g in range(G)]
mi = torch.zeros(D, D)
for a in range(D):
    for b in range(a + 1, D):
        hab = H(torch.bincount(btr[:, a].long() * 2 + btr[:, b].long(), minlength=4))[0]
        mi[a, b] = mi[b, a] = h_bits[a][0] + h_bits[b][0] - hab
same = torch.tensor([[a // gb == b // gb and a != b for b in range(D)] for a in range(D)])
cross = torch.tensor([[a // gb != b // gb for b in range(D)] for a in range(D)])
sum_bits = sum(h[0] for h in h_bits); sum_bits_mm = sum(h[1] for h in h_bits)
R['data_dependence'] = dict(
    tokens_train=len(btr), tokens_val=len(bva), codes_used_train=int((torch.bincount(itr, minlength=2 ** D) > 0).sum()),
    entropy_bits_sum=sum_bits, entropy_joint_plugin=h_joint[0], entropy_joint_miller_madow=h_joint[1],
    total_correlation_plugin=sum_bits - h_joint[0], total_correlation_miller_madow=sum_bits_mm - h_joint[1],
    within_group_tc_plugin=[sum(h_bits[g * gb + j][0] for j in range(gb)) - h_groups[g][0] for g in range(G)],
    between_group_mi_plugin=sum(h[0] for h in h_groups) - h_joint[0],
    pairwise_mi_mean=float(mi[~torch.eye(D, dtype=torch.bool)].mean()), pairwise_mi_max=float(mi.max()),
    pairwise_mi_within_group_mean=float(mi[same].mean()), pairwise_mi_across_groups_mean=float(mi[cross].mean()),
    pairwise_mi=mi.tolist(),
    heldout_unigram_bits_per_token=dict(independent_bits=sum(ce(btr[:, d].long(), bva[:, d].long(), 2) for d in range(D)),
                                        grouped=sum(ce(gtr[:, g], gva[:, g], 2 ** gb) for g in range(G)),
                                        joint=ce(itr, iva, 2 ** D)),
    note='unconditional: each token on its own, no context; plug-in entropies on the training tokens, cross-entropies on held-out tokens (add-0.5 smoothing)',
    seconds=round(time.time() - t, 1))
print(json.dumps({k: v for k, v in R['data_dependence'].items() if k != 'pairwise_mi'}, indent=1)); save()

# ---------------------------------------------------------------- 3. the three heads, each at the same CPU-time budget
def config(name, steps):
    return MaskGITTrainConfig.from_preset('maskgit-tiny', out=str(CACHE/'runs'/name.split()[0].replace('-cal', '') / ('cal' if name.endswith('-cal') else 'run')), steps=steps, batch_size=64,
                                          warmup_steps=min(100, steps // 5), mask_schedule='cosine', ckpt_every=0, progress=False,
                                          log_every=max(1, steps // 10), eval_every=0)
class Clock(Callback):
    "Wall time of every step, and held-out NLL at a few steps (its time kept apart from the training time)."
    def __init__(self, val, at=()): self.val, self.at, self.t, self.cpu, self.curve, self.eval_s, self.eval_cpu = val, set(at), [], [], [], 0.0, 0.0
    def on_train_start(self, trainer): self.t0, self.c0 = time.perf_counter(), time.process_time()
    def on_step_end(self, trainer, step):
        self.t.append(time.perf_counter() - self.t0 - self.eval_s); self.cpu.append(time.process_time() - self.c0 - self.eval_cpu)
        if step in self.at:
            e, c = time.perf_counter(), time.process_time()
            self.curve.append((step, masked_nll(trainer.parts['maskgit'].module, self.val.seq, self.val.labels, 'cosine', seed=0)['bits_per_token']))
            self.eval_s += time.perf_counter() - e; self.eval_cpu += time.process_time() - c
CAL = 6 if Q else 25
R['heads'] = {}
for name, (tr, va) in HEADS.items():
    torch.manual_seed(0)
    cal = Clock(va); fit(GeneratorTask(data=tr), config(name + '-cal', CAL), callbacks=[cal], overwrite=True)   # calibration: seconds per step
    per_step = (cal.cpu[-1] - cal.cpu[CAL // 3]) / (CAL - 1 - CAL // 3)         # CPU seconds a step (the budget is in CPU s: robust to a loaded machine)
    steps = max(10, int(BUDGET / per_step))
    at = sorted({int(steps * f) for f in (0.25, 0.5, 0.75)} | {k for k in (25, 50, 100, 200, 400, 800, 1600) if k < steps} | {steps})   # also at fixed steps: equal-step comparisons
    torch.manual_seed(0); la0 = os.getloadavg()
    cb, t = Clock(va, at), time.time()
    res = fit(GeneratorTask(data=tr), config(name, steps), callbacks=[cb], overwrite=True)
    wall = time.time() - t
    model = res['models']['maskgit'].eval()
    final = masked_nll(model, va.seq, va.labels, 'cosine', seed=0, masks_per_seq=2)
    R['heads'][name] = dict(kind=tr.spec.kind, describe=model.kind.describe(), params=sum(p.numel() for p in model.parameters()),
                            head_params=sum(p.numel() for p in model.head.parameters()) + (sum(p.numel() for p in model.tok_emb.parameters())),
                            steps=steps, batch=64, calib_cpu_s_per_step=per_step, train_cpu_s=cb.cpu[-1], train_s=cb.t[-1], wall_s=wall, eval_s=cb.eval_s,
                            loadavg_before=la0, loadavg_after=os.getloadavg(), curve=cb.curve,
                            nll_bits_per_token=final['bits_per_token'], nll_hidden_tokens=final['hidden_tokens'], nll_masks_per_seq=2)
    torch.save(model.state_dict(), CACHE/f'model-{name.split()[0]}.pt'); HEADS[name] = (tr, va, model)
    print(name, {k: v for k, v in R['heads'][name].items() if k != 'curve'}, flush=True); save()

# ---------------------------------------------------------------- 4. the index head's own predictions, factorised
@torch.no_grad()
def factorised(model, va, seed=0, batch=128):
    "On held-out masks: -log2 of the true token under the index head's p, under the product of p's bit marginals, and of its group marginals; and KL(p || product) under p."
    g, tot = torch.Generator().manual_seed(seed), dict(joint=0.0, groups=0.0, bits=0.0, kl_bits=0.0, kl_groups=0.0, n=0)
    for i in range(0, len(va.seq), batch):
        s, y = va.seq[i:i + batch], va.labels[i:i + batch]
        mask = random_mask(len(s), s.shape[1], 'cosine', generator=g)
        logp = model(s, mask, y, at=mask).float().log_softmax(-1).double()                        # M x 2^D
        x = s[mask]; p = logp.exp()
        pb = p.view(-1, *[2] * D)
        lpd = torch.stack([pb.sum([k for k in range(1, D + 1) if k != d + 1]).clamp_min(1e-300).log() for d in range(D)], 1)   # M x D x 2
        xb = torch.stack([(x >> (D - 1 - d)) & 1 for d in range(D)], 1)                                       # MSB first
        pg = p.view(-1, *[2 ** gb] * G)
        lpg = torch.stack([pg.sum([k for k in range(1, G + 1) if k != j + 1]).clamp_min(1e-300).log() for j in range(G)], 1)  # M x G x K
        xg = torch.stack([(x >> (gb * (G - 1 - j))) & (2 ** gb - 1) for j in range(G)], 1)
        tot['joint'] -= float(logp.gather(1, x[:, None]).sum())
        tot['bits'] -= float(lpd.gather(2, xb[..., None]).sum()); tot['groups'] -= float(lpg.gather(2, xg[..., None]).sum())
        h = -(p * logp).sum(1)                                                                                # H(p), nats
        tot['kl_bits'] += float(((-(lpd.exp() * lpd).sum(-1)).sum(-1) - h).sum())                             # sum_d H(p_d) - H(p)
        tot['kl_groups'] += float(((-(lpg.exp() * lpg).sum(-1)).sum(-1) - h).sum())
        tot['n'] += len(x)
    n = tot.pop('n'); L2 = math.log(2)
    return dict(hidden_tokens=n, nll_joint=tot['joint'] / n / L2, nll_product_of_bit_marginals=tot['bits'] / n / L2,
                nll_product_of_group_marginals=tot['groups'] / n / L2,
                expected_tc_bits=tot['kl_bits'] / n / L2, expected_tc_groups=tot['kl_groups'] / n / L2)
t = time.time()
R['index_head_factorised'] = factorised(HEADS['index'][2], HEADS['index'][1]) | dict(
    note="the index head's 2^D-way prediction p on held-out masks (cosine, seed 0, one mask a sequence); expected_tc: KL(p || product of p's marginals) "
         "averaged over hidden tokens, the log-loss an independent factorisation of the same prediction loses under p")
R['index_head_factorised']['seconds'] = round(time.time() - t, 1)
print(R['index_head_factorised'], flush=True); save()

# ---------------------------------------------------------------- 5. gFID at the same n: reference, the tokenizer's ceiling, the three heads
inc = InceptionFeatures()
def feats(key, make):
    f = CACHE/'feats'/f'{key}-{N_FID}.pt'
    if f.is_file(): return torch.load(f)
    x = make(); out = torch.cat([inc(x[i:i + 50]) for i in range(0, len(x), 50)])
    f.parent.mkdir(exist_ok=True); torch.save(out, f.with_suffix('.tmp')); f.with_suffix('.tmp').replace(f); return out
def stats(f): st = FeatureStats(); st.update(f); return st
t = time.time()
test = get_dataset(DATA, 32, n=N_FID, split='test')
x_test = torch.stack([(lambda it: it if torch.is_tensor(it) else it[0])(test[i]) for i in range(N_FID)])
ref = stats(feats('test', lambda: x_test))
NC = HEADS[next(iter(HEADS))][0].num_classes                   # 10 for Fashion-MNIST, 0 (unconditional) for photo crops
proto = dict(labels='balanced' if NC else 'none (unconditional)', reference=f'{DATA} test, first {N_FID}, 32 px')
with torch.no_grad():
    rec = lambda: torch.cat([tok.decode_indices(tok.encode_indices(x_test[i:i + 100])).float().clamp(-1, 1) for i in range(0, N_FID, 100)])
    R['gfid'] = dict(n=N_FID, reference=proto['reference'], ceiling_tokenizer_reconstructions=gfid(stats(feats('rec', rec)), ref, **proto)['fid'],
                     reference_s=round(time.time() - t, 1), heads={})
save()
S = get_preset('maskgit-tiny').train['sampling']
R['gfid']['sampling'] = S
for name, (tr, va, model) in HEADS.items():
    t = time.time()
    smp = Sampler(model, SamplingSchedule.make(model.L, S['steps'], S['schedule'], temperature=S['temperature'], gumbel=S['gumbel'], guidance=S['guidance']))
    imgs = sample_images(smp, tok, balanced_labels(N_FID, NC), batch_size=100, seed=0)
    ts = time.time() - t
    R['gfid']['heads'][name] = dict(gfid=gfid(stats(feats(f'samples-{name.split()[0]}', lambda: imgs)), ref, **proto)['fid'],
                                    sample_s=round(ts, 1), seconds=round(time.time() - t, 1))
    print(name, R['gfid']['heads'][name], flush=True); save()
print(json.dumps({k: R[k] for k in ('heads', 'gfid')}, indent=1, default=str)[:4000])
