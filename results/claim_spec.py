"""The `claims:` section of a sweep file: its kinds, their fields and metrics, and the check that a sweep
file's claims are well formed (see claims.py for the syntax and the checks on data).

Every field of every kind is declared here: whether it is required, its default, and the values it takes.
`validate_claims` checks them all when a sweep file loads (so `twoworlds sweep FILE --dry-run` refuses a claim
that `report` could not evaluate) and returns the claims with their defaults filled in, which is what
claims.py reads. No pandas here: the sweep checks load without the analysis stack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
DEFAULT_BAND = 0.02  # the ± band of the predictor's scatter when the study claims none


class ClaimError(UserError, ValueError):
    """A malformed claim in a sweep file (ValueError too: callers from before UserError catch that)."""


@dataclass(frozen=True)
class Field:
    """One field of a claim: the values it takes (`check` returns what is wrong, '' when nothing is), whether it
    must be given, and its default when it need not."""

    check: object  # value -> '' or the reason it is refused
    want: str  # what it takes, in words
    required: bool = False
    default: object = None


def _number(v) -> str:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    return "" if ok else "must be a number"


def _at_least_0(v) -> str:
    return _number(v) or ("" if v >= 0 else "must be >= 0")


def _fraction(v) -> str:
    return _number(v) or ("" if 0 <= v <= 1 else "must be between 0 and 1")


def _correlation(v) -> str:
    return _number(v) or ("" if -1 <= v <= 1 else "must be between -1 and 1")


def _text(v) -> str:
    return "" if isinstance(v, str) and v.strip() else "must be a non-empty text"


def _value(v) -> str:
    return "" if isinstance(v, (str, int, float, bool)) else "must be one value (a number, a text or true/false)"


def _boolean(v) -> str:
    return "" if isinstance(v, bool) else "must be true or false"


def _metric(v) -> str:
    return "" if v in METRICS else f"is not one of {', '.join(METRICS)}.{did_you_mean(str(v), METRICS)}"


def _values(x) -> str:
    """One value, or a non-empty list of them (a `where` key matching any of its values)."""
    if isinstance(x, list):
        return "" if x and not any(_value(u) for u in x) else "must be a non-empty list of values"
    return _value(x)


def _where(v) -> str:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        return "must be a mapping of config keys to values, e.g. {model.name: mlp}"
    bad = [k for k, x in v.items() if _values(x)]
    return (f"'{bad[0]}' must map to one value or a list of values (numbers, texts or true/false)" if bad else "")


def _one_of(*choices: str):
    return lambda v: "" if v in choices else f"must be one of {', '.join(choices)}"


NUMBER, AT_LEAST_0, FRACTION = (_number, "a number"), (_at_least_0, "a number >= 0"), (_fraction, "a number in [0, 1]")
KEY, VALUE, METRIC = (_text, "a config key, e.g. model.width"), (_value, "a value"), (_metric, "a metric name")

COMMON = {"kind": Field(_text, "a claim kind", required=True), "claim": Field(_text, "the claim in words"),
          "where": Field(_where, "a mapping of config keys to values", default={})}
_CHANGE = {"key": Field(*KEY, required=True), "from": Field(*VALUE, required=True), "to": Field(*VALUE, required=True),
           "metric": Field(*METRIC, required=True)}

# Each kind with its fields; claims.py registers the check of each kind. `ONE_OF`: kinds that need at least
# one of some optional fields (a claim without any bound would hold whatever the numbers).
CLAIM_KINDS: Registry[dict[str, Field]] = Registry("claim kind")
for _kind, _fields in {
    "gap_before_convergence": {"max": Field(*AT_LEAST_0, required=True),
                               "statistic": Field(_one_of("max", "mean"), "max or mean", default="max"),
                               "curves": Field(_one_of("seeds", "averaged"), "seeds or averaged", default="seeds")},
    "memorizes_at_chance": {"train_error_max": Field(*FRACTION, required=True),
                            "test_error_min": Field(*FRACTION, required=True)},
    "effect": {**_CHANGE, "max_change": Field(*AT_LEAST_0), "min_change": Field(*NUMBER), "min_ratio": Field(*NUMBER)},
    "larger_effect": {**_CHANGE, "group": Field(*KEY, required=True), "larger": Field(*VALUE, required=True),
                      "smaller": Field(*VALUE, required=True)},
    "monotone": {"key": Field(*KEY, required=True), "metric": Field(*METRIC, required=True),
                 "direction": Field(_one_of("decreasing", "increasing"), "decreasing or increasing",
                                    default="decreasing"),
                 "tolerance": Field(*AT_LEAST_0, default=0.0)},
    # an interior maximum of `metric` along `key`, at least `min_height` above both the smallest value
    # before it and the value at the largest key; `absent: true` claims there is no such peak
    "peak": {"key": Field(*KEY, required=True), "metric": Field(*METRIC, required=True),
             "min_height": Field(*AT_LEAST_0, default=0.0), "absent": Field(_boolean, "true or false", default=False)},
    # the Deep Bootstrap predictor over the study's configurations: the Ideal World's test soft error at
    # the Real World's convergence step against the Real World's final test soft error
    "ideal_predicts_real": {"min_rank_correlation": Field(_correlation, "a number in [-1, 1]"),
                            "band": Field(*AT_LEAST_0, default=DEFAULT_BAND), "min_inside": Field(*FRACTION),
                            "max_mean_abs_error": Field(*AT_LEAST_0)},
}.items():
    CLAIM_KINDS.add(_kind, _fields)
ONE_OF = {"effect": ("max_change", "min_change", "min_ratio"),
          "ideal_predicts_real": ("min_rank_correlation", "min_inside", "max_mean_abs_error")}

# Effective data (results/repetition.py), per configuration or per group of configurations that differ
# only in n; `error` is the test error D_eff compares: soft (the default) or 0/1, the same in all of a
# study's claims of these kinds (validate_claims).
REPETITION_ERRORS = ("soft", "0/1")
_ERROR = {"error": Field(_one_of(*REPETITION_ERRORS), "soft or 0/1", default="soft")}
REPETITION_KINDS = ("effective_data_before_convergence", "effective_data_saturates", "repetition_law_predicts")
for _kind, _fields in zip(REPETITION_KINDS, (
    # before the Real World converges, D_eff/D (geometric mean over its evaluations after the first
    # epoch, mean over seeds) is at least `min_ratio` in every configuration
    {"min_ratio": Field(*AT_LEAST_0, required=True)},
    # in every configuration with at least `min_epochs` epochs, a sample drawn in the second half of
    # training is worth at most `max_late_worth` fresh ones; each group's law has a finite R* whose
    # 95% interval ends at or below `max_r_star`
    {"min_epochs": Field(*AT_LEAST_0, default=0), "max_late_worth": Field(*AT_LEAST_0, required=True),
     "max_r_star": Field(*AT_LEAST_0, required=True)},
    # the law fitted without an n predicts that n's final D_eff within ±`tolerance` (relative), for the
    # largest n (held_out: largest, the default) or for each n (held_out: each)
    {"tolerance": Field(*AT_LEAST_0, required=True),
     "held_out": Field(_one_of("largest", "each"), "largest or each", default="largest")},
), strict=True):
    CLAIM_KINDS.add(_kind, {**_fields, **_ERROR})


def normalize_claim(c, number: int, where: str) -> dict:
    """One claim checked field by field, with its defaults filled in; ClaimError naming the claim and the
    field otherwise."""
    if not isinstance(c, dict):
        raise ClaimError(f"claim {number} {where} must be a mapping with a 'kind', got {c!r}")
    name = f"claim {number}" + (f" ('{c['claim']}')" if isinstance(c.get("claim"), str) else "")
    try:
        fields = {**COMMON, **CLAIM_KINDS[str(c.get("kind"))]}
    except ValueError as e:
        raise ClaimError(f"{name} {where}: {e}") from None
    name += f" ({c['kind']})"
    unknown = sorted(set(c) - set(fields))
    if unknown:
        raise ClaimError(f"{name} {where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}."
                         f"{did_you_mean(unknown[0], fields)}")
    out = {}
    for key, f in fields.items():
        if key not in c:
            if f.required:
                raise ClaimError(f"{name} {where}: '{key}' is missing ({f.want})")
            if f.default is not None:
                out[key] = dict(f.default) if isinstance(f.default, dict) else f.default  # never one shared dict
            continue
        problem = f.check(c[key])
        if problem:
            raise ClaimError(f"{name} {where}: {key} {c[key]!r} {problem}")
        out[key] = c[key]
    need = ONE_OF.get(c["kind"], ())
    if need and not any(k in c for k in need):
        raise ClaimError(f"{name} {where}: needs at least one bound of {', '.join(need)} (a claim without one "
                         "holds whatever the numbers)")
    return out


def validate_claims(claims, where: str) -> list[dict]:
    """The `claims:` section of a sweep file, every field checked (normalize_claim), defaults filled in."""
    if claims is None:
        return []
    if not isinstance(claims, list):
        raise ClaimError(f"'claims' {where} must be a list of mappings with a 'kind'")
    out = [normalize_claim(c, i + 1, where) for i, c in enumerate(claims)]
    errors = {i + 1: c["error"] for i, c in enumerate(out) if c["kind"] in REPETITION_KINDS}
    if len(set(errors.values())) > 1:
        raise ClaimError(f"the effective-data claims {where} name different errors "
                         f"({', '.join(f'claim {k}: {v}' for k, v in errors.items())}); D_eff is computed on one")
    return out
