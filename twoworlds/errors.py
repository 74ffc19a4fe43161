"""The one base class of the errors a user can cause: a misspelt key, a bad value, a missing or malformed
file, a study that cannot be reported. Each is raised on purpose with a one-line message that names the
problem and the fix; the CLI prints it and exits with code 2. Any other exception is a bug in twoworlds
(or a library): it keeps its traceback and exits with code 1.

Torch-free and import-free, so every layer (lightning_modules, datamodules, results, launch) can raise it.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with what the user gave, phrased for the person who typed it (one line)."""
