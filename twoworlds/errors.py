"""The one base class of the errors a user can cause: a misspelt key, a bad value, a missing or malformed
file, a study that cannot be reported. Each is raised on purpose with a one-line message that names the
problem and the fix; the CLI prints it and exits with code 2. Any other exception is a bug in twoworlds
(or a library): it keeps its traceback and exits with code 1.

Torch-free and import-free, so every layer (lightning_modules, datamodules, results, launch) can raise it.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave, phrased for the person who typed it (one line)."""


# Both are ValueErrors too, as they were before UserError: a caller that caught ValueError keeps working. The CLI
# tells them from a bug by UserError alone.
class ConfigError(UserError, ValueError):
    """A configuration problem: a misspelt key, a bad value, a combination that cannot run (e.g. a pool too small
    for the step budget). Raised where the problem is found, in any layer."""


class DataError(UserError, ValueError):
    """The data a run reads is not what it should be: a missing, malformed or unreadable file, or a cache that
    served other samples than the plan's. The run stops, and the CLI says so in one line."""
