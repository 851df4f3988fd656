"""The ImageNet-scale benchmark: the start-up index, the token store's memory, tokenizing throughput and the quantizer's
thread matrix, measured on synthetic data of this machine's size and extrapolated to ImageNet with stated formulas.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scale.py [--quick] [--parts index,tokens,threads]
    .venv/bin/python benchmarks/bench_scale.py --collect     # gather the parts' last full runs (their own JSON files)

Each part is its own script beside this one, runnable alone, with a `run(quick=False) -> dict`:
  * `scale_index.py`   the verified image index: first index at 1 and 2 ranks, a restart on an unchanged folder of
                       >= 100 k files, re-verification of changed files, and tar-shard reading;
  * `scale_tokens.py`  the memory-mapped token store: RSS against dataset size (680 index tokens; 1,024 x 32 bits),
                       and `coda tokenize` throughput and peak RSS per process at 1 and 2 processes;
  * `scale_threads.py` the tiled quantizer's training step and `encode_indices` against the materialising path at
                       1 and 2 threads, idle and beside a busy process.
The parts' results, the command, the versions and the load average go to benchmarks/results/scale.json. On a
shared machine the load average is part of every number: compare numbers only between runs with similar load.
"""
import argparse, importlib.util, json, os, platform, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE/'results'/'scale.json'
PARTS = dict(index='scale_index', tokens='scale_tokens', threads='scale_threads')

def _part(name):
    spec = importlib.util.spec_from_file_location(name, HERE/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--quick', action='store_true', help='small sizes: checks the script, not the numbers')
    p.add_argument('--parts', default=','.join(PARTS), help='comma-separated: ' + ', '.join(PARTS))
    p.add_argument('--collect', action='store_true', help="run nothing: gather each part's last full run from its own "
                   'results file (results/scale_<part>.json, which keeps that run\'s command and load)')
    p.add_argument('--out', default=str(OUT))
    a = p.parse_args(argv)
    import torch
    want = [s.strip() for s in a.parts.split(',') if s.strip()]
    if bad := [s for s in want if s not in PARTS]: p.error(f'unknown part(s) {bad}; known: {list(PARTS)}')
    out = Path(a.out)
    res = json.loads(out.read_text()) if out.is_file() else {}      # parts not re-run keep their last results
    res |= dict(command='python benchmarks/bench_scale.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
                torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                cpus=os.cpu_count(), omp_num_threads=os.environ.get('OMP_NUM_THREADS'), quick=a.quick)
    res.setdefault('parts', {})
    for name in want:
        if a.collect:
            f = HERE/'results'/f'{PARTS[name]}.json'
            if not f.is_file(): p.error(f'{f.name}: not there; run benchmarks/{PARTS[name]}.py first')
            res['parts'][name] = json.loads(f.read_text()) | dict(collected_from=f'benchmarks/results/{f.name}')
            continue
        t0, load0 = time.time(), os.getloadavg()
        print(f'== {name} ({PARTS[name]}.py)', flush=True)
        r = _part(PARTS[name]).run(quick=a.quick)
        res['parts'][name] = dict(r, seconds=round(time.time() - t0, 1), loadavg_before=load0, loadavg_after=os.getloadavg(),
                                  finished=time.strftime('%Y-%m-%d %H:%M:%S'))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix('.json.tmp'); tmp.write_text(json.dumps(res, indent=1, default=str) + '\n'); tmp.replace(out)
    if a.collect:
        tmp = out.with_suffix('.json.tmp'); tmp.write_text(json.dumps(res, indent=1, default=str) + '\n'); tmp.replace(out)
    print(f'wrote {out}')

if __name__ == '__main__': main()
