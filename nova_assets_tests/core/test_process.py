from __future__ import annotations

import os
import subprocess
import sys

from nova_assets.core.process import at_nice

#: prints its own nice value and that of a child it starts
PARENT_AND_CHILD = (
    "import os, subprocess, sys\n"
    "child = subprocess.check_output([sys.executable, '-c', 'import os; print(os.nice(0))'])\n"
    "print(os.nice(0), child.decode().strip())\n"
)


def test_a_child_starts_at_the_nice_given_and_passes_it_on() -> None:
    """The child is lowered, and what it starts inherits that; the parent is untouched."""
    before = os.nice(0)
    lowered = subprocess.run(
        [sys.executable, "-c", PARENT_AND_CHILD], capture_output=True, text=True, check=True, preexec_fn=at_nice(3)
    )
    assert lowered.stdout.split() == [str(min(19, before + 3))] * 2
    assert os.nice(0) == before
    same = subprocess.run(
        [sys.executable, "-c", PARENT_AND_CHILD], capture_output=True, text=True, check=True, preexec_fn=at_nice(0)
    )
    assert same.stdout.split() == [str(before)] * 2
