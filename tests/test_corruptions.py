"""Zhang et al. corruptions: exact rates, the right splits, and a pure function of (data seed, id)
(invariant 7 of docs/invariants.md), checked on sample ids through the sources, both worlds and both loaders."""

from __future__ import annotations

import pytest
import torch
from image_fixtures import write_tiny_cifar5m, write_tiny_cifar10
from twoworlds.datamodules.corruptions import CorruptConfig, CorruptedSource
from twoworlds.datamodules.sources import DataConfig, Source, build_source
from twoworlds.launch import config
from twoworlds.launch.config import ConfigError
from twoworlds.launch.run import build, run_trial

K = 5
N = 100_000
TEACHER = DataConfig(teacher_classes=K, test_size=20_000)
KINDS = {"noise": CorruptConfig(label_noise=0.3), "random_labels": CorruptConfig(random_labels=True),
         "shuffled": CorruptConfig(pixels="shuffled"), "random": CorruptConfig(pixels="random"),
         "gaussian": CorruptConfig(pixels="gaussian", label_noise=0.2)}


@pytest.fixture(scope="module")
def teacher():
    return build_source("teacher", TEACHER)


@pytest.fixture(scope="module")
def clean(teacher):
    """(x, y) of pool ids 0..N-1 and of the test range."""
    return teacher.get(torch.arange(N)), teacher.get(teacher.test_ids())


def within(count: int, total: int, p: float, sigmas: float = 5) -> bool:
    """count/total is p up to `sigmas` binomial standard deviations (deterministic given the seed)."""
    return abs(count - total * p) <= sigmas * (total * p * (1 - p)) ** 0.5


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_label_noise_changes_exactly_p_of_the_labels_to_a_uniform_other_class(teacher, clean, p):
    (_, y0), _ = clean
    x, y = CorruptedSource(teacher, CorruptConfig(label_noise=p), 0).get(torch.arange(N))
    assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < K
    changed = y != y0
    assert within(int(changed.sum()), N, p)  # the rate of *changed* labels is p, not p (K-1)/K
    shift = (y - y0)[changed] % K  # 1..K-1: which other class
    counts = torch.bincount(shift, minlength=K)
    assert counts[0] == 0 and all(within(int(c), len(shift), 1 / (K - 1)) for c in counts[1:])
    assert torch.equal(x, clean[0][0])  # labels only


def test_random_labels_are_uniform_and_agree_with_the_clean_ones_by_chance(teacher, clean):
    (_, y0), _ = clean
    _, y = CorruptedSource(teacher, CorruptConfig(random_labels=True), 0).get(torch.arange(N))
    assert y.dtype == torch.int64
    assert all(within(int(c), N, 1 / K) for c in torch.bincount(y, minlength=K))
    assert within(int((y == y0).sum()), N, 1 / K)


@pytest.mark.parametrize("kind", ["noise", "random_labels"])
def test_label_corruptions_touch_test_labels_only_with_corrupt_test(teacher, clean, kind):
    _, (_, ty0) = clean
    cfg = KINDS[kind]
    _, ty = CorruptedSource(teacher, cfg, 0).get(teacher.test_ids())
    assert torch.equal(ty, ty0)
    cfg = CorruptConfig(label_noise=cfg.label_noise, random_labels=cfg.random_labels, test=True)
    _, ty = CorruptedSource(teacher, cfg, 0).get(teacher.test_ids())
    rate = 0.3 if kind == "noise" else 1 - 1 / K
    assert within(int((ty != ty0).sum()), len(ty), rate)


# --- inputs -----------------------------------------------------------------------------------


def _source_positions(xc: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """For each sample, where each corrupted position came from (continuous values: no ties)."""
    a, b = xc.reshape(len(xc), -1), x0.reshape(len(x0), -1)
    match = a[:, :, None] == b[:, None, :]
    assert bool((match.sum(2) == 1).all()), "each corrupted value must come from exactly one position"
    return match.int().argmax(2)


@pytest.mark.parametrize("split", ["pool", "test"])
def test_shuffled_pixels_are_one_permutation_for_every_sample_of_every_split(teacher, split):
    src = CorruptedSource(teacher, CorruptConfig(pixels="shuffled"), 0)
    ids = torch.arange(500) if split == "pool" else teacher.test_ids()[:500]
    (xc, yc), (x0, y0) = src.get(ids), teacher.get(ids)
    perms = _source_positions(xc, x0)
    assert torch.equal(yc, y0)
    assert (perms == perms[0]).all() and not torch.equal(perms[0], torch.arange(perms.shape[1]))
    pool_perm = _source_positions(*[s.get(torch.arange(3))[0] for s in (src, teacher)])[0]
    assert torch.equal(perms[0], pool_perm)  # the same permutation in the pool and the test range


@pytest.mark.parametrize("split", ["pool", "test"])
def test_random_pixels_are_a_different_permutation_per_sample(teacher, split):
    src = CorruptedSource(teacher, CorruptConfig(pixels="random"), 0)
    ids = torch.arange(500) if split == "pool" else teacher.test_ids()[:500]
    xc, x0 = src.get(ids)[0], teacher.get(ids)[0]
    assert torch.equal(xc.flatten(1).sort(1).values, x0.flatten(1).sort(1).values)  # a permutation
    perms = _source_positions(xc, x0)
    assert len({tuple(p.tolist()) for p in perms}) == len(ids)


def test_gaussian_inputs_match_the_data_mean_and_std(teacher, clean):
    src = build_source("mnist1d", DataConfig())  # per-position means and stds differ in MNIST-1D
    ids = torch.arange(20_000, 40_000)
    xc, yc = CorruptedSource(src, CorruptConfig(pixels="gaussian"), 0).get(ids)
    x0, y0 = src.get(ids)
    assert torch.equal(yc, y0) and xc.dtype == x0.dtype and xc.shape == x0.shape
    # 20,000 samples of unit-scale data: means agree to ~0.01 + the 10,000-sample estimate's error
    assert (xc.mean(0) - x0.mean(0)).abs().max() < 0.08
    assert ((xc.std(0) / x0.std(0)) - 1).abs().max() < 0.08
    assert abs(torch.corrcoef(torch.stack([xc[:, 0, 5], x0[:, 0, 5]]))[0, 1]) < 0.05  # unrelated to the sample
    xt, _ = CorruptedSource(src, CorruptConfig(pixels="gaussian"), 0).get(src.test_ids()[:100])
    assert not torch.equal(xt, src.get(src.test_ids()[:100])[0])  # the test set is corrupted too


class GridImages(Source):
    """uint8 images (3, 4, 4) whose value encodes (channel, position): x[c, p] = 16 c + p (+ 50 on test ids)."""

    name, is_image, input_shape, num_classes, pool_size, test_size, test_offset = "grid", True, (3, 4, 4), 2, 100, 10, 100

    def get(self, ids):
        base = (16 * torch.arange(3)[:, None] + torch.arange(16)[None, :]).to(torch.uint8)
        x = base.expand(len(ids), 3, 16).clone() + 50 * (ids >= self.test_offset).to(torch.uint8)[:, None, None]
        return x.view(len(ids), 3, 4, 4), ids % 2


@pytest.mark.parametrize("pixels", ["shuffled", "random"])
def test_image_permutations_keep_each_pixels_channels_together(pixels):
    src = GridImages()
    ids = torch.cat([torch.arange(20), src.test_ids()])
    x = CorruptedSource(src, CorruptConfig(pixels=pixels), 0).get(ids)[0].view(len(ids), 3, 16).long()
    x = x - 50 * (ids >= src.test_offset).long()[:, None, None]
    origin = x - 16 * torch.arange(3)[:, None]  # the position each channel's value came from
    assert (origin == origin[:, :1]).all()  # all three channels moved together
    assert torch.equal(origin[:, 0].sort(1).values, torch.arange(16).expand(len(ids), 16))
    assert (len({tuple(o.tolist()) for o in origin[:, 0]}) == 1) == (pixels == "shuffled")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    write_tiny_cifar5m(d, per_part=60)
    write_tiny_cifar10(d, per_batch=20)
    return d


def test_gaussian_images_stay_uint8_and_extra_test_sets_are_corrupted(image_dir):
    src = build_source("cifar5m", DataConfig(data_dir=str(image_dir), test_size=60))
    cfg = CorruptConfig(pixels="gaussian", random_labels=True, test=True)
    corrupted = CorruptedSource(src, cfg, 0)
    x, _ = corrupted.get(torch.arange(300))
    x0, _ = src.get(torch.arange(300))
    assert x.dtype == torch.uint8 and x.shape == x0.shape
    assert (x.float().mean(0) - x0.float().mean(0)).abs().mean() < 10  # pixel units, 300 samples
    (ex, ey), (cx, cy) = corrupted.extra_test_sets()["test_cifar10"], src.extra_test_sets()["test_cifar10"]
    assert ex.dtype == torch.uint8 and not torch.equal(ex, cx) and not torch.equal(ey, cy)
    assert corrupted.extra_test_sets()["test_cifar10"][0] is ex  # corrupted once, then the same


# --- a pure function of (data seed, id) -------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_id_is_corrupted_the_same_in_any_batch_and_by_any_instance(teacher, kind):
    ids = torch.tensor([5, 1 << 33, 2049, 7, 40, TEACHER.test_size, teacher.test_offset + 3])
    x, y = CorruptedSource(teacher, KINDS[kind], 0).get(ids)
    again = CorruptedSource(build_source("teacher", TEACHER), KINDS[kind], 0)  # as another run builds it
    x2, y2 = again.get(ids.flip(0))
    assert torch.equal(x, x2.flip(0)) and torch.equal(y, y2.flip(0))
    x3, y3 = again.get(torch.cat([torch.arange(100, 130), ids[2:4]]))  # other company
    assert torch.equal(x3[-2:], x[2:4]) and torch.equal(y3[-2:], y[2:4])
    other = CorruptedSource(teacher, KINDS[kind], 1).get(torch.arange(200))  # another data seed
    this = CorruptedSource(teacher, KINDS[kind], 0).get(torch.arange(200))
    assert not (torch.equal(other[0], this[0]) and torch.equal(other[1], this[1]))


def _served(cfg) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{id: (x, y)} of every training batch a run's datamodule serves, checking repeats agree."""
    _, dm, _ = build(cfg)
    dm.setup("fit")
    seen = {}
    for x, y, ids in dm.train_dataloader():
        for i, xi, yi in zip(ids.tolist(), x, y, strict=True):
            if i in seen:  # a Real World id again, in a later epoch
                assert torch.equal(seen[i][0], xi) and torch.equal(seen[i][1], yi), f"id {i} changed"
            seen[i] = (xi, yi)
    return seen


def test_real_epochs_and_both_worlds_see_the_same_corruption_per_id(make_cfg):
    on = ("corrupt.label_noise=0.5", "corrupt.pixels=random", "n=40", "steps=12", "batch_size=16")
    real = _served(make_cfg("world=real", *on))  # 12 x 16 = 4.8 epochs of 40, crossing epoch boundaries
    ideal = _served(make_cfg("world=ideal", "seed=0", *on))
    other_run_seed = _served(make_cfg("world=ideal", "seed=1", *on))  # other ids, same corruption keys
    assert len(real) == 40 and set(real) & set(ideal)
    for i in set(real) & set(ideal):
        assert torch.equal(real[i][0], ideal[i][0]) and torch.equal(real[i][1], ideal[i][1])
    source = build(make_cfg(*on))[1].source
    for served in (real, ideal, other_run_seed):
        ids = torch.tensor(sorted(served))
        x, y = source.get(ids)
        assert torch.equal(torch.stack([served[i][0] for i in ids.tolist()]), x)
        assert torch.equal(torch.stack([served[i][1] for i in ids.tolist()]), y)


# --- runs, the FFCV cache, config -------------------------------------------------------------


def test_a_real_world_run_memorizes_random_labels_but_stays_at_chance_on_test(make_cfg):
    # 4 teacher classes: chance is 75% test error. Random labels leave nothing to generalize.
    cfg = make_cfg("world=real", "corrupt.random_labels=true", "n=64", "steps=300", "model.width=256",
                   "optim.lr=0.1", "optim.weight_decay=0", "data.test_size=1000")
    final = run_trial(cfg)["final"]
    assert final["train/error"] < 0.1, final
    assert 0.65 < final["test/error"] < 0.85, final


def test_an_ffcv_run_writes_its_own_corrupted_beton(make_cfg, tmp_path):
    pytest.importorskip("ffcv", reason="FFCV is not installed; loader=ffcv is untested")
    common = ("loader=ffcv", "world=ideal", "data.pool_size=2000", "steps=10", f"data.cache_dir={tmp_path / 'c'}")
    assert run_trial(make_cfg(*common))["status"] == "completed"
    corrupt = make_cfg(*common, "corrupt.label_noise=0.5", "corrupt.pixels=shuffled")
    assert run_trial(corrupt)["status"] == "completed"
    assert len(list((tmp_path / "c").glob("*.beton"))) == 2  # clean and corrupted never share a file
    _, dm, _ = build(corrupt)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    ids = torch.cat([i for _, _, i in batches])
    x, y = dm.source.get(ids)
    assert torch.equal(torch.cat([b[0] for b in batches]), x) and torch.equal(torch.cat([b[1] for b in batches]), y)
    assert not torch.equal(y, dm.source.inner.get(ids)[1])


@pytest.mark.parametrize("overrides,match", [
    (["corrupt.pixels=scrambled"], r"corrupt\.pixels=scrambled is not one of: none, shuffled, random, gaussian"),
    (["corrupt.label_noise=1.0"], r"corrupt\.label_noise=1\.0 must be in \[0, 1\)"),
    (["corrupt.label_noise=-0.1"], r"corrupt\.label_noise=-0\.1 must be in \[0, 1\)"),
    (["corrupt.label_noise=0.2", "corrupt.random_labels=true"], r"keep one \(corrupt\.label_noise=0 or"),
    (["corrupt.shuffled_pixels=true"], r"unknown config key 'corrupt\.shuffled_pixels'"),
])
def test_bad_corruption_settings_are_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        config.load(None, overrides)


def test_corruptions_separate_pairs_and_run_names():
    clean, noisy = config.load(None, []), config.load(None, ["corrupt.label_noise=0.2"])
    ideal = config.load(None, ["corrupt.label_noise=0.2", "world=ideal", "n=7"])
    assert config.pair_key(noisy) == config.pair_key(ideal) != config.pair_key(clean)
    assert config.trial_name(clean) == "mlp-w128-d3-bs128-real-n4000-s0"
    assert config.trial_name(noisy) == "mlp-w128-d3-bs128-real-n4000-s0-noise0.2"
