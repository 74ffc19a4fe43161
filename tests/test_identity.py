"""A run's identity (config hash, pair key, trial name, FFCV cache key) never changes under a trial that was
already run: every shipped study's trials, full and smoke, and a few single runs, against the values recorded in
tests/data/identity.json (written on 2026-12-02, before the keys were declared on the schema's fields)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import field, make_dataclass
from pathlib import Path

import pytest
from twoworlds.launch import config
from twoworlds.launch.sweep_spec import load_sweep, shipped_sweeps

RECORDED = json.loads((Path(__file__).parent / "data" / "identity.json").read_text())


def _cache_key(cfg) -> str:
    from twoworlds.datamodules.config import cache_params
    params = cache_params(cfg.data, cfg.corrupt)
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


@pytest.mark.parametrize("study", sorted(shipped_sweeps()))
def test_every_shipped_trial_keeps_its_name_config_hash_and_pair_key(study):
    for smoke in (False, True):
        sweep = load_sweep(study, smoke=smoke)
        now = {t.name: [config.config_hash(t.cfg), config.pair_key(t.cfg)] for t in sweep.trials}
        assert now == RECORDED["studies"][sweep.name], f"{sweep.name}: a trial's identity changed"


@pytest.mark.parametrize("label", sorted(RECORDED["runs"]))
def test_single_runs_keep_their_identity_and_ffcv_cache_key(label):
    want = RECORDED["runs"][label]
    cfg = config.load(None, want["overrides"])
    assert (config.config_hash(cfg), config.pair_key(cfg), config.trial_name(cfg), _cache_key(cfg)) == \
        (want["config_hash"], want["pair_key"], want["trial_name"], want["cache_key"])


def test_the_declared_roles_are_the_lists_they_replaced():
    from twoworlds.results.records import BOOKKEEPING_KEYS
    assert set(BOOKKEEPING_KEYS) == {"name", "study", "out_dir", "progress", "check_every", "checkpoint_every_s"}
    assert set(config.in_trial_name()) == {
        "model.name", "model.width", "model.depth", "model.patch_size", "batch_size", "world", "n", "seed",
        "corrupt.label_noise", "corrupt.random_labels", "corrupt.pixels", "corrupt.test", "model.output_scale"}


def test_corrupt_test_without_a_label_corruption_is_refused():
    """It changes nothing that is trained; left to run, it would split the pair key of a clean run."""
    with pytest.raises(config.ConfigError, match=r"corrupt\.test=true .* none is on"):
        config.load(None, ["corrupt.test=true"])
    config.load(None, ["corrupt.test=true", "corrupt.label_noise=0.1"])


def test_a_key_added_to_the_schema_keeps_every_existing_trial_directory(make_cfg, monkeypatch):
    """A trial run under today's schema; then the schema grows a key (model.dropout, default 0): the directory is
    still accepted, with the same config hash and pair key; a run that sets the new key is another config."""
    from twoworlds.launch import trial_state
    from twoworlds.launch.run import preflight, run_trial

    old = run_trial(make_cfg())
    model = make_dataclass("ModelConfig", [("dropout", float, field(default=0.0))], bases=(config.ModelConfig,))
    grown = make_dataclass("RunConfig", [("model", model, field(default_factory=model))], bases=(config.RunConfig,))
    monkeypatch.setattr(config, "RunConfig", grown)

    cfg = make_cfg()
    assert cfg.model.dropout == 0.0
    assert (config.config_hash(cfg), config.pair_key(cfg)) == (old["config_hash"], old["pair_key"])
    prepared = preflight(cfg)  # refuses a directory holding another config's results; this one is accepted
    assert trial_state.same_config(prepared.cfg)

    with pytest.raises(config.ConfigError, match=r"model\.dropout: \(absent\) -> 0\.5"):
        preflight(make_cfg("model.dropout=0.5"))
