from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nova_assets.core.process import at_nice, group_nice

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


SLEEP = "import time; time.sleep(5)"


@pytest.mark.skipif(
    group_nice(os.getpid()) is None, reason="this kernel does not group processes by session (no autogroup)"
)
def test_a_child_in_a_new_session_lowers_its_scheduling_group_too() -> None:
    """Where the kernel groups by session, a child in a new session gets its group's nice too:
    with the process's nice alone, busy loops at nice 10 took an equal share from a loop at nice
    0 in another session (0.63-0.68 of a core on 2 cores, against 0.99 with the group's nice)."""
    children = [
        subprocess.Popen([sys.executable, "-c", SLEEP], start_new_session=True, preexec_fn=at_nice(10))
        for _ in range(2)
    ]
    try:
        assert [group_nice(p.pid) for p in children] == [10] * len(children)
        # not a session leader: its group is its parent's, which is left alone
        inner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"], preexec_fn=at_nice(10))
        assert group_nice(inner.pid) == group_nice(os.getpid()) and group_nice(os.getpid()) != 10
        inner.wait()
    finally:
        for p in children:
            p.kill()
            p.wait()
