"""A run's identity, declared once, on the schema's dataclass fields (`metadata=role(...)`): whether the default
trial name shows a key, whether it is part of the pair key and of the config hash, whether it is bookkeeping
(where files go and how a run reports, never a column of the report's tables).

- config hash: a trial directory holds the results of one config hash, never a mix.
- pair key: the Real World and Ideal World runs that share it are compared (world and n are left out).
- FFCV cache key: what a pool's .beton content depends on beyond the source: the `data` and `corrupt` sections.

One rule keeps every existing run's hashes: **a value equal to its default is left out of the hashes.** A key
added to the schema therefore changes no hash until someone sets it. The keys that were hashed before this rule
(`HASHED_AT_DEFAULT`, frozen on 2026-12-02 with the hashes recorded in tests/data/identity.json) stay in their
hashes at any value; a section that joined a hash later as a unit (`JOINED_LATER`: the corruptions, in the pair
key and the cache key) is left out while all its keys equal their defaults, and hashed whole otherwise.

A section's flags (the metadata on a field whose value is a dataclass) are the defaults of its keys' flags.
Import-free, like twoworlds/errors.py: every layer declares its fields with it.
"""

from __future__ import annotations

import functools
from dataclasses import MISSING, dataclass, fields, is_dataclass

CONFIG_HASH, PAIR_KEY, CACHE_KEY = "config_hash", "pair_key", "cache_key"
_FLAGS = {"name": False, PAIR_KEY: True, CONFIG_HASH: True, CACHE_KEY: True, "bookkeeping": False}


def role(*, name: bool | None = None, pair_key: bool | None = None, config_hash: bool | None = None,
        bookkeeping: bool | None = None) -> dict:
    """A field's `metadata`: only the flags given (the others come from its section, else the defaults: in both
    hashes, not in the name, not bookkeeping)."""
    given = {"name": name, PAIR_KEY: pair_key, CONFIG_HASH: config_hash, "bookkeeping": bookkeeping}
    return {"identity": {k: v for k, v in given.items() if v is not None}}


def bookkeeping(*, config_hash: bool = False) -> dict:
    """Where a trial's files go and how it reports: never in the pair key, nor (unless said) in the config hash."""
    return role(bookkeeping=True, pair_key=False, config_hash=config_hash)


_V1 = {  # section: its keys hashed (at any value) before the default rule; frozen, never extended
    "": "study name out_dir world n steps batch_size seed source loader device precision augment channels_last "
        "check_every progress",
    "data.": "seed test_size pool_size teacher_shape teacher_classes teacher_width data_dir download x_file y_file "
             "test_x_file test_y_file npz test_fraction num_classes cache_dir",
    "model.": "name width depth patch_size",
    "optim.": "name lr momentum nesterov weight_decay betas schedule warmup_steps milestones gamma",
    "eval.": "points dense batch_size train_size",
    "early_stop.": "train_error_below patience",
    "corrupt.": "label_noise random_labels pixels test",
}
HASHED_AT_DEFAULT = frozenset(section + k for section, keys in _V1.items() for k in keys.split())
JOINED_LATER = {PAIR_KEY: ("corrupt",), CACHE_KEY: ("corrupt",)}


@dataclass(frozen=True)
class Leaf:
    flags: dict
    default: object


@functools.cache
def leaves(schema: type, prefix: str = "") -> dict[str, Leaf]:
    """Every dotted key of a dataclass schema (e.g. 'optim.lr', or 'data.seed' with prefix 'data'), with its
    effective flags and its default."""
    return _leaves(schema, f"{prefix}." if prefix else "", _FLAGS)


def _leaves(schema: type, prefix: str, inherited: dict) -> dict[str, Leaf]:
    out = {}
    for f in fields(schema):
        flags = {**inherited, **f.metadata.get("identity", {})}
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if is_dataclass(default):
            out.update(_leaves(type(default), f"{prefix}{f.name}.", flags))
        else:
            out[prefix + f.name] = Leaf(flags, default)
    return out


def keys_with(schema: type, flag: str) -> tuple[str, ...]:
    """The dotted keys whose `flag` is set, e.g. keys_with(RunConfig, 'name')."""
    return tuple(k for k, leaf in leaves(schema).items() if leaf.flags[flag])


def hashed(schema: type, plain: dict, which: str, prefix: str = "") -> dict:
    """The part of a resolved config (`plain`, nested dicts) that makes the `which` hash, nested the same way.
    A key the schema does not know (an older schema's, in a stored config) is kept: it changed the numbers then."""
    known = leaves(schema, prefix)
    flat = dict(flat_items(plain, f"{prefix}." if prefix else ""))
    defaulted = {section for section in JOINED_LATER.get(which, ())
                 if all(v == known[k].default for k, v in flat.items() if k in known and k.startswith(section + "."))}
    out: dict = {}
    for k, v in flat.items():
        if isinstance(v, dict):  # an empty section: nothing to hash
            continue
        leaf = known.get(k)
        if leaf is not None:
            if not leaf.flags[which]:
                continue
            always = k in HASHED_AT_DEFAULT and k.split(".")[0] not in defaulted
            if not always and v == leaf.default:
                continue
        node = out
        parts = k.removeprefix(f"{prefix}." if prefix else "").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = v
    return out


def flat_items(d: dict, prefix: str = ""):
    """(dotted key, value) of every leaf of nested dicts: {'optim': {'lr': 0.1}} -> ('optim.lr', 0.1)."""
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from flat_items(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v
