"""The end-of-sweep summary: every trial's status and final errors, and each Real World trial's
final gap to its Ideal World twin (same pair key: same config and seed). Read from the trials' own
summary.json files, so it works on a finished, interrupted or still-running study."""

from __future__ import annotations

from pathlib import Path

from twoworlds.results.analysis import TEST_SOFT, TRAIN_SOFT
from twoworlds.results.records import read_json_file


def collect(study_dir: str | Path, expected: list[str] | None = None) -> list[dict]:
    """One dict per trial directory (or per expected trial name: missing ones get status 'missing')."""
    study_dir = Path(study_dir)
    names = expected if expected is not None else sorted(
        p.name for p in study_dir.iterdir() if (p / "config.yaml").exists())
    out = []
    for name in names:
        path = study_dir / name / "summary.json"
        if path.exists():
            try:
                s = read_json_file(path)
            except ValueError as e:  # one unreadable file never hides the others' results
                s = {"status": "unreadable", "error": str(e)}
            # a diverged run's non-finite metrics are written as "nan"/"inf" strings (strict JSON)
            s["final"] = {k: float(v) for k, v in (s.get("final") or {}).items()}
        else:
            s = {"trial": name, "status": "missing" if not (study_dir / name).exists() else "running"}
        s.setdefault("trial", name)
        out.append(s)
    return out


def format_summary(study: str, trials: list[dict]) -> str:
    width = max([len("trial")] + [len(t["trial"]) for t in trials])
    lines = [f"{'trial':<{width}}  {'status':<11} {'steps':>7} {'test soft err':>14} {'train soft err':>15}",
             "-" * (width + 52)]
    for t in trials:
        final = t.get("final") or {}
        test, train = final.get(TEST_SOFT), final.get(TRAIN_SOFT)
        lines.append(f"{t['trial']:<{width}}  {t.get('status', '?'):<11} {t.get('steps_done', 0):>7,} "
                     f"{'' if test is None else f'{test:.4f}':>14} {'' if train is None else f'{train:.4f}':>15}")
    ideal = {t.get("pair_key"): t for t in trials if t.get("world") == "ideal"}  # the pair key includes the seed
    gaps = []
    for t in trials:
        twin = ideal.get(t.get("pair_key"))
        if t.get("world") == "real" and twin and TEST_SOFT in (t.get("final") or {}) and TEST_SOFT in (twin.get("final") or {}):
            gaps.append(f"  {t['trial']:<{width}}  {t['final'][TEST_SOFT] - twin['final'][TEST_SOFT]:+.4f}")
    if gaps:
        lines += ["", "final bootstrap error (real - ideal test soft error at the last step):", *gaps]
    counts = {}
    for t in trials:
        counts[t.get("status", "?")] = counts.get(t.get("status", "?"), 0) + 1
    lines += ["", f"study {study}: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
    return "\n".join(lines)
