"""A run's identity (config hash, pair key, trial name, FFCV cache key) never changes under a trial that was
already run: every shipped study's trials, full and smoke, and a few single runs, against the values recorded in
tests/data/identity.json (written on 2026-12-02, before the keys were declared on the schema's fields)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from twoworlds.launch import config
from twoworlds.launch.sweep_spec import load_sweep, shipped_sweeps

RECORDED = json.loads((Path(__file__).parent / "data" / "identity.json").read_text())


def _cache_key(cfg) -> str:
    from twoworlds.launch.run import cache_params
    params = cache_params(cfg)
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
