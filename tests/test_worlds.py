"""The world switch's invariants (docs/invariants.md, 2-5), proven on sample ids."""

from __future__ import annotations

import pytest
import torch
from twoworlds.datamodules import DataConfig, build_source
from twoworlds.datamodules.datamodule import WorldDataModule
from twoworlds.datamodules.worlds import PoolTooSmallError, WorldPlan, rank_slice


def plan_for(world, n=100, steps=60, batch_size=32, seed=0, pool_size=None, source="teacher"):
    src = build_source(source, DataConfig(pool_size=pool_size, test_size=64))
    return WorldPlan.for_source(src, world, n, steps, batch_size, seed), src


def all_ids(plan: WorldPlan) -> torch.Tensor:
    return torch.cat([ids for _, ids in plan.batches()])


@pytest.mark.parametrize("pool_size", [None, 5000])
def test_ideal_world_never_repeats_an_id(pool_size):
    plan, src = plan_for("ideal", steps=150, batch_size=32, pool_size=pool_size)
    ids = all_ids(plan)
    assert len(ids) == 150 * 32 == plan.samples_seen
    assert len(torch.unique(ids)) == len(ids), "an Ideal World id was drawn twice"
    assert int(ids.min()) >= 0 and int(ids.max()) < src.pool_limit


def test_ideal_world_ranks_split_each_batch_without_overlap():
    plan, _ = plan_for("ideal", steps=50, batch_size=32, pool_size=4000)
    seen = []
    for _, ids in plan.batches():
        shards = [rank_slice(ids, r, 4) for r in range(4)]
        assert torch.equal(torch.cat(shards), ids)  # the ranks together train on exactly the batch
        seen.extend(shards)
    everything = torch.cat(seen)
    assert len(torch.unique(everything)) == len(everything) == 50 * 32


@pytest.mark.parametrize("pool_size", [None, 5000])
@pytest.mark.parametrize("n,batch_size", [(100, 32), (96, 32), (50, 64)])
def test_real_world_visits_its_n_ids_once_per_epoch(pool_size, n, batch_size):
    plan, src = plan_for("real", n=n, steps=40, batch_size=batch_size, pool_size=pool_size)
    subset = plan.real_subset()
    assert len(torch.unique(subset)) == n
    stream = all_ids(plan)
    epochs = len(stream) // n
    assert epochs >= 3
    for e in range(epochs):
        epoch_ids = stream[e * n:(e + 1) * n]
        assert torch.equal(torch.sort(epoch_ids).values, torch.sort(subset).values), f"epoch {e}"
    # every batch is full, as in the Ideal World
    assert all(len(ids) == batch_size for _, ids in plan.batches())
    # consecutive epochs are reshuffled
    assert not torch.equal(stream[:n], stream[n:2 * n])


def test_real_subset_is_fixed_by_seed_and_n():
    a, _ = plan_for("real", n=300, pool_size=10_000, seed=1)
    b, _ = plan_for("real", n=300, pool_size=10_000, seed=1, steps=7, batch_size=8)
    c, _ = plan_for("real", n=300, pool_size=10_000, seed=2)
    assert torch.equal(a.real_subset(), b.real_subset())
    assert not torch.equal(a.real_subset(), c.real_subset())
    u1, _ = plan_for("real", n=300, seed=1)
    u2, _ = plan_for("real", n=300, seed=2)
    assert not set(u1.real_subset().tolist()) & set(u2.real_subset().tolist())


@pytest.mark.parametrize("pool_size", [None, 5000])
def test_test_ids_are_disjoint_from_the_training_pool(pool_size):
    real, src = plan_for("real", pool_size=pool_size)
    ideal, _ = plan_for("ideal", pool_size=pool_size)
    test = src.test_ids()
    assert int(test.min()) >= src.pool_limit  # a separate range, not just a disjoint sample
    trained = set(all_ids(real).tolist()) | set(all_ids(ideal).tolist())
    assert not trained & set(test.tolist())


@pytest.mark.parametrize("world", ["real", "ideal"])
def test_same_seed_same_order_other_seed_other_order(world):
    def order(seed):
        plan, _ = plan_for(world, pool_size=5000, seed=seed)
        return all_ids(plan)

    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))


@pytest.mark.parametrize("world", ["real", "ideal"])
def test_resuming_mid_run_continues_the_same_schedule(world):
    plan, _ = plan_for(world, n=70, steps=30, batch_size=16)
    full = [ids for _, ids in plan.batches()]
    resumed = [ids for _, ids in plan.batches(start_step=13)]
    assert all(torch.equal(a, b) for a, b in zip(full[13:], resumed, strict=True))


def test_a_finite_pool_smaller_than_steps_times_batch_is_refused_with_the_numbers():
    with pytest.raises(PoolTooSmallError) as err:
        plan_for("ideal", steps=100, batch_size=64, pool_size=5000)
    msg = str(err.value)
    for number in ("100", "64", "6,400", "5,000", "78"):
        assert number in msg, msg
    plan_for("ideal", steps=78, batch_size=64, pool_size=5000)  # 4,992 <= 5,000 is fine
    with pytest.raises(PoolTooSmallError, match="n = 6,000"):
        plan_for("real", n=6000, pool_size=5000)


@pytest.mark.parametrize("world", ["real", "ideal"])
def test_the_loader_serves_the_plans_ids_with_their_samples(world):
    plan, src = plan_for(world, n=50, steps=12, batch_size=16)
    dm = WorldDataModule(src, plan)
    dm.setup("fit")
    served = list(dm.train_dataloader())
    assert len(served) == 12
    for (x, y, ids), (_, planned) in zip(served, plan.batches(), strict=True):
        assert torch.equal(ids, planned)
        gx, gy = src.get(ids)
        assert torch.equal(x, gx) and torch.equal(y, gy)
    assert set(dm.eval_sets) == ({"test", "train"} if world == "real" else {"test"})
    if world == "real":  # train metrics are taken on exactly the n training samples
        tx, ty = dm.eval_sets["train"]
        gx, gy = src.get(plan.real_subset())
        assert torch.equal(tx, gx) and torch.equal(ty, gy)


def test_sources_are_pure_functions_of_seed_and_id():
    src = build_source("teacher", DataConfig(seed=5))
    ids = torch.tensor([3, 1 << 33, 7, 2049, 40])
    x, y = src.get(ids)
    x2, y2 = src.get(ids.flip(0))
    assert torch.equal(x, x2.flip(0)) and torch.equal(y, y2.flip(0))
    x3, _ = build_source("teacher", DataConfig(seed=6)).get(ids)
    assert not torch.equal(x, x3)
    assert len(torch.unique(src.get(torch.arange(4000))[1])) == src.num_classes


def test_unknown_source_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown source 'mnist2d'; known: .*mnist1d.*teacher.*Did you mean: mnist1d"):
        build_source("mnist2d", DataConfig())


def test_rng_streams_are_distinct_and_keep_their_values():
    """Every sample, order and initial weight depends on these numbers (datamodules/rng.py Stream)."""
    from twoworlds.datamodules.rng import Stream

    assert {s.name: int(s) for s in Stream} == {
        "INPUT": 1, "LABEL": 2, "TEACHER": 3, "CORRUPT_LABEL": 4, "CORRUPT_SHUFFLE": 5, "CORRUPT_PIXELS": 6,
        "CORRUPT_GAUSSIAN": 7, "CORRUPT_STATS": 8, "MNIST1D": 11, "SUBSET": 101, "EPOCH": 102, "IDEAL": 103,
        "AUGMENT": 104}
    assert len({int(s) for s in Stream}) == len(Stream.__members__)  # no alias: every name its own value
