"""A whole study through `twoworlds sweep` against the same trials in a hand-written PyTorch loop, side by side.

The framework side is the command a user types: `twoworlds sweep <study>` (a local Ray instance, Tune trials
two at a time, every bookkeeping output on: metrics.csv, checkpoints, TensorBoard events, weight movement,
distinct-id counting, the end-of-sweep summary). The plain side shares only twoworlds' sources and networks:
two worker processes (one torch thread each, like the sweep's trials), each running its half of the same trials
with a loop written the way a researcher would write it: index the n samples or generate fresh ones, forward,
backward, step, and at the same evaluation steps the test (and train) loss, error and soft error, one CSV row
per evaluation. Both sides run the same configs (from the study file), in the same order.

Per trial: the framework's time is Tune's `time_total_s` of the trial (its whole trainable: config, data, network,
training, evaluations, files); the plain time is the same span in the plain worker. A trial that is the first in
its process carries that process's one-time imports on both sides (torch there; torch, Lightning and twoworlds
here), marked `*`. The total is the wall time of each side, start-up included (Ray, the workers' imports).

    python benchmarks/study_overhead.py                    # quickstart, once each side
    python benchmarks/study_overhead.py --repeats 2        # alternating, best of 2 per side
    python benchmarks/study_overhead.py --study quickstart --smoke
Targets: the whole study <= 1.10x (1.15x at most), every trial <= 1.25x.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cli_args import arguments

REPO = Path(__file__).resolve().parent.parent


# --- the plain side: what a researcher writes by hand ------------------------------------------------------


def eval_points(steps: int, points: int, dense: int) -> list[int]:
    """The first `dense` steps, then log-spaced, the last step always (the study's evaluation steps)."""
    import numpy as np

    first = list(range(1, min(dense, points // 2) + 1))
    grid = np.round(np.geomspace(len(first) + 1, steps, points - len(first))).astype(int)
    return sorted(set(first) | {int(s) for s in grid} | {steps})


def plain_trial(t: dict, out: Path) -> float:
    """One trial by hand; returns its seconds."""
    import torch
    import torch.nn.functional as F
    from twoworlds.datamodules import build_source
    from twoworlds.datamodules.config import DataConfig
    from twoworlds.lightning_modules.networks import build_network

    start = time.perf_counter()
    source = build_source(t["source"], DataConfig(seed=t["data_seed"], test_size=t["test_size"]))
    torch.manual_seed(t["seed"])
    net = build_network(t["model"], source.input_shape, source.num_classes, t["width"], t["depth"])
    decay = [p for p in net.parameters() if p.ndim > 1]
    no_decay = [p for p in net.parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": t["weight_decay"]}, {"params": no_decay, "weight_decay": 0}],
                          lr=t["lr"], momentum=t["momentum"])
    steps, B = t["steps"], t["batch_size"]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    window = (t["seed"] % 256) << 32  # this seed's ids, as far from the other seeds' as in twoworlds
    test_x, test_y = source.get(source.test_ids())
    real = t["world"] == "real"
    if real:
        train_x, train_y = source.get(window + torch.arange(t["n"]))
    evals = set(eval_points(steps, t["eval_points"], t["eval_dense"]))
    rows = open(out / f"{t['name']}.csv", "w", newline="")
    writer = csv.writer(rows)
    order, pos = torch.randperm(t["n"]) if real else None, 0
    net.train()
    for step in range(1, steps + 1):
        if real:  # reshuffle every epoch; a batch may straddle two epochs, as in twoworlds
            idx = []
            while len(idx) < B:
                take = order[pos:pos + B - len(idx)]
                idx += take.tolist()
                pos += len(take)
                if pos == t["n"]:
                    order, pos = torch.randperm(t["n"]), 0
            idx = torch.tensor(idx)
            x, y = train_x.index_select(0, idx), train_y.index_select(0, idx)
        else:  # fresh samples, never seen before
            x, y = source.get(window + (step - 1) * B + torch.arange(B))
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step in evals:
            row = [step, opt.param_groups[0]["lr"], loss.item()]
            net.eval()
            with torch.no_grad():
                for ex, ey in [(test_x, test_y)] + ([(train_x, train_y)] if real else []):
                    logits = torch.cat([net(ex[i:i + 2048]) for i in range(0, len(ey), 2048)])
                    p_true = torch.softmax(logits, 1).gather(1, ey[:, None])[:, 0]
                    row += [float(F.cross_entropy(logits, ey)), float((logits.argmax(1) != ey).float().mean()),
                            float((1 - p_true).mean())]
            net.train()
            writer.writerow(row)
            rows.flush()
    rows.close()
    return time.perf_counter() - start


def plain_worker(trials: list[dict], out: str, queue) -> None:
    import torch

    torch.set_num_threads(1)
    for t in trials:
        queue.put((t["name"], plain_trial(t, Path(out))))


def plain_study(trials: list[dict], out: Path, workers: int = 2) -> tuple[float, dict[str, float]]:
    """Wall time of the plain side (its processes' start-up and imports included) and each trial's seconds."""
    ctx = multiprocessing.get_context("spawn")  # fresh processes, as two `python train.py` would be
    queue = ctx.Queue()
    start = time.perf_counter()
    procs = [ctx.Process(target=plain_worker, args=(trials[i::workers], str(out), queue)) for i in range(workers)]
    for p in procs:
        p.start()
    times = dict(queue.get() for _ in trials)
    for p in procs:
        p.join()
    return time.perf_counter() - start, times


# --- the framework side: the command a user types ----------------------------------------------------------


def framework_study(study: str, smoke: bool, out: Path) -> tuple[float, dict[str, float], str]:
    cmd = [sys.executable, "-m", "twoworlds.launch.cli", "sweep", study, f"out_dir={out}", *(["--smoke"] if smoke else [])]
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"`{' '.join(cmd)}` exited {done.returncode}; its output ends:\n{(done.stdout + done.stderr)[-4000:]}")
    tune_dir = next(out.glob("*/_tune"))
    times = {}
    for result in tune_dir.glob("*/result.json"):
        last = json.loads(result.read_text().strip().splitlines()[-1])
        times[result.parent.name] = float(last["time_total_s"])
    return wall, times, done.stdout


def plain_trials(study: str, smoke: bool) -> list[dict]:
    """The study's trials as plain dicts, in the sweep's order (the plain side knows nothing else of twoworlds)."""
    from twoworlds.launch.sweep_spec import load_sweep

    out = []
    for t in load_sweep(study, smoke=smoke).trials:
        c = t.cfg
        assert c.optim.name == "sgd" and c.optim.schedule == "cosine" and not c.optim.warmup_steps, "plain loop: SGD, cosine"
        out.append({"name": t.name, "source": c.source, "data_seed": c.data.seed, "test_size": c.data.test_size,
                    "model": c.model.name, "width": c.model.width, "depth": c.model.depth, "world": c.world, "n": c.n,
                    "seed": c.seed, "steps": c.steps, "batch_size": c.batch_size, "lr": c.optim.lr,
                    "momentum": c.optim.momentum, "weight_decay": c.optim.weight_decay,
                    "eval_points": c.eval.points, "eval_dense": c.eval.dense})
    return out


def main() -> None:
    args = arguments(__doc__, study=(str, "quickstart", "a shipped study's name or a sweep file"),
                     smoke=(int, 0, "1: its smoke variant"), repeats=(int, 1, "runs per side, alternating; best kept"))
    trials = plain_trials(args.study, bool(args.smoke))
    best_fw, best_plain = (math.inf, {}), (math.inf, {})
    for r in range(args.repeats):
        for side in ("plain", "framework") if r % 2 == 0 else ("framework", "plain"):
            out = Path(tempfile.mkdtemp(prefix=f"study_overhead_{side}_"))
            if side == "plain":
                wall, times = plain_study(trials, out)
                best_plain = min(best_plain, (wall, times), key=lambda b: b[0])
            else:
                wall, times, _ = framework_study(args.study, bool(args.smoke), out)
                best_fw = min(best_fw, (wall, times), key=lambda b: b[0])
            print(f"run {r + 1}/{args.repeats} {side:>9}: {wall:7.1f} s", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    (fw_wall, fw), (pl_wall, plain) = best_fw, best_plain
    first = {t["name"] for t in trials[:2]}  # each side's two processes start with these
    print(f"\nstudy {args.study}{' (smoke)' if args.smoke else ''}: {len(trials)} trials, 2 at a time, 1 torch thread "
          "each; best of " f"{args.repeats}")
    print(f"{'trial':<34} {'framework s':>11} {'plain s':>8} {'ratio':>6}")
    worst = 0.0
    for t in trials:
        ratio = fw[t["name"]] / plain[t["name"]]
        worst = max(worst, ratio)
        mark = "*" if t["name"] in first else " "
        print(f"{t['name'] + mark:<34} {fw[t['name']]:>11.1f} {plain[t['name']]:>8.1f} {ratio:>6.2f}")
    total = fw_wall / pl_wall
    print(f"{'whole study (wall, start-up included)':<34} {fw_wall:>11.1f} {pl_wall:>8.1f} {total:>6.2f}")
    print(f"* first trial of its process (one-time imports included)\n"
          f"whole study {total:.2f}x (target <= 1.10, at most 1.15): {'PASS' if total <= 1.10 else 'FAIL'}; "
          f"worst trial {worst:.2f}x (target <= 1.25): {'PASS' if worst <= 1.25 else 'FAIL'}")


if __name__ == "__main__":
    main()
