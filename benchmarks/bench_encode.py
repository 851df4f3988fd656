"""Public-encode benchmark: the whole tokenizer (VAE + LoRA + quantizer) at FLUX-65536 on 256-px photos, image -> indices.

    .venv/bin/python benchmarks/bench_encode.py [--preset coda-flux-65536] [--batch 1] [--repeats 2] [--threads 1]

The tokenizer is `build_tokenizer(preset)` around a randomly initialised VAE of the real architecture
(`load_diffusers_vae(config=...)`, nothing downloaded), rank-32 LoRA included. Paths, each in its own subprocess:
  * `encode_indices`:  `tok.encode_indices(x)`, the public inference face (posterior mode, chunked fp32 search, no losses);
  * `materialising`:   the reference. The same VAE encode (posterior mode), then at every level the package's materialising
                       quantizer path (`AttentionQuantizer._forward_train`, what `tiled=False` trains with and what the
                       authors' release computes in every forward, eval included): full `N x V` logits, softmax, argmax,
                       one-hot @ values, the three loss terms and the entropy terms at T = 0.01; under `torch.no_grad()`;
  * `encode_losses`:   `tok.encode(x, losses=True)`: chunked search plus the chunked entropy passes (for reference);
  * `vae_encode`:      `tok.vae.encode(x)` alone: the floor that any quantizer path adds to.
After a warm-up (VAE on a 32-px image, quantizer on a 1024-code copy), the first full-size pass is timed separately and
the time is the best of `--repeats` passes after it; peak memory is the growth of `ru_maxrss` over the resident size
before the first pass. The parent checks that `encode_indices` and `materialising` give identical indices at every
level. Results go to benchmarks/results/encode.json.
"""
import argparse, json, math, os, platform, resource, subprocess, sys, tempfile, time
from pathlib import Path

PATHS = ['encode_indices', 'materialising', 'encode_losses', 'vae_encode']
OUT = Path(__file__).resolve().parent/'results'/'encode.json'


def _version(pkg):
    from importlib.metadata import version, PackageNotFoundError
    try: return version(pkg)
    except PackageNotFoundError: return None


def current_rss_kb():
    with open('/proc/self/statm') as fh: return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


def materialising_encode(tok, x):
    "Reference: the VAE encode, then every level through the materialising quantizer path with all its losses."
    import torch, torch.nn.functional as F
    from coda_nb.quantizers.search import _tokens
    msq = tok.quantizer
    with torch.no_grad():
        f = tok.vae.encode(x).float()
        H, W = f.shape[-2:]
        prepared = [q.prepare() for q in msq.quantizers]
        f_hat, r, indices = torch.zeros_like(f), f, []
        for l, s in enumerate(msq.scales):
            aq, (k, v) = msq.level_quantizer(l), prepared[0 if msq.shared else l]
            fd = r if s == (H, W) else F.interpolate(r, size=s, mode='area')
            xs = _tokens(fd)
            z, idx, losses = aq._forward_train(xs, aq.attn.norm_q(aq.attn.to_q(xs)), k, v, True)
            zq = z.view(fd.shape[0], *s, -1).permute(0, 3, 1, 2)
            h = zq if s == (H, W) else F.interpolate(zq, size=(H, W), mode='bicubic', align_corners=False)
            f_hat, r = f_hat + h, r - h
            indices.append(idx.view(fd.shape[0], *s))
    return indices


def worker(preset, path, batch, repeats, threads, idx_path):
    import torch
    torch.set_num_threads(threads)
    from coda_nb.tokenizers.coda import build_tokenizer
    from coda_nb.vae.autoencoder_kl import load_diffusers_vae, FLUX_VAE_CONFIG, FLUX_LORA_TARGETS
    from coda_nb.vae.ldm import mar_kl16_config, MAR_LORA_TARGETS
    from coda_nb.data.photos import photo_batch
    if 'mar' in preset: vae = load_diffusers_vae(config=mar_kl16_config(), kind='mar-kl16', default_lora_targets=MAR_LORA_TARGETS)
    else: vae = load_diffusers_vae(config=FLUX_VAE_CONFIG, default_lora_targets=FLUX_LORA_TARGETS)
    tok = build_tokenizer(preset, vae=vae).eval()
    x = photo_batch(batch, tok.image_size, split='test')
    run = dict(encode_indices=lambda: tok.encode_indices(x), materialising=lambda: materialising_encode(tok, x),
               encode_losses=lambda: tok.encode(x, losses=True).tokens,
               vae_encode=lambda: tok.vae.encode(x))[path]
    with torch.no_grad():                                          # warm-up: VAE kernels, quantizer kernels at small V
        tok.vae.encode(x[:1, :, :32, :32])
        small = build_tokenizer(preset, vae=vae, codebook_size=1024).eval()
        (materialising_encode if path == 'materialising' else (lambda t, y: t.encode_indices(y)))(small, x[:1])
    rss0 = current_rss_kb()
    with torch.no_grad():
        t = time.perf_counter(); out = run(); first = time.perf_counter() - t
        peak_kb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0)
        times = []
        for _ in range(repeats):
            t = time.perf_counter(); run(); times.append(time.perf_counter() - t)
    if path != 'vae_encode': torch.save([i.cpu() for i in out], idx_path)
    return dict(path=path, batch=batch, first_s=first, best_s=min(times), times_s=times, images_per_s=batch / min(times),
                peak_mem_mib=peak_kb / 1024, model_rss_mib=rss0 / 1024, tokens_per_image=tok.quantizer.tokens_per_image,
                codebook_size=tok.quantizer.codebook_size)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--preset', default='coda-flux-65536'); p.add_argument('--batch', type=int, default=1)
    p.add_argument('--repeats', type=int, default=2); p.add_argument('--threads', type=int, default=1)
    p.add_argument('--paths', nargs='*', default=PATHS)
    p.add_argument('--worker', nargs=2, metavar=('PATH', 'IDX_PATH'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.preset, a.worker[0], a.batch, a.repeats, a.threads, a.worker[1]))); return
    import torch
    results = dict(preset=a.preset, image_size=256, batch=a.batch, repeats=a.repeats, threads=a.threads, omp_num_threads=str(a.threads),
                   weights='random (real architectures)', torch=torch.__version__, diffusers=_version('diffusers'),
                   python=platform.python_version(),
                   machine=platform.machine(), cpu_count=os.cpu_count(), device='cpu',
                   command=' '.join([Path(sys.executable).name, *sys.argv]), loadavg_start=os.getloadavg(), paths={})
    t0 = time.perf_counter()
    env = os.environ | dict(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    with tempfile.TemporaryDirectory() as d:
        idx = {}
        for path in a.paths:
            ip = str(Path(d)/f'{path}.pt'); la = os.getloadavg()
            cmd = [sys.executable, __file__, '--preset', a.preset, '--batch', str(a.batch), '--repeats', str(a.repeats),
                   '--threads', str(a.threads), '--worker', path, ip]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1])
            results['paths'][path] = r | dict(loadavg_before=la, loadavg_after=os.getloadavg())
            if path != 'vae_encode': idx[path] = torch.load(ip, weights_only=True)
            print(f"{a.preset} {path:15s} {r['best_s']:7.3f} s per {a.batch} image(s) (first {r['first_s']:.3f} s), "
                  f"peak +{r['peak_mem_mib']:.0f} MiB, load {la[0]:.2f}", flush=True)
    P = results['paths']
    if 'encode_indices' in P and 'materialising' in P:
        same = [bool(torch.equal(x, y)) for x, y in zip(idx['encode_indices'], idx['materialising'])]
        results['comparison'] = dict(speedup=P['materialising']['best_s'] / P['encode_indices']['best_s'],
                                     indices_identical=all(same), indices_identical_per_level=same)
        if 'vae_encode' in P:
            v = P['vae_encode']['best_s']
            results['comparison'] |= dict(quantizer_s_encode_indices=P['encode_indices']['best_s'] - v,
                                          quantizer_s_materialising=P['materialising']['best_s'] - v,
                                          speedup_bound_with_this_vae=P['materialising']['best_s'] / v)
        c = results['comparison']
        print(f"speed-up encode_indices vs materialising: {c['speedup']:.2f}x, indices identical: {c['indices_identical']}", flush=True)
    results |= dict(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f'wrote {OUT}')


if __name__ == '__main__': main()
