"""Whole-tokenizer inference benchmark at 256 px: the paper presets with their VAEs at real size and random weights.

    .venv/bin/python benchmarks/bench_tokenizer.py [--batch 2] [--repeats 2] [--threads 1]

For each preset, in its own subprocess: build the tokenizer around a randomly initialised MAR kl16 / FLUX.1 VAE
(`load_diffusers_vae(config=...)`, nothing downloaded), warm up the VAE on a 32 px image (pages in the kernels), then
time on `--batch` held-out photo crops of 256 px:
  * tokenize: image -> indices (posterior mode + chunked index search; what `coda-tokenize` runs),
  * decode:   indices -> image (what `coda-decode` runs),
  * round trip = tokenize + decode.
The first full-size pass is timed separately; the throughputs use the best of `--repeats` passes after it. Peak
memory is the growth of the process's maximum resident set size (`ru_maxrss`) over its resident size just before
the first full-size pass (the weights are already in memory then; `model_rss_mib` is the process size at that
point). The decoded images are checked against the tokenizer's own forward pass. Results go to
benchmarks/results/tokenizer.json. Random weights: the timings are representative, the images are not.
"""
import argparse, json, os, platform, resource, subprocess, sys, time
from pathlib import Path

CONFIGS = ['coda-mar-16384', 'coda-flux-65536']
OUT = Path(__file__).resolve().parent/'results'/'tokenizer.json'


def current_rss_kb():
    with open('/proc/self/statm') as fh: return int(fh.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') // 1024


def worker(name, batch, repeats, threads):
    import torch
    torch.set_num_threads(threads)
    from coda_nb.tokenizers.coda import build_tokenizer
    from coda_nb.vae.autoencoder_kl import load_diffusers_vae, FLUX_VAE_CONFIG, FLUX_LORA_TARGETS
    from coda_nb.vae.ldm import mar_kl16_config, MAR_LORA_TARGETS
    from coda_nb.data.tokens import image_indices, indices_to_images
    from coda_nb.data.photos import photo_batch
    t = time.perf_counter()
    if 'mar' in name: vae = load_diffusers_vae(config=mar_kl16_config(), kind='mar-kl16', default_lora_targets=MAR_LORA_TARGETS)
    else: vae = load_diffusers_vae(config=FLUX_VAE_CONFIG, default_lora_targets=FLUX_LORA_TARGETS)
    tok = build_tokenizer(name, vae=vae).eval()
    build_s = time.perf_counter() - t
    x = photo_batch(batch, 256, split='test')
    with torch.no_grad(): tok.decode(tok.vae.encode(x[:1, :, :32, :32]))   # warm-up: VAE kernels only
    rss0 = current_rss_kb()

    def roundtrip():
        t0 = time.perf_counter(); idx = image_indices(tok, x)
        t1 = time.perf_counter(); y = indices_to_images(tok, idx, 256)
        t2 = time.perf_counter()
        return idx, y, t1 - t0, t2 - t1

    idx, y, first_tok, first_dec = roundtrip()
    peak_kb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0)
    runs = [roundtrip()[2:] for _ in range(repeats)]
    best_tok, best_dec = min(r[0] for r in runs), min(r[1] for r in runs)
    with torch.no_grad(): ref = tok(x)
    tpi = tok.quantizer.tokens_per_image
    return dict(batch=batch, tokens_per_image=tpi, codebook_size=tok.quantizer.codebook_size, downsample=tok.downsample,
                vae_params=sum(p.numel() for p in tok.vae.parameters()), build_s=build_s,
                first_pass_s=dict(tokenize=first_tok, decode=first_dec),
                times_s=dict(tokenize=[r[0] for r in runs], decode=[r[1] for r in runs]),
                images_per_s=dict(tokenize=batch / best_tok, decode=batch / best_dec, roundtrip=batch / (best_tok + best_dec)),
                tokens_per_s=dict(tokenize=batch * tpi / best_tok, decode=batch * tpi / best_dec,
                                  roundtrip=batch * tpi / (best_tok + best_dec)),
                model_rss_mib=rss0 / 1024, peak_mem_mib=peak_kb / 1024,
                indices_match_forward=all(bool((a == b).all()) for a, b in zip(idx, ref.tokens)),
                decode_max_abs_diff_vs_forward=float((y - ref.x_hat).abs().max()))


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch', type=int, default=2); p.add_argument('--repeats', type=int, default=2)
    p.add_argument('--threads', type=int, default=1); p.add_argument('--configs', nargs='*', default=CONFIGS)
    p.add_argument('--worker', metavar='CONFIG', help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.batch, a.repeats, a.threads))); return
    import torch
    results = dict(image_size=256, batch=a.batch, repeats=a.repeats, threads=a.threads, omp_num_threads=str(a.threads),
                   weights='random (real architectures)', torch=torch.__version__, machine=platform.machine(),
                   cpu_count=os.cpu_count(), device='cpu', loadavg_start=os.getloadavg(), configs={})
    t = time.perf_counter()
    for name in a.configs:
        cmd = [sys.executable, __file__, '--batch', str(a.batch), '--repeats', str(a.repeats), '--threads', str(a.threads), '--worker', name]
        env = os.environ | dict(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        r = results['configs'][name] = json.loads(out.strip().splitlines()[-1]) | dict(loadavg_after=os.getloadavg())
        print(f"{name:16s} tokenize {r['images_per_s']['tokenize']:.3f} img/s ({r['tokens_per_s']['tokenize']:.0f} tokens/s), "
              f"decode {r['images_per_s']['decode']:.3f} img/s, round trip {r['images_per_s']['roundtrip']:.3f} img/s, "
              f"peak +{r['peak_mem_mib']:.0f} MiB over {r['model_rss_mib']:.0f} MiB, indices match forward: {r['indices_match_forward']}",
              flush=True)
    results |= dict(loadavg_end=os.getloadavg(), wall_s=time.perf_counter() - t)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print(f'wrote {OUT}')


if __name__ == '__main__': main()
