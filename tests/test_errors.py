"""Errors raised on purpose (UserError) are one line and exit 2; anything else is a bug: its traceback, exit 1."""

from __future__ import annotations

import subprocess
import sys

import pytest

# A real twoworlds process with one broken component registered beside the shipped ones: the bug is a plain
# ValueError raised where twoworlds builds the run, as a bug in a network or a source would raise it.
BROKEN = {
    "network": ("from twoworlds.lightning_modules.networks import register_network\n"
                "@register_network('broken')\n"
                "def broken(input_shape, num_classes, width, depth, patch_size=None):\n"
                "    raise ValueError('a bug: shapes do not line up')\n", ["model.name=broken"]),
    "source": ("from twoworlds.datamodules.sources import SOURCES, register_source\n"
               "SOURCES._all()\n"  # the shipped sources first, as the CLI's first lookup would load them
               "@register_source('broken')\n"
               "def broken(cfg):\n"
               "    raise ValueError('a bug: shapes do not line up')\n", ["source=broken"]),
}


@pytest.mark.parametrize("where", sorted(BROKEN))
def test_a_bug_raising_valueerror_prints_its_traceback_and_exits_1(where, tmp_path):
    code, overrides = BROKEN[where]
    program = code + "import sys\nfrom twoworlds.launch.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    done = subprocess.run([sys.executable, "-c", program, "run", "steps=5", "n=64", "progress=false",
                           f"out_dir={tmp_path}", *overrides], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError: a bug: shapes do not line up" in done.stderr
    assert "error: " not in done.stderr.splitlines()[0]


def test_a_user_error_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, "-m", "twoworlds.launch.cli", "run", "model.name=resnet", "model.depth=12",
                           f"out_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.startswith("error: model.depth: resnet depth must be one of 10, 18, 34; got 12")
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
