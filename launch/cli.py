"""`twoworlds` command line.

    twoworlds run [FILE.yaml] [key=value ...]   one run; world=both runs the Real/Ideal pair
    twoworlds demo [key=value ...]              the quick-start pair on MNIST-1D (what `make demo` runs)
    twoworlds keys                              every config key with its default
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from launch.config import ConfigError

# The quick-start pair: a small CNN on MNIST-1D, n = 500 reused vs fresh samples; under a minute on 2 cores.
DEMO = ["study=demo", "source=mnist1d", "model.name=cnn", "model.width=32", "model.depth=3",
        "n=500", "steps=2000", "batch_size=64", "optim.lr=0.05", "world=both"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="twoworlds", description="Deep Bootstrap scaling studies: Real vs Ideal World.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="train one run (world=real|ideal) or the pair (world=both)")
    p_run.add_argument("args", nargs="*", help="an optional YAML file, then key=value overrides")
    p_demo = sub.add_parser("demo", help="the quick-start Real/Ideal pair on MNIST-1D")
    p_demo.add_argument("args", nargs="*", help="key=value overrides")
    sub.add_parser("keys", help="list every config key with its default")
    ns = parser.parse_args(argv)
    try:
        if ns.command == "keys":
            return _keys()
        if ns.command == "demo":
            return _run(None, DEMO + ns.args)
        path, overrides = _split_args(ns.args)
        return _run(path, overrides)
    except KeyboardInterrupt:
        print("\ninterrupted: rows logged so far are kept in metrics.csv", file=sys.stderr)
        return 130
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _split_args(args: list[str]) -> tuple[str | None, list[str]]:
    if args and "=" not in args[0]:
        return args[0], args[1:]
    return None, args


def _keys() -> int:
    from omegaconf import OmegaConf

    from launch.config import all_keys, schema
    cfg = schema()
    for key in all_keys(cfg):
        value = OmegaConf.select(cfg, key)
        if not OmegaConf.is_dict(value):
            print(f"{key} = {value}")
    return 0


def _run(path: str | None, overrides: list[str]) -> int:
    from launch import config
    cfg = config.load(path, overrides)  # validate before the slow imports
    from launch.run import comparison_table, run_pair, run_trial
    if cfg.world == "both":
        real, ideal = run_pair(cfg)
        print()
        print(comparison_table(real, ideal))
        print(f"\noutputs: {Path(cfg.out_dir) / cfg.study}/  (tensorboard --logdir {Path(cfg.out_dir) / cfg.study})")
        return 0
    summary = run_trial(cfg)
    summary.pop("rows", None)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
