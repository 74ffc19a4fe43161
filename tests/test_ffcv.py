"""The `ffcv` loader backend serves exactly the world plan's ids, so the invariants hold as with `tensor`.

Checked from what the FFCV loader returns (the beton stores each sample's id): per step the ids are
the plan's (single process and under 2-process gloo DDP), x/y are the source's samples, resume
continues the plan, and the .beton cache is keyed and written atomically.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

pytest.importorskip("ffcv", reason="FFCV is not installed (pip install -e '.[ffcv]'); loader=ffcv is untested")

from conftest import free_port  # noqa: E402
from image_fixtures import write_tiny_cifar5m  # noqa: E402
from twoworlds.datamodules.datamodule import WorldDataModule  # noqa: E402
from twoworlds.datamodules.ffcv_loader import FFCVBatches, beton_path, ffcv_available, write_pool_beton  # noqa: E402
from twoworlds.datamodules.sources import DataConfig, build_source  # noqa: E402
from twoworlds.datamodules.worlds import WorldPlan  # noqa: E402

TEACHER = DataConfig(pool_size=3000, test_size=64)
# (n, steps, batch_size) per source: the Ideal World uses steps x B distinct ids of the pool
SIZES = {"teacher": (96, 40, 32), "cifar5m": (64, 12, 32)}


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """{name: (source, beton path)} for a float source and an image source, written once."""
    root = tmp_path_factory.mktemp("ffcv")
    write_tiny_cifar5m(root / "c5m", per_part=100)
    sources = {"teacher": build_source("teacher", TEACHER),
               "cifar5m": build_source("cifar5m", DataConfig(data_dir=str(root / "c5m"), test_size=64))}
    return {name: (src, write_pool_beton(src, root / "cache", {"name": name})) for name, src in sources.items()}


def _dm(source, world: str, seed: int = 3) -> WorldDataModule:
    n, steps, batch_size = SIZES[source.name]
    plan = WorldPlan.for_source(source, world, n=n, steps=steps, batch_size=batch_size, seed=seed)
    dm = WorldDataModule(source, plan)
    dm.setup("fit")
    return dm


def test_available():
    assert ffcv_available()


@pytest.mark.parametrize("name", ["teacher", "cifar5m"])
@pytest.mark.parametrize("world", ["ideal", "real"])
def test_batches_are_the_plans(pools, name, world):
    source, path = pools[name]
    dm = _dm(source, world)
    plan = dm.plan
    batches = FFCVBatches(dm, path, num_workers=1)
    assert len(batches) == plan.steps
    got = list(batches)
    expected = list(plan.batches())
    assert len(got) == len(expected) == plan.steps
    for (x, y, ids), (step, want) in zip(got, expected, strict=True):
        assert ids.dtype == y.dtype == torch.int64
        assert torch.equal(ids, want), f"step {step}"
        sx, sy = source.get(want)
        assert torch.equal(y, sy)
        assert x.dtype == (torch.float32 if source.is_image else sx.dtype)
        assert torch.equal(x, dm.train_transform(sx, step))
    stream = torch.cat([ids for _, _, ids in got])
    assert not set(stream.tolist()) & set(source.test_ids().tolist())  # invariant 4
    if world == "ideal":  # invariant 2: T*B distinct ids
        assert len(set(stream.tolist())) == len(stream) == plan.samples_seen
    else:  # invariant 3: every epoch visits each of the n once
        subset = sorted(plan.real_subset().tolist())
        full = len(stream) // plan.n
        assert full >= 2
        for e in range(full):
            assert sorted(stream[e * plan.n:(e + 1) * plan.n].tolist()) == subset
        assert set(stream[full * plan.n:].tolist()) <= set(subset)


@pytest.mark.parametrize("world", ["ideal", "real"])
def test_resume(pools, world):
    source, path = pools["teacher"]
    dm = _dm(source, world)
    k = 17
    got = [ids for _, _, ids in FFCVBatches(dm, path, start_step=k, num_workers=1)]
    expected = [ids for _, ids in dm.plan.batches(k)]
    assert len(got) == dm.plan.steps - k
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert list(FFCVBatches(dm, path, start_step=dm.plan.steps)) == []


def test_cache(tmp_path, pools):
    source = pools["teacher"][0]
    cache = tmp_path / "cache"
    final = beton_path(source, cache, {"seed": 0})
    cache.mkdir()
    foreign = final.with_name(f"{final.name}.tmp-1")  # another process's leftover
    foreign.write_bytes(b"not a beton")
    own = final.with_name(f"{final.name}.tmp-{os.getpid()}")  # a stale one of this pid is overwritten
    own.write_bytes(b"stale")
    first = write_pool_beton(source, cache, {"seed": 0})
    assert first == final and first.is_file() and not own.exists()
    assert foreign.read_bytes() == b"not a beton"
    mtime = first.stat().st_mtime_ns
    time.sleep(0.01)
    assert write_pool_beton(source, cache, {"seed": 0}) == first
    assert first.stat().st_mtime_ns == mtime
    other = write_pool_beton(source, cache, {"seed": 1})
    assert other != first and other.is_file()
    # the written file is a valid beton of the whole pool
    dm = _dm(source, "ideal")
    ids = torch.cat([i for _, _, i in FFCVBatches(dm, first, num_workers=1)])
    assert torch.equal(ids, torch.cat([i for _, i in dm.plan.batches()]))


def test_unbounded_source_is_refused(tmp_path):
    source = build_source("teacher", DataConfig(test_size=64))
    with pytest.raises(ValueError, match=r"data\.pool_size"):
        write_pool_beton(source, tmp_path)


# --- DDP: 2 real gloo processes ---------------------------------------------------------------


def _ddp_rank(rank: int, world_size: int, port: int, path: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        source = build_source("teacher", TEACHER)
        result = {}
        for world in ("ideal", "real"):
            dm = _dm(source, world)
            dm.rank, dm.world_size = rank, world_size
            mine = [ids.tolist() for _, _, ids in FFCVBatches(dm, path, num_workers=1)]
            gathered = [None] * world_size
            dist.all_gather_object(gathered, mine)
            result[world] = gathered
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes: about 16 s
def test_ddp_two_gloo_ranks(tmp_path, pools):
    source, path = pools["teacher"]
    out = tmp_path / "ddp.json"
    ctx = torch.multiprocessing.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_ddp_rank, args=(r, 2, port, str(path), str(out))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    result = json.loads(out.read_text())
    for world, (r0, r1) in result.items():
        plan = _dm(source, world).plan
        expected = [ids.tolist() for _, ids in plan.batches()]
        assert len(r0) == len(r1) == plan.steps
        for step, (a, b, want) in enumerate(zip(r0, r1, expected, strict=True)):
            assert len(a) == len(b) == plan.batch_size // 2
            assert not set(a) & set(b), f"{world} step {step}: ranks overlap"
            assert a + b == want  # contiguous halves: the union is the single-process batch
        if world == "ideal":
            every = [i for a, b in zip(r0, r1, strict=True) for i in a + b]
            assert len(set(every)) == len(every) == plan.samples_seen


class _FailsInAWriter:
    """A real source whose reads fail in FFCV's writer processes only (as a bug in a source's `get` that shows in
    a forked process would): FFCV's writer waits forever for a worker that died."""

    def __init__(self, source):
        self.inner, self.pid = source, os.getpid()
        self.name, self.pool_size, self.input_shape = "failing", source.pool_size, source.input_shape

    def get(self, ids):
        if os.getpid() != self.pid:
            raise ValueError(f"a bug reading ids from {int(ids.min())}")
        return self.inner.get(ids)


def test_a_writer_process_that_fails_stops_the_write_with_its_error(tmp_path):
    """The watchdog turns a writer process's error into an error in the caller, names it, and leaves no file."""
    source = _FailsInAWriter(build_source("teacher", TEACHER))
    with pytest.raises(RuntimeError, match=r"ffcv: writing failing failed: ValueError: a bug reading ids from"):
        write_pool_beton(source, tmp_path, chunk=500)
    left = sorted(p.name.split(".beton")[1] for p in tmp_path.glob("*.beton*"))
    assert left == [".lock"], f"only the lock file may be left (no .beton, temporary or error file): {left}"
