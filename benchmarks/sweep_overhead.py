"""Per-trial overhead of `twoworlds sweep` against the same trials back to back in one process.

Tiny trials (teacher source, a few steps) run (1) through `twoworlds sweep` on a local Ray
instance, as a user runs them, and (2) one after the other through `run_trial` in this process.
Each side runs K and 2K trials, so the fixed start-up (Ray, imports) cancels:
marginal overhead per trial = ((sweep(2K) - sweep(K)) - (plain(2K) - plain(K))) / K.
The total overhead per trial, (sweep(K) - plain(K)) / K, start-up included, is printed beside it.
Done for workers = 1 (Tune function trials, reused actors) and workers = 2 (Lightning DDP in a
Ray Train TorchTrainer per trial).

    python benchmarks/sweep_overhead.py [--trials 8] [--ddp-trials 2] [--repeats 2]

Figures, dates and machines: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP = """name: overhead{workers}
base: {{source: teacher, world: ideal, steps: 20, batch_size: 32, eval.points: 3, data.test_size: 256,
        model.width: 16, model.depth: 2}}
seeds: {k}
resources: {{cpu: 1, workers: {workers}}}
"""


def sweep_seconds(path: Path, out: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "twoworlds.launch.cli", "sweep", str(path), f"out_dir={out}"],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:  # the sweep's own output says why, not a bare CalledProcessError
        sys.exit(f"`twoworlds sweep {path}` exited {done.returncode}; its output ends:\n"
                 f"{(done.stdout + done.stderr)[-4000:]}")
    return time.perf_counter() - start


def plain_seconds(path: Path, out: Path) -> float:
    from twoworlds.launch.run import run_trial
    from twoworlds.launch.sweep_spec import load_sweep
    trials = load_sweep(path, [f"out_dir={out}", "progress=false"]).trials
    start = time.perf_counter()
    for t in trials:
        run_trial(t.cfg)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="K for workers = 1 (0: skip)")
    parser.add_argument("--ddp-trials", type=int, default=2, help="K for workers = 2 (0: skip)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each sweep; the fastest counts")
    args = parser.parse_args()
    import torch
    torch.set_num_threads(1)  # as in a 1-CPU trial
    tmp = Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    print(f"{'workers':>7} {'K':>3} {'sweep K/2K s':>14} {'plain K/2K s':>14} {'marginal s/trial':>17} "
          f"{'total s/trial':>14}")
    for workers, k in ((1, args.trials), (2, args.ddp_trials)):
        if k == 0:  # --trials 0 or --ddp-trials 0 skips that half
            continue
        times = {k: [], 2 * k: []}
        for rep in range(args.repeats):  # K and 2K alternate; the best of each is kept (noise only adds time)
            for kk in (k, 2 * k):
                path = tmp / f"overhead{workers}-{kk}.yaml"
                path.write_text(SWEEP.format(workers=workers, k=kk))
                times[kk].append((sweep_seconds(path, tmp / f"sweep{kk}-{rep}"),
                                  plain_seconds(path, tmp / f"plain{kk}-{rep}")))
        (s1, p1), (s2, p2) = ((min(a for a, _ in times[kk]), min(b for _, b in times[kk])) for kk in (k, 2 * k))
        marginal = ((s2 - s1) - (p2 - p1)) / k
        print(f"{workers:>7} {k:>3} {s1:>6.1f}/{s2:<7.1f} {p1:>6.1f}/{p2:<7.1f} {marginal:>17.2f} "
              f"{(s1 - p1) / k:>14.2f}", flush=True)
    print(f"sweep: wall time of `twoworlds sweep` (Ray start-up included); plain: run_trial back to back; "
          f"best of {args.repeats}")


if __name__ == "__main__":
    main()
