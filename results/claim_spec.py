"""The `claims:` section of a sweep file: its kinds, their parameters and metrics, and the check
that a sweep file's claims are well formed (see claims.py for the syntax and the checks on data).

No pandas here: `twoworlds sweep --dry-run` validates a sweep file's claims without the analysis stack.
"""

from __future__ import annotations

from twoworlds.lightning_modules.registry import Registry, did_you_mean

from twoworlds.errors import UserError

# Per-configuration metrics (columns of the report's configurations table, means over seeds).
METRICS = {
    "real_final": "Real World final test soft error",
    "ideal_final": "Ideal World final test soft error",
    "gap_final": "bootstrap error at the last step",
    "max_gap_before": "largest |bootstrap error| before convergence",
    "converged_at": "Real World convergence step (the step budget when it never converged)",
    "ideal_steps_to_target": "Ideal World steps to the target test soft error",
    "ideal_at_convergence": "Ideal World test soft error at the Real World's convergence step",
    "real_final_error": "Real World final test 0/1 error",
    "ideal_final_error": "Ideal World final test 0/1 error",
    "gap_final_error": "bootstrap error in test 0/1 error at the last step",
    "real_weight_movement": "Real World relative weight movement |w - w0| / |w0| at the last step",
    "ideal_weight_movement": "Ideal World relative weight movement |w - w0| / |w0| at the last step",
}
STEP_METRICS = ("converged_at", "ideal_steps_to_target")  # counted in steps
RATIO_METRICS = ("real_weight_movement", "ideal_weight_movement")  # plain ratios; the others are error rates

# Each kind with the parameters it takes; claims.py registers the check of each kind.
CLAIM_KINDS: Registry[frozenset[str]] = Registry("claim kind")
for _kind, _params in {
    "gap_before_convergence": {"max", "statistic", "curves"},
    "memorizes_at_chance": {"train_error_max", "test_error_min"},
    "effect": {"key", "from", "to", "metric", "max_change", "min_change", "min_ratio"},
    "larger_effect": {"key", "from", "to", "metric", "group", "larger", "smaller"},
    "monotone": {"key", "metric", "direction", "tolerance"},
    # an interior maximum of `metric` along `key`, at least `min_height` above both the smallest value
    # before it and the value at the largest key; `absent: true` claims there is no such peak
    "peak": {"key", "metric", "min_height", "absent"},
    # the Deep Bootstrap predictor over the study's configurations: the Ideal World's test soft error at
    # the Real World's convergence step against the Real World's final test soft error
    "ideal_predicts_real": {"min_rank_correlation", "band", "min_inside", "max_mean_abs_error"},
}.items():
    CLAIM_KINDS.add(_kind, frozenset(_params))
COMMON = frozenset({"kind", "claim", "where"})  # keys every claim may have

# Effective data (results/repetition.py), per configuration or per group of configurations that differ
# only in n; `error` is the test error D_eff compares: soft (the default) or 0/1, the same in all of a
# study's claims of these kinds.
REPETITION_ERRORS = ("soft", "0/1")
REPETITION_KINDS = ("effective_data_before_convergence", "effective_data_saturates", "repetition_law_predicts")
for _kind, _params in zip(REPETITION_KINDS, (
    # before the Real World converges, D_eff/D (geometric mean over its evaluations after the first
    # epoch, mean over seeds) is at least `min_ratio` in every configuration
    {"min_ratio", "error"},
    # in every configuration with at least `min_epochs` epochs, a sample drawn in the second half of
    # training is worth at most `max_late_worth` fresh ones; each group's law has a finite R* whose
    # 95% interval ends at or below `max_r_star`
    {"min_epochs", "max_late_worth", "max_r_star", "error"},
    # the law fitted without an n predicts that n's final D_eff within ±`tolerance` (relative), for the
    # largest n (held_out: largest, the default) or for each n (held_out: each)
    {"tolerance", "held_out", "error"},
), strict=True):
    CLAIM_KINDS.add(_kind, frozenset(_params))


class ClaimError(UserError, ValueError):
    """A malformed claim in a sweep file."""


def validate_claims(claims, where: str) -> list[dict]:
    """Check the `claims:` section of a sweep file: kinds, parameter names, metrics."""
    if claims is None:
        return []
    if not isinstance(claims, list):
        raise ClaimError(f"'claims' {where} must be a list of mappings with a 'kind'")
    for i, c in enumerate(claims):
        try:
            params = CLAIM_KINDS[str(c.get("kind") if isinstance(c, dict) else c)] | COMMON
        except ValueError as e:
            raise ClaimError(f"claim {i + 1} {where}: {e}") from None
        unknown = set(c) - params
        if unknown:
            raise ClaimError(f"claim {i + 1} ({c['kind']}) {where}: unknown key(s) {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(sorted(params))}.{did_you_mean(sorted(unknown)[0], params)}")
        if c.get("statistic", "max") not in ("max", "mean") or c.get("curves", "seeds") not in ("seeds", "averaged"):
            raise ClaimError(f"claim {i + 1} ({c['kind']}) {where}: statistic must be max or mean, curves seeds "
                             f"or averaged")
        if not isinstance(c.get("absent", False), bool):
            raise ClaimError(f"claim {i + 1} ({c['kind']}) {where}: absent must be true or false, got {c['absent']!r}")
        if "metric" in c and c["metric"] not in METRICS:
            raise ClaimError(f"claim {i + 1} ({c['kind']}) {where}: metric '{c['metric']}' is not one of "
                             f"{', '.join(METRICS)}.{did_you_mean(c['metric'], METRICS)}")
    _validate_repetition(claims, where)
    return claims


def _validate_repetition(claims: list[dict], where: str) -> None:
    """The effective-data claims name a known error, all the same one (the report computes D_eff once)."""
    errors = {}
    for i, c in enumerate(claims):
        if c.get("kind") not in REPETITION_KINDS:
            continue
        error = c.get("error", "soft")
        if error not in REPETITION_ERRORS:
            raise ClaimError(f"claim {i + 1} ({c['kind']}) {where}: error must be one of "
                             f"{', '.join(REPETITION_ERRORS)}, got {error!r}")
        if c.get("held_out", "largest") not in ("largest", "each"):
            raise ClaimError(f"claim {i + 1} ({c['kind']}) {where}: held_out must be largest or each, "
                             f"got {c['held_out']!r}")
        errors[i + 1] = error
    if len(set(errors.values())) > 1:
        raise ClaimError(f"the effective-data claims {where} name different errors "
                         f"({', '.join(f'claim {k}: {v}' for k, v in errors.items())}); D_eff is computed on one")
