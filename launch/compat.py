"""Every use of a library's internals (not its public API), in one place, each guarded by a version check.

Ray is supported from `RAY_OLDEST` to `RAY_NEWEST` (pyproject.toml states the same range; tests/test_ray_versions.py
installs the oldest and runs a smoke sweep on it). Where Ray offers public configuration, twoworlds uses that
instead (environment variables read when Ray is imported or when a Tuner starts; see launch/ray_start.py).

Two internals remain, both for a process that imported Ray before twoworlds could configure it:
- a local instance on 127.0.0.1 with token auth: Ray reads `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` and `RAY_AUTH_MODE`
  when it is imported. `twoworlds sweep` sets both before its first `import ray`, so it needs no internal; a
  notebook or a test that imported Ray first gets the cached values refreshed here, on the versions checked;
- Ray Train V2 logs "Reporting training result" once per evaluation through a logger named after its file path;
  it is found through that module, and left alone on a Ray that lacks it.
"""

from __future__ import annotations

import logging
import os
import sys

from twoworlds.errors import ConfigError

RAY_OLDEST, RAY_NEWEST = (2, 52), (2, 60)
log = logging.getLogger(__name__)

# Ray's switches for "this node is 127.0.0.1" (its macOS/Windows default) and for token authentication
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def ray_version() -> tuple[int, int]:
    import ray
    return _version(ray.__version__)


def _checked(what: str) -> None:
    """A one-line ConfigError when this Ray is outside the range where `what` was checked."""
    import ray
    if not RAY_OLDEST <= ray_version() <= RAY_NEWEST:
        lo, hi = (".".join(map(str, v)) for v in (RAY_OLDEST, RAY_NEWEST))
        raise ConfigError(f"this Ray ({ray.__version__}) is outside the range twoworlds was tested with ({lo} to {hi}.x), "
                          f"so it cannot {what}; install ray>={lo},<{RAY_NEWEST[0]}.{RAY_NEWEST[1] + 1}")


def local_ray_env() -> None:
    """Token auth and loopback-only binding for a local instance this process starts. Before Ray's first import the
    environment is all it takes (and child processes inherit it); after it, Ray's cached copies are refreshed."""
    already = all(os.environ.get(k) == v for k, v in LOCAL_RAY_ENV.items())
    os.environ.update(LOCAL_RAY_ENV)
    if "ray" not in sys.modules or already:  # read at import, from the environment that holds them
        return
    _checked("keep a local instance, in a process that imported Ray first, on 127.0.0.1 with token auth "
             "(or set RAY_AUTH_MODE=token and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is imported)")
    try:
        from ray._private import ray_constants
        from ray._private.authentication.authentication_token_setup import _enable_token_auth
    except ImportError as e:  # refuse rather than start an instance that may listen openly
        raise ConfigError(f"this Ray lacks what twoworlds uses to keep a local instance on 127.0.0.1 with token auth "
                          f"in a process that imported Ray first ({e}); start the sweep in a fresh process (`twoworlds "
                          "sweep`), or set RAY_AUTH_MODE=token and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Ray is "
                          "imported") from None
    ray_constants.ENABLE_RAY_CLUSTER = False
    _enable_token_auth()  # ray.init then creates ~/.ray/auth_token if there is none


def quiet_train_v2_reports() -> None:
    """Train V2's per-report log lines (its logger is named after its file, outside the 'ray.train' tree)."""
    try:
        if not RAY_OLDEST <= ray_version() <= RAY_NEWEST:
            raise ImportError("an untested Ray")
        from ray.train.v2._internal.execution import context
    except ImportError as e:
        log.debug("Ray Train V2's report lines stay on (%s)", e)
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
