"""twoworlds: train the same model in the Real World (n samples reused) and the Ideal World (fresh
samples every step) and compare them step by step (the Deep Bootstrap framework).

The repository's top-level folders are this package's subpackages: `twoworlds.launch`,
`twoworlds.datamodules`, `twoworlds.lightning_modules`, `twoworlds.results`. For a notebook:

    import twoworlds
    cfg = twoworlds.load_config(overrides=["model.name=cnn", "n=1000", "steps=500"])
    summary = twoworlds.run(cfg)                       # one trial; its files go to runs/<study>/<trial>/
    study = twoworlds.load_study("runs/quickstart")    # study.trials, study.curves: pandas tables
"""

from __future__ import annotations

from pathlib import Path

# From a source checkout (an editable install, `ray job submit --working-dir .`, PYTHONPATH=<repo>)
# the subpackages are the repository's top-level folders beside this one; a wheel installs them
# inside this package instead (pyproject.toml's package-dir).
_HERE = Path(__file__).resolve().parent
if not (_HERE / "launch").is_dir() and (_HERE.parent / "launch" / "__init__.py").is_file():
    __path__.append(str(_HERE.parent))  # noqa: F821  (__path__ is set for packages)

__all__ = ["load_config", "run", "load_study"]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()):
    """The validated run config: schema defaults, then a YAML file (optional), then `key=value`
    overrides. A misspelt key or bad value raises `twoworlds.launch.config.ConfigError`."""
    from twoworlds.launch.config import load

    return load(path, list(overrides))


def run(cfg) -> dict:
    """Train one trial of `cfg` (from `load_config`; `world` real or ideal) and return its summary
    (status, final metrics, and `rows`: every evaluation). Writes runs/<study>/<trial>/ as the CLI does."""
    from twoworlds.launch.run import run_trial

    return run_trial(cfg)


def load_study(study_dir: str | Path):
    """A study's trials and curves as pandas tables (`.trials`: one row per trial; `.curves`: one row
    per trial and evaluation step), read from runs/<study>/ as `twoworlds report` reads it."""
    from twoworlds.results.aggregate import load_study as _load

    return _load(study_dir)
