"""Data faults injected for real: corrupted .beton files, a changed source file, a malicious pickle,
bad arrays files, a diverged run's summary. Each asserts the exact outcome (invariant 8 of docs/invariants.md)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from conftest import crash_at
from image_fixtures import write_tiny_cifar5m, write_tiny_cifar10
from twoworlds.datamodules import arrays, cifar
from twoworlds.datamodules.datamodule import WorldDataModule
from twoworlds.datamodules.sources import DataConfig, build_source
from twoworlds.datamodules.worlds import WorldPlan
from twoworlds.launch.cli import main
from twoworlds.launch.logs import show_library_logs
from twoworlds.launch.loop import Checkpoints, train
from twoworlds.launch.run import preflight, run_trial
from twoworlds.results.aggregate import load_study
from twoworlds.results.summary import collect, format_summary

C5M = {"per_part": 100}  # pool 500 (parts 0-4), test 100
POOL = 500


@pytest.fixture(autouse=True)
def _cli_logs():
    """The FFCV cache's log lines as the command line shows them (launch/logs.py), for the tests that read them."""
    show_library_logs()


@pytest.fixture(scope="module")
def c5m(tmp_path_factory):
    d = tmp_path_factory.mktemp("c5m")
    write_tiny_cifar5m(d, **C5M)
    return d


def _cifar5m(data_dir):
    return build_source("cifar5m", DataConfig(data_dir=str(data_dir), test_size=64))


def _served(source, path, steps=15, batch_size=32):
    """Every (x, y, ids) batch FFCV serves for an Ideal World plan over the whole pool, checked
    against the source: the numbers a run would train on."""
    from twoworlds.datamodules.ffcv_loader import FFCVBatches
    plan = WorldPlan.for_source(source, "ideal", n=64, steps=steps, batch_size=batch_size, seed=1)
    dm = WorldDataModule(source, plan)
    dm.setup("fit")
    return dm, list(FFCVBatches(dm, path, num_workers=1))


def _matches_source(source, dm, batches) -> bool:
    for step, (x, y, ids) in enumerate(batches):
        sx, sy = source.get(ids)
        if not (torch.equal(y, sy) and torch.equal(x, dm.train_transform(sx, step))):
            return False
    return True


def _sidecar_ok(path) -> bool:
    want = (path.parent / f"{path.name}.sha256").read_text().split()[0]
    return hashlib.sha256(path.read_bytes()).hexdigest() == want


# --- FFCV cache ---------------------------------------------------------------------------------


def test_overwritten_beton_pages_are_caught_and_rebuilt(tmp_path, c5m, capsys):
    pytest.importorskip("ffcv")
    from twoworlds.datamodules.ffcv_loader import write_pool_beton
    source = _cifar5m(c5m)
    path = write_pool_beton(source, tmp_path)
    assert _sidecar_ok(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # overwrite 64 KiB of image pages in the middle of the file
        f.seek(size // 2)
        f.write(b"\xff" * 65536)
    assert path.stat().st_size == size
    dm, served = _served(source, path)
    assert not _matches_source(source, dm, served)  # the fault is real: these are wrong numbers
    capsys.readouterr()
    assert write_pool_beton(source, tmp_path) == path
    assert capsys.readouterr().out.splitlines()[0] == f"ffcv: {path} failed its checksum; rebuilding"
    assert _sidecar_ok(path)
    dm, served = _served(source, path)
    assert _matches_source(source, dm, served)
    write_pool_beton(source, tmp_path)  # now verified: reused without a word of rebuilding
    assert capsys.readouterr().out == f"ffcv: reusing {path}\n"


def test_truncated_or_unchecksummed_beton_is_rebuilt(tmp_path, c5m, capsys):
    pytest.importorskip("ffcv")
    from twoworlds.datamodules.ffcv_loader import write_pool_beton
    source = _cifar5m(c5m)
    path = write_pool_beton(source, tmp_path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 3)
    capsys.readouterr()
    assert write_pool_beton(source, tmp_path) == path
    assert capsys.readouterr().out.splitlines()[0] == f"ffcv: {path} failed its checksum; rebuilding"
    dm, served = _served(source, path)
    assert _matches_source(source, dm, served)
    (path.parent / f"{path.name}.sha256").unlink()  # a file from before checksums (or a torn write)
    write_pool_beton(source, tmp_path)
    assert capsys.readouterr().out.splitlines()[0] == f"ffcv: {path} has no checksum; rebuilding"
    assert _sidecar_ok(path)


def test_a_changed_source_row_gets_its_own_beton(tmp_path, c5m, capsys):
    pytest.importorskip("ffcv")
    from twoworlds.datamodules.ffcv_loader import _fingerprint, beton_path, write_pool_beton
    data = tmp_path / "data"
    shutil.copytree(c5m, data)
    source = _cifar5m(data)
    old = write_pool_beton(source, tmp_path / "cache")
    # pool id 150 = part1 row 50: far from the first, middle and last 8 rows the fingerprint samples
    with np.load(data / "part1.npz") as z:
        x, y = z["X"].copy(), z["Y"].copy()
    x[50] = 255 - x[50]
    np.savez(data / "part1.npz", X=x, Y=y)
    changed = _cifar5m(data)
    assert _fingerprint(changed) == _fingerprint(source)  # the sampled fingerprint alone misses it
    new = beton_path(changed, tmp_path / "cache")
    assert new != old
    assert write_pool_beton(changed, tmp_path / "cache") == new
    assert f"writing {POOL:,} samples of cifar5m to {new}" in capsys.readouterr().out
    dm, served = _served(changed, new)
    assert _matches_source(changed, dm, served)
    assert any(150 in ids.tolist() for _, _, ids in served)
    # the file's digest is recorded, keyed by path, size and mtime: the next key costs no rehash
    records = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "digests").iterdir()]
    part1 = next(r for r in records if r["path"] == str((data / "part1.npz").resolve()))
    assert part1["sha256"] == hashlib.sha256((data / "part1.npz").read_bytes()).hexdigest()
    assert part1["mtime_ns"] == (data / "part1.npz").stat().st_mtime_ns


def _rewrite_id(path, row: int, new_id: int) -> None:
    """Silent corruption the size/mtime stamp cannot see: rewrite one row's id in the .beton's metadata
    table (field 2 = "id"), then put the mtime back."""
    from ffcv.reader import Reader
    from ffcv.types import HeaderType
    reader = Reader(str(path))
    offset = HeaderType.itemsize + reader.field_descriptors.nbytes
    st = path.stat()
    table = np.memmap(path, dtype=reader.metadata_type, mode="r+", offset=offset, shape=(reader.num_samples,))
    assert table["f2"][row] == row
    table["f2"][row] = new_id
    table.flush()
    del table
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_wrong_ids_stop_the_run_and_the_file_is_not_trusted_again(tmp_path, c5m, capsys):
    pytest.importorskip("ffcv")
    from twoworlds.datamodules.ffcv_loader import CacheError, write_pool_beton
    source = _cifar5m(c5m)
    path = write_pool_beton(source, tmp_path)
    plan = WorldPlan.for_source(source, "ideal", n=64, steps=15, batch_size=32, seed=1)
    victim = int(plan.ideal_batch(2, plan.ideal_ids())[5])  # the 6th sample of step 2
    _rewrite_id(path, victim, (victim + 1) % POOL)
    assert write_pool_beton(source, tmp_path) == path  # trusted by its stamp
    with pytest.raises(CacheError) as err:
        _served(source, path)
    assert str(err.value) == (f"ffcv: {path} served sample id {(victim + 1) % POOL} where the plan has {victim} "
                              f"(step 2, rank 0, position 5); the file is corrupt and was deleted: run again to rebuild it")
    assert not path.exists() and not (path.parent / f"{path.name}.sha256").exists()
    capsys.readouterr()
    write_pool_beton(source, tmp_path)
    assert f"writing {POOL:,} samples" in capsys.readouterr().out
    dm, served = _served(source, path)
    assert _matches_source(source, dm, served)


def test_a_run_on_an_overwritten_cache_rebuilds_it_and_trains_on_the_right_data(make_cfg, tmp_path, capsys):
    pytest.importorskip("ffcv")
    common = ["data.pool_size=2000", f"data.cache_dir={tmp_path / 'cache'}", "loader=ffcv", "world=ideal"]
    first = run_trial(make_cfg(*common, "name=first"))
    (path,) = (tmp_path / "cache").glob("*.beton")
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\x7f" * 65536)
    capsys.readouterr()
    second = run_trial(make_cfg(*common, "name=second"))
    assert f"ffcv: {path} failed its checksum; rebuilding" in capsys.readouterr().out.splitlines()
    assert second["status"] == "completed" and second["final"] == first["final"]


# --- CIFAR-10 pickles -----------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_cifar10_batch_runs_no_code(tmp_path, capsys):
    root = write_tiny_cifar10(tmp_path, per_batch=20)
    marker = tmp_path / "pwned"
    batch = root / "data_batch_3"
    with open(batch, "wb") as f:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, f, protocol=2)
    code = main(["run", "source=cifar10", f"data.data_dir={tmp_path}", "progress=false", f"out_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert code == 2 and not marker.exists()
    assert err == (f"error: {batch} is not a CIFAR-10 python batch (refuses global posix.system); "
                   f"delete it and unpack {cifar.CIFAR10_URL} again\n")


def test_numpy1_cifar10_pickles_still_read(tmp_path):
    # the published files were pickled by numpy 1.x: their arrays name numpy.core.multiarray
    root = write_tiny_cifar10(tmp_path, per_batch=20)
    path = root / "data_batch_1"
    raw = path.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in raw
    path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    x, y = cifar._read_cifar10_batch(path)
    with open(root / "data_batch_1", "rb") as f:
        want = pickle.load(f, encoding="bytes")
    assert np.array_equal(x.reshape(20, -1), want[b"data"]) and y.tolist() == want[b"labels"]


# --- arrays ---------------------------------------------------------------------------------------


def test_a_stray_label_is_refused_unless_num_classes_says_so(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((40, 4), np.float32))
    y = np.arange(40) % 4
    y[7] = 1000
    np.save(tmp_path / "y.npy", y)
    args = ["run", "source=arrays", f"data.data_dir={tmp_path}", "data.x_file=x.npy", "data.y_file=y.npy",
            "progress=false", f"out_dir={tmp_path / 'runs'}"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"error: arrays: label 1000 in row 7 of y ({tmp_path / 'y.npy'}) implies 1,001 classes, but classes "
        f"4, 5, 6, 7, 8, ... (996 in all) have no sample; fix the labels, or set data.num_classes=1001 if that "
        f"many classes is intended\n")

    def build(**kw):
        return build_source("arrays", DataConfig(data_dir=str(tmp_path), x_file="x.npy", y_file="y.npy", **kw))

    assert build(num_classes=1001).num_classes == 1001
    with pytest.raises(ValueError) as err:
        build(num_classes=4)
    assert str(err.value) == (f"arrays: label 1000 in row 7 of y ({tmp_path / 'y.npy'}) is not below "
                              f"data.num_classes=4; fix the label or raise data.num_classes")
    np.save(tmp_path / "y.npy", np.arange(40) % 4)
    assert build().num_classes == build(num_classes=4).num_classes == 4
    with pytest.raises(ValueError, match=r"^data.num_classes=3 but the teacher source has 4 classes$"):
        build_source("teacher", DataConfig(num_classes=3))


def test_non_finite_inputs_are_named_at_load(tmp_path, monkeypatch):
    monkeypatch.setattr(arrays, "FINITE_CHUNK", 64)  # 4 rows per chunk: the bad row lies in a later chunk
    y = np.arange(40) % 4
    np.save(tmp_path / "y.npy", y)
    for bad, dtype in ((np.nan, np.float32), (-np.inf, np.float32), (1e300, np.float64)):
        x = np.ones((40, 4), dtype)
        x[13, 2] = bad
        np.save(tmp_path / "x.npy", x)
        with pytest.raises(ValueError) as err:
            build_source("arrays", DataConfig(data_dir=str(tmp_path), x_file="x.npy", y_file="y.npy"))
        assert str(err.value) == (f"arrays: {tmp_path / 'x.npy'} (data.x_file) has a non-finite value (NaN, inf, "
                                  f"or beyond float32) in row 13; fix or drop that sample")
    tx = np.ones((10, 4), np.float32)
    tx[9, 0] = np.nan
    np.savez(tmp_path / "d.npz", x=np.ones((40, 4), np.float32), y=y, x_test=tx, y_test=y[:10])
    with pytest.raises(ValueError, match=r"d\.npz \(x_test\) has a non-finite value .* in row 9;"):
        build_source("arrays", DataConfig(data_dir=str(tmp_path), npz="d.npz"))


# --- distinct_samples_seen is counted -------------------------------------------------------------


@pytest.mark.parametrize(("world", "steps", "want"), [("real", 4, 64), ("real", 40, 128), ("ideal", 40, 640)])
def test_distinct_samples_seen_is_the_counted_ids(make_cfg, world, steps, want):
    cfg = make_cfg(f"world={world}", f"steps={steps}", "n=128", "batch_size=16", "data.pool_size=1000")
    prepared = preflight(cfg)
    summary = train(prepared)
    assert summary["distinct_samples_seen"] == want
    on_disk = json.loads(open(f"{cfg.out_dir}/t/{summary['trial']}/summary.json").read())
    assert on_disk["distinct_samples_seen"] == want
    plan = WorldPlan.for_source(build_source("teacher", DataConfig(pool_size=1000)), world, 128, steps, 16, cfg.seed)
    trained = {int(i) for _, ids in plan.batches() for i in ids}
    seen = prepared.module.seen  # the module's bitmap after training
    counted = {int(i) + seen.lo for i in seen.bits.nonzero().flatten()}
    assert counted == trained and len(trained) == want


def test_a_resumed_run_keeps_its_count(make_cfg, tmp_path):
    assert run_trial(make_cfg("world=ideal", "steps=40", "eval.points=10", "name=full"))["distinct_samples_seen"] == 640
    cfg = make_cfg("world=ideal", "steps=40", "eval.points=10", "name=resume")
    with pytest.raises(RuntimeError, match="injected crash"):
        run_trial(cfg, checkpoints=Checkpoints(every_s=0), report=crash_at(15))
    ckpt = tmp_path / "runs" / "t" / "resume" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["seen_ids"]
    assert int(np.unpackbits(state["packed"].numpy()).sum()) == 15 * 16
    resumed = run_trial(cfg, resume_from=str(ckpt))
    assert resumed["resumed_from_step"] == 15
    assert resumed["distinct_samples_seen"] == 640  # not (40 - 15) x 16 = 400: the bitmap came back


# --- summary.json is strict JSON ------------------------------------------------------------------


def _strict(text: str):
    def refuse(token):
        raise ValueError(f"bare {token} in summary.json")
    return json.loads(text, parse_constant=refuse)


def test_a_diverged_runs_summary_is_strict_json_and_reads_back_as_floats(make_cfg):
    cfg = make_cfg("world=real", "optim.lr=1e6", "optim.momentum=0.99", "steps=400", "check_every=10")
    summary = run_trial(cfg)
    assert summary["status"] == "diverged"
    study = f"{cfg.out_dir}/t"
    doc = _strict(open(f"{study}/{summary['trial']}/summary.json").read())
    bad = {k: v for k, v in doc["final"].items() if isinstance(v, str)}
    assert bad and set(bad.values()) <= {"nan", "inf", "-inf"}
    (trial,) = collect(study)
    assert all(isinstance(v, float) for v in trial["final"].values())
    assert summary["trial"] in format_summary("t", [trial])
    row = load_study(study).trials.iloc[0]
    assert all(np.isnan(row[f"final/{k}"]) or np.isinf(row[f"final/{k}"]) for k in bad)


def test_the_cli_stops_a_run_served_a_wrong_sample_in_one_line(tmp_path, c5m, capsys):
    """The same corruption under `twoworlds run`: exit 2, one line naming the file, no traceback."""
    pytest.importorskip("ffcv")
    args = ["run", "source=cifar5m", f"data.data_dir={c5m}", f"data.cache_dir={tmp_path / 'cache'}", "loader=ffcv",
            "world=ideal", "steps=6", "batch_size=32", "data.test_size=64", "eval.points=3", "model.width=8",
            "model.depth=2", "progress=false", f"out_dir={tmp_path / 'runs'}"]
    assert main([*args, "study=first"]) == 0
    (path,) = (tmp_path / "cache").glob("*.beton")
    plan = WorldPlan.for_source(_cifar5m(c5m), "ideal", n=64, steps=6, batch_size=32, seed=0)
    victim = int(plan.ideal_batch(3, plan.ideal_ids())[0])
    _rewrite_id(path, victim, (victim + 1) % POOL)
    capsys.readouterr()
    assert main([*args, "study=second"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: ffcv: {path} served sample id") and "Traceback" not in "\n".join(err)
    summary = json.loads(next((tmp_path / "runs" / "second").glob("*/summary.json")).read_text())
    assert summary["status"] == "failed" and not path.exists()
