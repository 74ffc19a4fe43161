"""Sweep files: a YAML study expanded into a table of validated trial configs (no Ray here).

    name: quickstart
    base:        {source: mnist1d, steps: 2000}         # dotted overrides for every trial
    grid:        {model.name: [mlp, cnn]}               # Cartesian product
    zip:         {world: [real, real, ideal], n: [500, 2000, 500]}   # lists advance together (or a list of
                                                                     # such groups, crossed with each other)
    seeds:       2                                      # a count (0..k-1) or a list
    resources:   {cpu: 1, gpu: 0, workers: 1}           # per trial; workers = DDP world size
    max_failures: 2                                     # retries of a trial that raises
    smoke:       {base: {steps: 30}, seeds: 1}          # the smoke variant: merged over the study

Every key is checked before anything runs; a misspelt one names the file, the key and the valid ones.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from twoworlds.launch import config, trial_state
from twoworlds.launch.config import ConfigError
from twoworlds.lightning_modules.registry import did_you_mean
from twoworlds.results.claim_spec import validate_claims
from twoworlds.results.records import MANIFEST, atomic_write_text, read_json_file, yaml_problem

from twoworlds.identity import flat_items

TOP_KEYS = ("name", "description", "base", "grid", "zip", "seeds", "resources", "max_failures", "claims", "smoke")
RESOURCE_KEYS = ("cpu", "gpu", "workers")


@dataclass
class Resources:
    cpu: float = 1.0  # per DDP worker (per trial when workers == 1)
    gpu: float = 0.0  # per DDP worker; fractional values let trials share a GPU
    workers: int = 1  # DDP world size; > 1 runs Lightning DDP inside a Ray Train TorchTrainer


@dataclass
class Trial:
    name: str
    plain: dict  # the resolved, validated config as plain nested dicts (what a trial process receives)
    varying: dict  # the values of the keys that vary across the study
    _cfg: DictConfig | None = field(default=None, repr=False)

    @property
    def run_dir(self) -> Path:
        """<out_dir>/<study>/<name>, as trial_state.run_dir(cfg) (without making the typed config)."""
        return Path(self.plain["out_dir"]) / self.plain["study"] / self.name

    @property
    def cfg(self) -> DictConfig:
        """The typed config (struct mode), made on first use: a 10,000-trial sweep never makes them all."""
        if self._cfg is None:
            self._cfg = config.merge(config.schema(), self.plain)
        return self._cfg


@dataclass
class Sweep:
    name: str
    path: Path
    trials: list[Trial]
    resources: Resources
    max_failures: int = 2
    varying_keys: list[str] = field(default_factory=list)
    claims: list[dict] = field(default_factory=list)  # checked by `twoworlds report --check` (results/claims.py)

    @property
    def study_dir(self) -> Path:
        return Path(self.trials[0].plain["out_dir"]).resolve() / self.name

    def write_manifest(self, overrides: list[str], smoke: bool) -> Path:
        """<study>/sweep.json: the sweep file's text, the overrides and the expected trial names, so the
        report can quote the study and list trials that never started."""
        trial_state.writable_dir(self.study_dir)
        doc = {"name": self.name, "file": str(self.path), "text": self.path.read_text(), "smoke": smoke,
               "overrides": list(overrides), "trials": [t.name for t in self.trials], "varying": self.varying_keys,
               "claims": self.claims}
        return atomic_write_text(self.study_dir / MANIFEST, json.dumps(doc, indent=2) + "\n")

    def samples(self) -> dict[str, int]:
        """Samples drawn by each world (steps x batch_size summed over its trials), and the
        Real World's distinct samples (n summed over its trials)."""
        total = {"real": 0, "ideal": 0, "real_distinct": 0}
        for t in self.trials:
            c = t.plain
            total[c["world"]] += c["steps"] * c["batch_size"]
            if c["world"] == "real":
                total["real_distinct"] += c["n"]
        return total

    def table(self) -> str:
        keys = self.varying_keys
        widths = [max(len(k), *(len(_fmt(t.varying.get(k))) for t in self.trials)) for k in keys]
        name_w = max(len("trial"), *(len(t.name) for t in self.trials))
        head = f"{'trial':<{name_w}}  " + "  ".join(f"{k:>{w}}" for k, w in zip(keys, widths, strict=True))
        lines = [head, "-" * len(head)]
        for t in self.trials:
            vals = "  ".join(f"{_fmt(t.varying.get(k)):>{w}}" for k, w in zip(keys, widths, strict=True))
            lines.append(f"{t.name:<{name_w}}  {vals}")
        s = self.samples()
        r = self.resources
        lines += ["", f"{len(self.trials)} trials in study '{self.name}' ({self.path})",
                  f"samples consumed: real world {s['real']:,} draws of {s['real_distinct']:,} distinct samples; "
                  f"ideal world {s['ideal']:,} samples, all distinct",
                  f"per trial: {r.workers} worker(s) x {r.cpu:g} CPU, {r.gpu:g} GPU; max_failures {self.max_failures}"]
        return "\n".join(lines)


def _fmt(v) -> str:
    return "" if v is None else str(v)


def _check_keys(d: dict, valid, where: str) -> None:
    for key in d:
        if key not in valid:
            hint = did_you_mean(str(key), valid) or f" Valid: {', '.join(valid)}."
            raise ConfigError(f"unknown key '{key}' {where}.{hint}")


def _apply(cfg: DictConfig, key: str, value, where: str) -> None:
    """Set one dotted key, with the config schema's checks and an error naming file and key."""
    if key not in _ALL_KEYS:
        raise config.unknown_key_error(key, f" {where}")
    try:
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad value for '{key}' {where}: {str(e).splitlines()[0]}") from None


_ALL_KEYS = set(config.all_keys())


def _flat(d: dict | None, where: str) -> dict:
    """Accept nested or dotted mappings: {'model': {'width': 8}} == {'model.width': 8}."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where} must be a mapping of config keys to values")
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):  # only the config groups (data, model, optim, eval) nest
            out.update({f"{k}.{kk}": vv for kk, vv in _flat(v, where).items()})
        else:
            out[str(k)] = v
    return out


def _merge_smoke(doc: dict, where: str) -> dict:
    smoke = doc.get("smoke")
    if smoke is None:
        raise ConfigError(f"{where} has no 'smoke' section")
    _check_keys(smoke, [k for k in TOP_KEYS if k not in ("smoke", "name")], f"in the smoke section of {where}")
    merged = dict(doc)
    for key, value in smoke.items():
        if key in ("base", "grid", "zip", "resources") and isinstance(value, dict) \
                and not isinstance(doc.get(key), list):  # a list of zip groups is replaced, not merged
            merged[key] = {**_flat(doc.get(key), where), **_flat(value, where)} if key != "resources" \
                else {**(doc.get(key) or {}), **value}
        else:
            merged[key] = value
    merged["name"] = f"{doc['name']}-smoke"
    return merged


def shipped_sweeps() -> dict[str, Path]:
    """The studies that ship with the package (sweeps/*.yaml, installed as twoworlds/sweeps/), by name."""
    folder = resources.files("twoworlds.sweeps")
    return {p.name.removesuffix(".yaml"): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".yaml")}


def resolve_sweep(path: str | Path) -> Path:
    """`path` when it is a file, else the shipped study of that name (`quickstart`, `quickstart.yaml`)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = shipped_sweeps()
    if path.parent == Path(".") and path.name.removesuffix(".yaml") in shipped:
        return shipped[path.name.removesuffix(".yaml")]
    raise ConfigError(f"sweep file '{path}' not found (shipped studies, by name: {', '.join(sorted(shipped))})")


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = (), smoke: bool = False) -> Sweep:
    """Read, check and expand a sweep file (a path, or the bare name of a shipped study such as
    `quickstart`). `overrides` (key=value) apply to every trial, last; `seeds=...` among them replaces the file's
    seeds and makes a study of its own (`seeded_name`)."""
    path = resolve_sweep(path)
    overrides, seeds = _split_seeds(config.parse_overrides(list(overrides)))
    text = path.read_text()
    config.refuse_duplicate_keys(text, path)
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    where = f"in {path}"
    _check_keys(doc, TOP_KEYS, where)
    if not doc.get("name"):
        raise ConfigError(f"{path} needs a 'name' (the study name; outputs go to <out_dir>/<name>/)")
    if smoke:
        doc = _merge_smoke(doc, str(path))
    if seeds is not None:
        doc = {**doc, "seeds": seeds, "name": seeded_name(doc["name"], _seeds(seeds, "on the command line"))}
    res = _resources(doc.get("resources") or {}, where)
    trials, varying = _expand(doc, path, overrides)
    claims = validate_claims(doc.get("claims"), where)
    max_failures = doc.get("max_failures", 2)
    if not _is_int(max_failures) or max_failures < 0:
        raise ConfigError(f"'max_failures' {where} must be an integer >= 0 (retries of a trial that raises), "
                          f"got {max_failures!r}")
    return Sweep(doc["name"], path, trials, res, max_failures, varying, claims)


def _split_seeds(overrides: list[str]) -> tuple[list[str], object]:
    """The config overrides, and the value of `seeds=` (a count or a list, as in a sweep file) when given."""
    rest, seeds = [], None
    for item in overrides:
        key, _, value = item.partition("=")
        if key.strip() != "seeds":
            rest.append(item)
            continue
        try:
            seeds = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"'{item}' on the command line: seeds must be a count (seeds=3) or a list "
                              "(seeds=[100,101])") from None
    return rest, seeds


def seeded_name(name: str, seeds: list[int]) -> str:
    """The study of a sweep run with other seeds than its file's: never the same directory as the file's own
    trials. e.g. zoo_scatter-seeds100-101, zoo_scatter-seeds0to2 (seeds=3)."""
    ranged = len(seeds) >= 3 and seeds == list(range(seeds[0], seeds[0] + len(seeds)))
    return f"{name}-seeds" + (f"{seeds[0]}to{seeds[-1]}" if ranged else "-".join(str(s) for s in seeds))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _resources(resources: dict, where: str) -> Resources:
    if not isinstance(resources, dict):
        raise ConfigError(f"'resources' {where} must be a mapping (cpu, gpu, workers)")
    _check_keys(resources, RESOURCE_KEYS, f"under 'resources' {where}")
    for key, value in resources.items():
        ok = _is_int(value) if key == "workers" else isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            raise ConfigError(f"resources.{key} {where} must be a {'whole ' if key == 'workers' else ''}number, "
                              f"got {value!r}")
    res = Resources(**resources)
    if res.workers < 1 or res.cpu <= 0 or res.gpu < 0:
        raise ConfigError(f"resources {where}: workers must be >= 1, cpu > 0 and gpu >= 0, got {resources}")
    return res


def _seeds(value, where: str) -> list[int]:
    """`seeds`: a count k (seeds 0..k-1) or a list of seeds."""
    if _is_int(value) and value >= 1:
        return list(range(value))
    if isinstance(value, list) and value and all(_is_int(s) and s >= 0 for s in value):
        return list(value)
    raise ConfigError(f"'seeds' {where} must be a count >= 1 or a non-empty list of seeds >= 0, got {value!r}")


def resume_overrides(sweep: Sweep, overrides: list[str], smoke: bool) -> list[str]:
    """The overrides a `--resume` continues with: the stored ones (sweep.json). Tune resumes the trials as
    they were started, so new overrides, or an edited sweep file, would be recorded but never trained."""
    path = sweep.study_dir / MANIFEST
    try:
        stored = read_json_file(path)
    except (OSError, ValueError):
        raise ConfigError(f"nothing to resume: no readable {path} (run without --resume first; a study started "
                          "with out_dir=... is resumed with the same out_dir=...)") from None
    before = stored.get("overrides", [])
    new = [f"{k}={v}" for k, v in _as_dict(overrides).items() if _as_dict(before).get(k) != v]
    if new:
        raise ConfigError(f"--resume continues study '{sweep.name}' with the overrides it was started with "
                          f"({' '.join(before) or 'none'}); it would record but never train {' '.join(new)}. "
                          "Resume with those overrides (or none), or start a new study (another name:)")
    if stored.get("text") != sweep.path.read_text() or bool(stored.get("smoke")) != smoke:
        raise ConfigError(f"--resume continues study '{sweep.name}' as it was started, but {sweep.path} (or "
                          "--smoke) changed since: restore it, or start a new study (another name:)")
    return list(before)


def _as_dict(overrides: list[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides)


def _expand(doc: dict, path: Path, overrides: list[str]) -> tuple[list[Trial], list[str]]:
    where = f"in {path}"
    base = _flat(doc.get("base"), f"'base' {where}")
    grid = _flat(doc.get("grid"), f"'grid' {where}")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"'grid.{k}' {where} must be a non-empty list of values")
    seeds = _seeds(doc.get("seeds", 1), where)
    grid_points = [dict(zip(grid, vals, strict=True)) for vals in itertools.product(*grid.values())]
    # `zip` is one group of lists that advance together, or a list of such groups (crossed with each other)
    groups = doc.get("zip") if isinstance(doc.get("zip"), list) else [doc.get("zip")]
    zip_points = [{}]
    for group in groups:
        points = _zip_points(_flat(group, f"'zip' {where}"), where)
        zip_points = [{**a, **b} for a in zip_points for b in points]
    typed = _Typed(where)
    defaults = dict(flat_items(config.to_plain(config.schema())))
    command_line = typed.overrides(overrides)
    trials: dict[str, dict] = {}
    for g, z, seed in itertools.product(grid_points, zip_points, seeds):
        flat = {**defaults, "study": doc["name"]}
        for section, values in (("base", base), ("grid", g), ("zip", z)):
            for k, v in values.items():
                flat.update(typed.value(k, v, section))
        flat["seed"] = seed
        flat.update(command_line)
        if flat["world"] == "both":
            raise ConfigError(f"world=both is for single runs; a sweep lists worlds explicitly {where} "
                              "(e.g. grid: {world: [real, ideal]})")
        config.check_values(flat)
        # The Ideal World ignores n: a grid over n gives one ideal trial, not one per n.
        identity = {k: v for k, v in flat.items() if not (k == "n" and flat["world"] == "ideal")}
        trials.setdefault(json.dumps(identity, sort_keys=True), flat)
    flats = list(trials.values())
    varying = _varying_keys_flat(flats)
    extra = [k for k in varying if k not in config.in_trial_name()]
    named: dict[str, Trial] = {}
    for flat in flats:
        flat["name"] = ""
        plain = _nested(flat)
        name = config.trial_name(plain) + "".join(_name_part(k, flat[k]) for k in extra)
        config.check_name("name", name)
        if name in named:
            raise ConfigError(f"two trials of {path} would both be named '{name}'")
        plain["name"] = flat["name"] = name
        named[name] = Trial(name, plain, _varying_values(flat, varying))
    return list(named.values()), varying


def _varying_values(flat: dict, varying: list[str]) -> dict:
    values = {k: flat[k] for k in varying}
    if flat["world"] == "ideal" and "n" in values:  # the Ideal World has no n
        values["n"] = None
    return values


class _Typed:
    """Values as the schema types them, each distinct (key, value) converted by OmegaConf once: a 10,000-trial grid
    has a few dozen distinct values, and one OmegaConf config per trial took 25 ms each."""

    def __init__(self, where: str):
        self.where, self.scratch, self.done = where, config.schema(), {}
        self.leaves = set(dict(flat_items(config.to_plain(self.scratch))))

    def value(self, key: str, value, section: str) -> dict:
        """{dotted key: typed value}, or a ConfigError naming the file, the section and the key."""
        memo = (key, type(value), value) if isinstance(value, str | int | float | None) else \
            (key, list, json.dumps(value, sort_keys=True, default=repr))
        if memo not in self.done:
            if isinstance(value, str) and "${" in value:
                raise ConfigError(f"'{key}' under '{section}' {self.where}: interpolations (${{...}}) are not "
                                  "supported in sweep files; write the value")
            _apply(self.scratch, key, value, f"under '{section}' {self.where}")
            if key not in self.leaves:  # a whole section given one value (e.g. model: null)
                raise ConfigError(f"bad value for '{key}' under '{section}' {self.where}: it is a section of keys; "
                                  "set those (e.g. model.width)")
            got = OmegaConf.select(self.scratch, key)
            self.done[memo] = {key: OmegaConf.to_container(got, resolve=True) if OmegaConf.is_config(got) else got}
        return self.done[memo]

    def overrides(self, overrides: list[str]) -> dict:
        """The command line's key=value overrides as typed values (applied last, to every trial)."""
        if not overrides:
            return {}
        typed = dict(flat_items(config.to_plain(config.merge(config.schema(), overrides, " on the command line"))))
        return {k: typed[k] for k, _ in flat_items(OmegaConf.to_container(OmegaConf.from_dotlist(overrides)))
                if k in typed}


def _nested(flat: dict) -> dict:
    out: dict = {}
    for k, v in flat.items():
        node = out
        *path, leaf = k.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = v
    return out


def _name_part(key: str, value) -> str:
    """`-<leaf><value>` for a varying key the default name does not show (file paths made safe)."""
    value = str(value).replace("/", "_").replace("\\", "_").replace("..", "_")
    return f"-{key.split('.')[-1].replace('_', '')}{value}"


def _zip_points(zipped: dict, where: str) -> list[dict]:
    for k, v in zipped.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"'zip.{k}' {where} must be a non-empty list of values")
    if len({len(v) for v in zipped.values()}) > 1:
        raise ConfigError(f"the lists under 'zip' {where} must have equal lengths, got "
                          + ", ".join(f"{k}: {len(v)}" for k, v in zipped.items()))
    return [dict(zip(zipped, vals, strict=True)) for vals in zip(*zipped.values(), strict=True)] or [{}]


def _varying_keys_flat(flats: list[dict]) -> list[str]:
    """The leaf keys whose value differs between trials (the name aside), sorted."""
    return [k for k in sorted(flats[0]) if k != "name" and len({str(f[k]) for f in flats}) > 1]
