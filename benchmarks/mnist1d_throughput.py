"""Throughput of the vectorized MNIST-1D source against the reference package's make_dataset.

    python benchmarks/mnist1d_throughput.py [--samples 1048576] [--batch 65536] [--threads 2]

Times `MNIST1DSource.get` on consecutive id batches (how the Ideal World draws from an unbounded
pool) and `mnist1d.data.make_dataset` on a few thousand samples, and prints both rates, their
ratio, and PASS/FAIL against the target rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from twoworlds.datamodules.mnist1d import MNIST1DSource
from twoworlds.datamodules.sources import DataConfig

TARGET = 200_000  # samples/s on 2 CPU cores


def ours_rate(samples: int, batch: int) -> float:
    """samples/s of `get` over ceil(samples / batch) consecutive batches, after one warm-up batch."""
    source = MNIST1DSource(DataConfig(seed=0))
    source.get(torch.arange(batch))  # warm-up: allocator, thread pool
    batches = max(1, -(-samples // batch))
    start = time.perf_counter()
    for b in range(batches):
        source.get(torch.arange((b + 1) * batch, (b + 2) * batch))
    return batches * batch / (time.perf_counter() - start)


def reference_rate(samples: int) -> float:
    """samples/s of the package's make_dataset (default args, `samples` samples)."""
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    args.num_samples = samples
    state = np.random.get_state()  # make_dataset reseeds the global NumPy RNG
    start = time.perf_counter()
    mnist1d.data.make_dataset(args)
    elapsed = time.perf_counter() - start
    np.random.set_state(state)
    return samples / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=16 * 65_536, help="samples for our generator")
    parser.add_argument("--batch", type=int, default=65_536, help="ids per get() call")
    parser.add_argument("--reference-samples", type=int, default=3_000, help="samples for make_dataset")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    ours = ours_rate(args.samples, args.batch)
    ref = reference_rate(args.reference_samples)
    print(f"{'generator':<34}{'samples/s':>14}")
    print(f"{'twoworlds MNIST1DSource.get':<34}{ours:>14,.0f}")
    print(f"{'mnist1d make_dataset (reference)':<34}{ref:>14,.0f}")
    print(f"{'speed-up':<34}{ours / ref:>13,.0f}x")
    verdict = "PASS" if ours >= TARGET else "FAIL"
    print(f"{verdict}: {ours:,.0f} samples/s vs target {TARGET:,} on {args.threads} threads")


if __name__ == "__main__":
    main()
