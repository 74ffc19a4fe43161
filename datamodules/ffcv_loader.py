"""The `ffcv` loader backend: a finite training pool written once to a .beton, read by FFCV.

`write_pool_beton` writes the source's whole training pool (ids `0..pool_size-1`, so beton row i is
pool id i) with three fields: `x` (uint8 CHW for image sources, float32 otherwise), `y` and `id`
(the sample id itself, so what the loader returns can be checked against the world plan).

The cache is verified, never trusted blindly (the checks themselves live in `ffcv_cache.py`):
- The file is named by a hash of the source's name, its parameters, its pool size, a fingerprint of
  a few samples (catches a change of generator code) and, for sources read from files, the SHA-256
  of every file's whole content, so no changed row can reuse an old .beton.
- It is written under a temporary name, hashed, and moved into place with a sidecar checksum,
  checked before each use; a file that fails (overwritten pages, truncated, no sidecar) is rebuilt
  with one line saying so. Writing and checking hold a lock, so concurrent trials write a pool once.
- `FFCVBatches` compares the ids FFCV returns with the plan's ids for every batch before it is
  yielded; a mismatch is an error naming the file and the step, and the file is deleted.

`FFCVBatches` serves exactly the ids of the `tensor` backend (`TensorBatches`), step by step: it
lays this rank's share of every global batch of the `WorldPlan` end to end and hands that index
stream to one FFCV `Loader` in SEQUENTIAL order with `batch_size` = the per-rank batch and
`drop_last=False`, so batch k of the loader is exactly step `start_step + k`. FFCV's SEQUENTIAL
order returns the given `indices` as they are (no sorting, no deduplication), so the Real World's
repeated ids (each epoch revisits the same n) are served as planned.

Why not FFCV's `distributed=True`: it shards the index list the way `DistributedSampler` does
(strided, padded), which would change which samples form each global batch. The plan instead gives
each rank its own contiguous slice of every global batch (`worlds.rank_slice`), so the union over
ranks of a step's batch is the single-process batch, and the invariants hold as in the tensor
backend. Each rank therefore runs its own non-distributed Loader over its own index stream.

FFCV is optional: importing this module never imports it; using it without FFCV raises a ConfigError
that says how to install it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from twoworlds.datamodules.config import DataError
from twoworlds.datamodules.ffcv_cache import discard, file_digest, locked, problem, seal
from twoworlds.datamodules.worlds import rank_slice

from twoworlds.errors import ConfigError

if TYPE_CHECKING:
    from twoworlds.datamodules.datamodule import WorldDataModule
    from twoworlds.datamodules.sources import Source

log = logging.getLogger(__name__)
FFCV_MISSING = "loader=ffcv needs FFCV: pip install -e '.[ffcv]' (and apt libopencv-dev libturbojpeg0-dev)"
CHUNK = 4096  # pool ids read from the source at a time while writing
LARGE_POOL = 100_000  # print writing progress (every ~10%) for pools at least this large
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class CacheError(DataError):
    """The .beton served something other than the plan's samples."""


def ffcv_available() -> bool:
    try:
        import ffcv  # noqa: F401
        from ffcv.loader import Loader  # noqa: F401
    except Exception:  # ImportError, or a missing shared library (OSError)
        return False
    return True


def _require_ffcv() -> None:
    if not ffcv_available():
        raise ConfigError(FFCV_MISSING)


def _fingerprint(source: Source) -> str:
    """Hash of x and y of a few fixed pool ids (first, middle and last 8)."""
    n = source.pool_size
    mid = n // 2
    ids = sorted({i for i in [*range(8), *range(mid - 4, mid + 4), *range(n - 8, n)] if 0 <= i < n})
    x, y = source.get(torch.tensor(ids, dtype=torch.int64))
    h = hashlib.sha256()
    h.update(str((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()


def _source_files(source: Source) -> list[Path]:
    """The files a (possibly wrapped, e.g. corrupted) source reads its samples from; [] if generated."""
    while not hasattr(source, "files") and hasattr(source, "inner"):
        source = source.inner
    return list(getattr(source, "files", []))


def check_bounded(source: Source) -> None:
    if source.pool_size is None:
        raise ConfigError(
            f"loader=ffcv writes the whole training pool to a .beton, but the {source.name} pool is "
            f"unbounded; set data.pool_size=... to cap it (e.g. data.pool_size=1000000), or use loader=tensor")


def beton_path(source: Source, cache_dir: str | Path, params: dict | None = None) -> Path:
    """Where `write_pool_beton` puts (or finds) this source's pool: named by everything its content
    depends on. Generated sources are pure functions of their parameters; file sources add the
    digest of every file they read (hashed once per file version)."""
    check_bounded(source)
    desc = {"source": source.name, "params": params or {}, "pool_size": int(source.pool_size),
            "input_shape": list(source.input_shape), "image": bool(getattr(source, "is_image", False)),
            "fingerprint": _fingerprint(source),
            "files": [file_digest(p, cache_dir) for p in _source_files(source)]}
    key = hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{source.name}-{key}.beton"


class _PoolDataset:
    """Indexable view of the pool for FFCV's writer: row i = (x uint8/float32, y, id i).

    Reads the source CHUNK ids at a time (one cached chunk per writer process), so the pool is never
    materialized. A failure is recorded in `error_path` for the watchdog in `write_pool_beton`.
    """

    def __init__(self, source: Source, dtype: np.dtype, error_path: Path, chunk: int = CHUNK):
        self.source, self.dtype, self.error_path, self.chunk = source, dtype, error_path, chunk
        self.n = int(source.pool_size)
        self._start, self._x, self._y = -1, None, None
        self._pid = os.getpid()

    def __len__(self) -> int:
        return self.n

    def _load(self, start: int) -> None:
        if os.getpid() != self._pid:  # first read in a forked writer process
            # torch's OpenMP pool does not survive fork (a parallel op would hang), as in DataLoader workers
            torch.set_num_threads(1)
            self._pid = os.getpid()
        stop = min(start + self.chunk, self.n)
        x, y = self.source.get(torch.arange(start, stop, dtype=torch.int64))
        x = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.dtype != self.dtype or x.shape[1:] != tuple(self.source.input_shape):
            raise ValueError(f"{self.source.name}.get returned x {x.dtype} {x.shape[1:]}, expected "
                             f"{self.dtype} {tuple(self.source.input_shape)}")
        self._x = np.ascontiguousarray(x)
        self._y = np.asarray(y, dtype=np.int64).reshape(-1)
        self._start = start
        chunks = -(-self.n // self.chunk)
        every = max(1, chunks // 10)
        if self.n >= LARGE_POOL and (start // self.chunk) % every == 0:
            log.info(f"ffcv: writing {self.source.name} pool {start:,}/{self.n:,} ({100 * start // self.n}%)")

    def __getitem__(self, i: int):
        i = int(i)
        try:
            start = i - i % self.chunk
            if start != self._start:
                self._load(start)
            j = i - start
            return self._x[j], int(self._y[j]), i
        except BaseException as e:
            self.error_path.write_text(f"{type(e).__name__}: {e}")
            raise


def write_pool_beton(source: Source, cache_dir: str | Path, params: dict | None = None,
                     num_workers: int = 2, chunk: int = CHUNK) -> Path:
    """Writes (or reuses, once verified) the .beton of the source's whole training pool; returns its path.

    `params`: the source's DataConfig-derived parameters (anything that changes its content), part
    of the file's cache key together with the name, pool size and the content digests.
    """
    _require_ffcv()
    final = beton_path(source, cache_dir, params)  # raises for unbounded pools
    with locked(final):
        if final.is_file():
            why = problem(final)
            if why is None:
                log.info(f"ffcv: reusing {final}")
                return final
            log.warning(f"ffcv: {final} {why}; rebuilding")
            discard(final)
        _write(source, final, num_workers, chunk)
    return final


def _write(source: Source, final: Path, num_workers: int, chunk: int) -> None:
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    error_path = final.with_name(f"{final.name}.error-{os.getpid()}")
    error_path.unlink(missing_ok=True)
    dtype = np.dtype("uint8") if getattr(source, "is_image", False) else np.dtype("float32")
    n = int(source.pool_size)
    log.info(f"ffcv: writing {n:,} samples of {source.name} to {final}")
    dataset = _PoolDataset(source, dtype, error_path, chunk)
    dataset._load(0)  # fail here, in this process, on a malformed source
    fields = {"x": NDArrayField(dtype=dtype, shape=tuple(int(d) for d in source.input_shape)),
              "y": IntField(), "id": IntField()}

    # FFCV's writer waits forever for its worker processes if one fails: watch for their error file.
    done = threading.Event()

    def watchdog():
        while not done.wait(0.2):
            if error_path.exists():  # a KeyboardInterrupt in the main thread, where FFCV's writer waits
                signal.raise_signal(signal.SIGINT)
                return

    t0 = time.perf_counter()
    before = set(multiprocessing.active_children())
    watcher = threading.Thread(target=watchdog, daemon=True)
    watcher.start()
    try:
        writer = DatasetWriter(str(tmp), fields, num_workers=max(1, min(num_workers, 2)))
        writer.from_indexed_dataset(dataset, chunksize=chunk)
        done.set()
        seal(tmp, final)
    except KeyboardInterrupt:
        for child in set(multiprocessing.active_children()) - before:  # the writer's other workers
            child.terminate()
        if error_path.exists():
            raise RuntimeError(f"ffcv: writing {source.name} failed: {error_path.read_text()}") from None
        raise
    finally:
        done.set()
        tmp.unlink(missing_ok=True)
        error_path.unlink(missing_ok=True)
    secs = time.perf_counter() - t0
    size = final.stat().st_size
    log.info(f"ffcv: wrote {final.name}: {n:,} samples, {size / 2**20:.1f} MiB in {secs:.1f} s")


class FFCVBatches:
    """An iterable of this rank's (x, y, ids) batches for steps `start_step`..`steps - 1`, read by FFCV.

    Same interface and same ids per step as `TensorBatches`.
    """

    def __init__(self, dm: WorldDataModule, beton_path: str | Path, start_step: int = 0, num_workers: int = 2):
        _require_ffcv()
        self.dm, self.path, self.start_step, self.num_workers = dm, Path(beton_path), start_step, num_workers

    def __len__(self) -> int:
        return self.dm.plan.steps - self.start_step

    def indices(self) -> tuple[np.ndarray, int]:
        """This rank's ids for steps start_step.. laid end to end, and the per-rank batch size."""
        dm = self.dm
        parts = [rank_slice(ids, dm.rank, dm.world_size) for _, ids in dm.plan.batches(self.start_step)]
        if not parts:
            return np.zeros(0, dtype=np.int64), 0
        return torch.cat(parts).numpy().astype(np.int64), len(parts[0])

    def loader(self, indices: np.ndarray, batch_size: int):
        from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.transforms import Squeeze, ToTensor

        loader = Loader(str(self.path), batch_size=batch_size, num_workers=self.num_workers,
                        order=OrderOption.SEQUENTIAL, indices=indices, drop_last=False, distributed=False,
                        pipelines={"x": [NDArrayDecoder(), ToTensor()],
                                   "y": [IntDecoder(), ToTensor(), Squeeze()],
                                   "id": [IntDecoder(), ToTensor(), Squeeze()]})
        rows = loader.reader.num_samples
        if self.dm.plan.pool_limit != rows:
            raise CacheError(f"{self.path} holds {rows:,} samples but the {self.dm.source.name} pool has "
                             f"{self.dm.plan.pool_limit:,}; delete it to rewrite it")
        return loader

    def _check_ids(self, ids: torch.Tensor, want: torch.Tensor, step: int, inode: int) -> None:
        """The ids FFCV returned are the plan's for this step, or the file is deleted and the run stops
        (the batch never reaches the training step). Costs one comparison of B ints on the host."""
        got = ids.reshape(-1)
        if len(got) == len(want) and torch.equal(got.to(torch.int64), want):
            return
        at = int((got[:len(want)].to(torch.int64) != want[:len(got)]).nonzero()[0, 0]) if len(got) and len(want) else 0
        with locked(self.path):
            discard(self.path, inode)
        raise CacheError(
            f"ffcv: {self.path} served sample id {got[at].item() if at < len(got) else 'none'} where the plan "
            f"has {want[at].item() if at < len(want) else 'none'} (step {step}, rank {self.dm.rank}, position {at}); "
            f"the file is corrupt and was deleted: run again to rebuild it")

    def __iter__(self) -> Iterator[Batch]:
        dm = self.dm
        indices, local = self.indices()
        if not len(indices):
            return
        on_cpu = dm.device.type == "cpu"
        step = self.start_step
        inode = self.path.stat().st_ino
        plan_ids = torch.from_numpy(indices)
        for x, y, ids in self.loader(indices, local):
            k = step - self.start_step
            self._check_ids(ids, plan_ids[k * local:(k + 1) * local], step, inode)
            # FFCV reuses its output buffers a few batches later: copy (clone on the CPU).
            if on_cpu:
                x, y, ids = x.clone(), y.to(torch.int64, copy=True), ids.to(torch.int64, copy=True)
            else:
                x = x.to(dm.device, non_blocking=True)
                y = y.to(dm.device, torch.int64, non_blocking=True)
                ids = ids.to(dm.device, torch.int64, non_blocking=True)
            yield dm.train_transform(x, step), y.reshape(-1), ids.reshape(-1)
            step += 1
