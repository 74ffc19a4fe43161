"""Framework time per training step vs a hand-written PyTorch loop (and the same loop through Lightning
Fabric), side by side in one process.

Same network (same seed, same initial weights), same MNIST-1D samples in the same order (the Real
World plan), same SGD + cosine schedule, same batch. The framework run goes through `run_trial`
(the training loop of launch/loop.py with all its bookkeeping: ids counted, divergence checks, the
row, metrics.csv, TensorBoard); its time is the last row's `wall_time`, the training loop from its
first step to the evaluation at its last. The plain and Fabric loops are timed over the same span,
with the same one evaluation at the last step, so the ratio is the per-step overhead of the
framework. Fabric is the alternative the loop was measured against: its module and optimizer
wrappers cost about a tenth of a millisecond per step. Runs alternate and the best of `--repeats` is
kept, so background noise hits all sides alike.

    python benchmarks/step_overhead.py            # MLP and CNN, 1,500 steps, batch 128
Target: framework / plain <= 1.10 on CPU.
"""

from __future__ import annotations

import tempfile
import time

import torch
import torch.nn.functional as F
from cli_args import arguments
from twoworlds.launch import config
from twoworlds.launch.run import build, run_trial

MODELS = {"mlp": ["model.name=mlp", "model.width=256", "model.depth=3"],
          "cnn": ["model.name=cnn", "model.width=32", "model.depth=3"]}


def framework_seconds(cfg) -> float:
    return run_trial(cfg)["rows"][-1]["wall_time"]


def plain_seconds(cfg, fabric: bool = False) -> float:
    """The loop a researcher would write by hand: index tensors, forward, backward, step (through Fabric's
    setup and backward when `fabric`)."""
    module, dm, plan = build(cfg)
    dm.setup("fit")
    net, (x, y, _) = module.net, dm.real
    opt_conf = module.configure_optimizers()  # the same SGD param groups and step schedule
    opt, sched = opt_conf["optimizer"], opt_conf["lr_scheduler"]["scheduler"]
    backward = lambda loss: loss.backward()  # noqa: E731
    if fabric:
        from lightning_fabric import Fabric

        f = Fabric(accelerator="cpu", devices=1, precision="32-true")
        net, opt = f.setup(net, opt)
        backward = f.backward
    net.train()
    t0 = time.perf_counter()
    for pos in plan.real_positions():
        loss = F.cross_entropy(net(x.index_select(0, pos)), y.index_select(0, pos))
        opt.zero_grad(set_to_none=True)
        backward(loss)
        opt.step()
        sched.step()
    with torch.no_grad():  # the framework evaluates once at the last step; so does this loop
        net.eval()
        tx, ty = dm.eval_sets["test"]
        F.cross_entropy(net(tx), ty).item()
        F.cross_entropy(net(x), y).item()
    return time.perf_counter() - t0


def main() -> None:
    args = arguments(__doc__, steps=(int, 1500, ""), batch_size=(int, 128, ""), repeats=(int, 3, ""),
                     threads=(int, 0, "torch threads (0: torch's default)"))
    if args.threads:
        torch.set_num_threads(args.threads)
    out = tempfile.mkdtemp(prefix="step_overhead_")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} steps, batch {args.batch_size}")
    print(f"{'model':<6} {'params':>9} {'plain ms/step':>14} {'framework ms/step':>18} {'ratio':>7} "
          f"{'fabric ms/step':>15} {'ratio':>7}  target framework <= 1.10")
    for name, knobs in MODELS.items():
        cfg = config.load(None, ["source=mnist1d", "world=real", "n=4000", f"steps={args.steps}",
                                 f"batch_size={args.batch_size}", "eval.points=1", "progress=false",
                                 "data.test_size=1000", f"out_dir={out}", "study=bench", *knobs])
        plain, frame, fab = [], [], []
        for _ in range(args.repeats):
            plain.append(plain_seconds(cfg))
            frame.append(framework_seconds(cfg))
            fab.append(plain_seconds(cfg, fabric=True))
        p, f, b = (min(t) / args.steps * 1e3 for t in (plain, frame, fab))
        params = build(cfg)[0].net.num_parameters
        verdict = "PASS" if f / p <= 1.10 else "FAIL"
        print(f"{name:<6} {params:>9,} {p:>14.3f} {f:>18.3f} {f / p:>7.3f} {b:>15.3f} {b / p:>7.3f}  {verdict}",
              flush=True)


if __name__ == "__main__":
    main()
