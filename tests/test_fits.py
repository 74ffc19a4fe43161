"""Fits with honest uncertainty, on planted laws: data drawn from a known power law and a known
repetition law with seed-level and point-level noise; the fits must return the truth within stated
tolerances and their 95% bootstrap intervals over seeds must cover it in most repetitions. Seeded and
deterministic; the coverage counts below are what these seeds give, with the bound each must keep."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from twoworlds.results.fits import (
    bootstrap,
    bootstrap_means,
    fit_power_law,
    power_law_report,
    resamples,
    weighted_interval,
)
from twoworlds.results.repetition import (
    ABOVE,
    BELOW,
    DEFINED,
    effective_samples,
    fit_r_star,
    half_worth_epochs,
    law,
)

# ---------------------------------------------------------------- the bootstrap itself


def test_the_exact_bootstrap_enumerates_every_resample_with_its_probability():
    counts, w = resamples(3)
    assert len(counts) == math.comb(5, 3) == 10 and (counts.sum(axis=1) == 3).all()
    assert w.sum() == pytest.approx(1.0)
    assert w[[list(r) for r in counts].index([3, 0, 0])] == pytest.approx(1 / 27)  # one seed drawn 3 times
    assert w[[list(r) for r in counts].index([1, 1, 1])] == pytest.approx(6 / 27)
    many, w8 = resamples(8)  # C(15, 8) = 6,435 > EXACT_UP_TO: seeded random draws
    assert (many == resamples(8)[0]).all() and w8.sum() == pytest.approx(1.0)
    # two seeds: the interval runs from one seed's statistic to the other's
    boot = bootstrap([1.0, 3.0], np.mean)
    assert boot.interval == (1.0, 3.0)
    assert "all 3 distinct resamples" in boot.words()
    assert np.isnan(bootstrap([1.0], np.mean).interval[0])  # one seed: no interval, never a zero-width one


def test_an_unresolved_resample_keeps_the_interval_open_and_failures_void_it():
    assert weighted_interval([1.0, 2.0, np.inf], [0.1, 0.8, 0.1]) == (1.0, np.inf)
    lo, hi = weighted_interval([1.0, np.nan], [0.5, 0.5])  # half the resamples failed: no interval
    assert np.isnan(lo) and np.isnan(hi)
    m = np.array([[1.0, 2.0], [3.0, np.nan]])  # a column with an undefined seed has no interval
    lo, hi = bootstrap_means(m)
    assert (lo[0], hi[0]) == (1.0, 3.0) and np.isnan(lo[1]) and np.isnan(hi[1])


# ---------------------------------------------------------------- a planted power law

ALPHA, PREFACTOR = 0.4, 3.0


def planted_curves(rng, seeds: int = 5, seed_sd: float = 0.04, point_sd: float = 0.03):
    """Each seed: error = a·s^-(α + δ) with δ ~ N(0, seed_sd) per seed, times log-normal point noise."""
    s = np.logspace(1, 5, 40)
    return [(s, PREFACTOR * s ** -(ALPHA + rng.normal(0, seed_sd)) * np.exp(rng.normal(0, point_sd, s.size)))
            for _ in range(seeds)]


def test_a_planted_power_law_is_recovered_and_its_interval_covers_the_truth():
    rng = np.random.default_rng(0)
    covered, errors = 0, []
    for _ in range(25):
        rep = power_law_report(planted_curves(rng))
        errors.append(rep.exponent - ALPHA)
        covered += rep.exponent_lo <= ALPHA <= rep.exponent_hi
        assert rep.method == "lsq" and rep.samples_to == 1e5 and 1e3 <= rep.samples_from < 1.2e3  # two decades
    assert np.abs(errors).max() < 0.06  # 3 sd of a mean over 5 seeds' exponents (sd 0.04)
    assert covered >= 17, covered  # of 25; these seeds give 21 (with 5 seeds percentile intervals run narrow)


def test_the_hold_out_predicts_an_exact_law_and_flags_one_that_bends_in_the_last_decade():
    s = np.logspace(1, 5, 40)
    exact = power_law_report([(s, PREFACTOR * s ** -ALPHA)] * 2)
    assert exact.exponent == pytest.approx(ALPHA) and exact.holdout_error == pytest.approx(0.0, abs=1e-9)
    floor = power_law_report([(s, PREFACTOR * s ** -ALPHA + 0.02)] * 2)  # an error floor the law lacks
    assert floor.holdout_error < -0.1  # the extrapolated law undershoots the measured error at the end (-14%)


def test_the_huber_fit_shrugs_off_outliers_that_pull_least_squares():
    s = np.logspace(1, 5, 40)
    e = PREFACTOR * s ** -ALPHA
    e[-4:] *= 3.0  # four wild points at the end (a noisy evaluation, a spike)
    assert abs(fit_power_law(s, e, "huber")[0] - ALPHA) < 0.01
    assert abs(fit_power_law(s, e, "lsq")[0] - ALPHA) > 0.03
    with pytest.raises(ValueError, match="unknown fitting method 'l2'"):
        fit_power_law(s, e, "l2")


# ---------------------------------------------------------------- effective samples


def test_effective_samples_on_the_ideal_envelope_interpolated_in_log_samples():
    s = np.array([100, 1000, 10_000, 100_000])
    ideal = np.array([0.8, 0.5, 0.55, 0.2])  # a bump at 10,000: the envelope stays at 0.5 there
    d, status = effective_samples(s, ideal, [0.65, 0.5, 0.35, 0.1, 0.9, 0.2, np.nan])
    assert d[0] == pytest.approx(math.sqrt(100 * 1000))  # half-way between 0.8 and 0.5, in log(samples)
    assert d[1] == pytest.approx(1000)  # first reached at 1,000, not at the bump's 10,000
    assert d[2] == pytest.approx(10_000 * 10 ** 0.5)  # between the envelope's 0.5 (at 10,000) and 0.2
    assert d[5] == pytest.approx(100_000)
    assert list(status) == [DEFINED, DEFINED, DEFINED, BELOW, ABOVE, DEFINED, "missing"]
    assert np.isnan(d[3]) and np.isnan(d[4]) and np.isnan(d[6])  # undefined: never clipped to a bound


# ---------------------------------------------------------------- a planted repetition law

R_STAR = 8.0


def planted_repetition(rng, seeds: int = 4, seed_sd: float = 0.1, point_sd: float = 0.04) -> pd.DataFrame:
    """D_eff/n from the law with R*·exp(N(0, seed_sd)) per seed, at n = 250..2,000 over 64,000 samples
    (256 down to 32 epochs), with log-normal point noise."""
    rows = []
    for seed in range(seeds):
        r_star = R_STAR * math.exp(rng.normal(0, seed_sd))
        for n in (250, 500, 1000, 2000):
            e = np.logspace(-1, math.log10(64_000 / n), 25)
            y = law(e, r_star) * np.exp(rng.normal(0, point_sd, e.size))
            rows.append(pd.DataFrame({"seed": seed, "n": n, "epochs": e, "over_n": y}))
    return pd.concat(rows, ignore_index=True)


def test_the_law_and_its_derived_numbers():
    assert list(law([0.5, 1.0], 8.0)) == [0.5, 1.0]  # the first epoch: every sample is fresh
    assert law([1 + 8 * math.log(2)], 8.0)[0] == pytest.approx(1 + 4)  # half-way to the ceiling 1 + R*
    assert law([1e6], 8.0)[0] == pytest.approx(9.0) and law([7.0], math.inf)[0] == 7.0
    assert half_worth_epochs(8.0) == pytest.approx(1 + 8 * math.log(2))


def test_a_planted_r_star_is_recovered_and_its_interval_covers_the_truth():
    rng = np.random.default_rng(1)
    covered, estimates = 0, []
    for _ in range(20):
        pts = planted_repetition(rng)
        units = [g for _, g in pts.groupby("seed")]
        fit = lambda chosen: fit_r_star(pd.concat(chosen).epochs, pd.concat(chosen).over_n)  # noqa: E731
        estimates.append(fit(units))
        lo, hi = bootstrap(units, fit).interval
        covered += lo <= R_STAR <= hi
    assert np.abs(np.log(np.array(estimates) / R_STAR)).max() < 0.15  # within 15%: seed sd 10%, 4 seeds
    assert covered >= 12, covered  # of 20; these seeds give 14 (4 seeds: 35 resamples, narrow)


def test_no_saturation_in_the_data_is_an_unresolved_r_star_never_a_number():
    e = np.logspace(0.1, 1.5, 20)
    assert fit_r_star(e, e) == math.inf  # repeats as good as fresh throughout: R* = inf
    assert math.isnan(fit_r_star([0.5, 0.8], [0.5, 0.8]))  # nothing after the first epoch: no fit


# ---------------------------------------------------------------- the claims on constructed tables


def test_effective_data_claims_on_a_constructed_configurations_table():
    from twoworlds.results.claims import check_claims
    configs = pd.DataFrame({
        "configuration": ["cnn n=250", "cnn n=4000", "mlp n=250", "mlp n=4000"],
        "d_eff_error": "soft", "epochs_final": [512, 32, 512, 32],
        "d_eff_ratio_before_mean": [0.97, 1.01, 0.85, 0.95], "d_eff_ratio_before_lo": [0.95, 0.99, 0.8, 0.9],
        "d_eff_ratio_before_hi": [0.99, 1.03, 0.9, 1.0], "d_eff_ratio_before_min": [0.9, 0.95, 0.7, 0.8],
        "late_worth_mean": [0.02, 0.9, 0.001, 0.2], "late_worth_lo": [0.01, 0.8, 0.0, 0.1],
        "late_worth_hi": [0.03, 1.0, 0.002, 0.3], "d_eff_final_mean": [15_000, 120_000, 3_000, 48_000],
        "law_group": ["cnn", "cnn", "mlp", "mlp"], "law_r_star": [55.0, 55.0, 11.0, 11.0],
        "law_r_star_lo": [50.0, 50.0, 9.0, 9.0], "law_r_star_hi": [70.0, 70.0, 13.0, 13.0],
        "law_holdout_r_star_without": [53.0, 52.0, 11.0, 11.0],
        "law_holdout_predicted": [14_000, 96_000, 2_900, 45_000], "law_holdout_error": [-0.067, -0.2, -0.033, -0.0625],
        "law_holdout_largest": [False, True, False, True]})
    trials = pd.DataFrame({"steps": [1000]})
    verdicts = check_claims([
        {"kind": "effective_data_before_convergence", "min_ratio": 0.8},
        {"kind": "effective_data_before_convergence", "min_ratio": 0.9},  # the MLP at n=250: 0.85
        {"kind": "effective_data_saturates", "min_epochs": 100, "max_late_worth": 0.25, "max_r_star": 100},
        {"kind": "effective_data_saturates", "min_epochs": 10, "max_late_worth": 0.25, "max_r_star": 100},
        {"kind": "effective_data_saturates", "min_epochs": 100, "max_late_worth": 0.25, "max_r_star": 50},
        {"kind": "repetition_law_predicts", "tolerance": 0.25},
        {"kind": "repetition_law_predicts", "tolerance": 0.15},  # the CNN's largest n: -20%
        {"kind": "repetition_law_predicts", "tolerance": 0.1, "held_out": "each", "where": {"law_group": "mlp"}},
        {"kind": "repetition_law_predicts", "tolerance": 0.25, "error": "0/1"},  # computed on the soft error
        {"kind": "effective_data_before_convergence", "min_ratio": 0.9,  # a list in `where`: any of its values
         "where": {"configuration": ["cnn n=250", "cnn n=4000", "mlp n=4000"]}},
    ], trials, configs, [])
    assert [v.holds for v in verdicts] == [True, False, True, False, False, True, False, True, None, True]
    assert "cnn n=250 0.97 [0.95, 0.99]" in verdicts[0].evidence and "smallest single evaluation 0.7" in verdicts[0].evidence
    assert "R*: cnn 55 [50, 70], mlp 11 [9, 13]" in verdicts[2].evidence
    assert "cnn n=4000: 96,000 predicted (R* 52 without it), 120,000 measured, -20.0%" in verdicts[5].evidence
    assert "D_eff was computed on the soft error, the claim names 0/1" in verdicts[8].evidence
    # margins, in the bound's units, positive inside: the smallest ratio 0.85 against 0.8; late worth 0.02 against
    # 0.25 and R*'s interval ending at 70 against 100; the largest |hold-out error| 20% against 25% and 15%
    assert [[m.text() for m in verdicts[i].margins] for i in (0, 1, 2, 5, 6)] == [
        ["+0.05"], ["-0.05"], ["late worth +0.23", "R* +30"], ["+5.0 points"], ["-5.0 points"]]
    assert verdicts[2].check_line().endswith("; margins: late worth +0.23, R* +30")
    undefined = configs.assign(law_holdout_error=[-0.067, np.nan, -0.033, -0.0625])  # a final D_eff undefined
    assert check_claims([{"kind": "repetition_law_predicts", "tolerance": 0.25}], trials, undefined, [])[0].holds is None
    one_seed = configs.assign(law_r_star_lo=np.nan, law_r_star_hi=np.nan)  # no interval: R* cannot be bounded
    saturates = [{"kind": "effective_data_saturates", "min_epochs": 100, "max_late_worth": 0.25, "max_r_star": 100}]
    assert check_claims(saturates, trials, one_seed, [])[0].holds is None
    # one seed's trials alone (the seed spread) have no interval over seeds: the bound applies to that seed's R*
    alone, = check_claims(saturates, trials, one_seed, [], alone=True)
    assert alone.holds and [m.text() for m in alone.margins] == ["late worth +0.23", "R* +45"]
    unresolved, = check_claims(saturates, trials, one_seed.assign(law_r_star=np.inf), [], alone=True)
    assert unresolved.holds is False and unresolved.margins[1].text() == "R* -∞"
    # an Ideal World configuration (no Real World trials, so no D_eff) is not part of the claim; a Real World one
    # without effective data makes it not checkable, naming it
    ideal = pd.DataFrame({"configuration": ["cnn steps=2000"], "real_seeds": [0]})
    with_ideal = pd.concat([configs.assign(real_seeds=3), ideal], ignore_index=True)
    assert check_claims(saturates, trials, with_ideal, [])[0].holds is True
    lacking = pd.concat([configs.assign(real_seeds=3), ideal.assign(configuration="cnn n=8000", real_seeds=3)])
    verdict, = check_claims(saturates, trials, lacking, [])
    assert verdict.holds is None and "and cnn n=8000 has none (run the twins" in verdict.evidence


@pytest.mark.parametrize("claims,match", [
    ([{"kind": "effective_data_saturates", "max_late_worth": 0.1, "max_r_star": 200, "error": "zero_one"}],
     r"\(effective_data_saturates\) in x.yaml: error 'zero_one' must be one of soft, 0/1"),
    ([{"kind": "effective_data_before_convergence", "min_ratio": 0.8},
      {"kind": "repetition_law_predicts", "tolerance": 0.3, "error": "0/1"}], r"name different errors"),
    ([{"kind": "repetition_law_predicts", "tolerance": 0.25, "held_out": "smallest"}],
     r"held_out 'smallest' must be one of largest, each"),
    ([{"kind": "repetition_law_predicts"}], r"'tolerance' is missing \(a number >= 0\)"),
    ([{"kind": "effective_data_saturates", "max_late_worth": 0.1}], r"'max_r_star' is missing"),
    ([{"kind": "effective_data_before_convergence", "min_ratio": "high"}], r"min_ratio 'high' must be a number"),
    ([{"kind": "effective_data_before_convergence", "min_ratio": 0.8, "max_ratio": 2}],
     r"unknown key\(s\) max_ratio"),
    ([{"kind": "effective_data_before_convergence", "min_ratio": 0.8, "where": {"n": []}}],
     r"'n' must map to one value or a list of values"),
])
def test_effective_data_claims_are_validated_with_the_sweep_file(claims, match):
    from twoworlds.results.claim_spec import ClaimError, validate_claims
    with pytest.raises(ClaimError, match=match):
        validate_claims(claims, "in x.yaml")


def test_effective_data_claims_get_their_defaults_and_a_list_in_where():
    from twoworlds.results.claim_spec import validate_claims
    assert validate_claims([{"kind": "repetition_law_predicts", "tolerance": 0.25, "where": {"n": [500, 1000]}},
                            {"kind": "effective_data_saturates", "max_late_worth": 0.1, "max_r_star": 200}],
                           "in x.yaml") == [
        {"kind": "repetition_law_predicts", "where": {"n": [500, 1000]}, "tolerance": 0.25, "held_out": "largest",
         "error": "soft"},
        {"kind": "effective_data_saturates", "where": {}, "min_epochs": 0, "max_late_worth": 0.1, "max_r_star": 200,
         "error": "soft"}]
