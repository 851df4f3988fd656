"""The maskgit-tiny recipe against the one it replaced, one knob group at a time, on the Fashion-MNIST tutorial's tokens.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/maskgit_tiny_recipe.py TOKENS_DIR [--steps 300] [--eval-every 50]

TOKENS_DIR is a folder written by `coda tokenize` (the tutorial's: 30 tokens of V = 1024 per 32 px image). Every run
trains `maskgit-tiny` through `train_maskgit` (the generator task `coda train` uses) for the same steps, batch, seed and
held-out sequences, and differs from the preset only in the named keys. The score is the held-out masked-token
accuracy and loss (no label smoothing) that the task logs every `--eval-every` steps. Results go to
benchmarks/results/maskgit_tiny_recipe.json with the command, threads and versions.
"""
import argparse, json, platform, sys, tempfile, time
from pathlib import Path

OUT = Path(__file__).resolve().parent/'results'/'maskgit_tiny_recipe.json'
RUNS = {'preset (lr 3e-3, no smoothing, EMA 0.99, cosine)': {},
        'lr 1e-3, smoothing 0.1, EMA 0.999 (the previous recipe)': dict(lr=1e-3, label_smoothing=0.1, ema_decay=0.999),
        'lr 1e-3 (else the preset)': dict(lr=1e-3),
        'label smoothing 0.1 (else the preset)': dict(label_smoothing=0.1)}

def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('tokens'); p.add_argument('--steps', type=int, default=300); p.add_argument('--eval-every', type=int, default=50)
    p.add_argument('--threads', type=int, default=1); p.add_argument('--runs', default=','.join(str(i) for i in range(len(RUNS))))
    a = p.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from coda_nb.training.maskgit import MaskGITTrainConfig, train_maskgit
    names = [list(RUNS)[int(i)] for i in a.runs.split(',')]
    res = {}
    for name in names:
        t = time.time()
        with tempfile.TemporaryDirectory() as d:
            cfg = MaskGITTrainConfig.from_preset('maskgit-tiny', tokens=a.tokens, out=d, steps=a.steps, eval_every=a.eval_every,
                                                 log_every=a.eval_every, ckpt_every=0, progress=False, **RUNS[name])
            r = train_maskgit(cfg)
        ev = [h for h in r['history'] if 'eval' in h]
        res[name] = dict(overrides=RUNS[name], wall_s=round(time.time() - t, 1),
                         heldout_acc=[(h['step'], round(h['eval']['heldout_acc'], 4)) for h in ev],
                         heldout_loss=[(h['step'], round(h['eval']['heldout_loss'], 4)) for h in ev])
        print(name, res[name]['heldout_acc'][-1], res[name]['heldout_loss'][-1], f"{res[name]['wall_s']} s", flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(dict(command=' '.join([Path(sys.argv[0]).name] + sys.argv[1:]).replace(a.tokens, 'TOKENS_DIR'),
                                   threads=a.threads, torch=torch.__version__, python=platform.python_version(),
                                   note='held-out masked-token accuracy and loss of the raw (not EMA) weights, on one fixed mask',
                                   steps=a.steps, runs=res), indent=1))

if __name__ == '__main__': main()
