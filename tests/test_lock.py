"""The directory lock: exclusive between open files (so between processes), released by the
kernel when its holder dies, and a holder that died is named."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tti_ray.lock import LOCK_NAME, DirLock, LockedError


def test_second_holder_is_refused_and_named(tmp_path):
    with DirLock(tmp_path):
        with pytest.raises(LockedError, match=rf"--out: .* in use .*pid {os.getpid()} on "):
            DirLock(tmp_path).acquire()
    with DirLock(tmp_path) as again:  # released
        assert again.stale is None


def test_clean_release_empties_the_file(tmp_path):
    with DirLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"pid {os.getpid()} on ")
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_a_dead_holder_leaves_no_lock_but_is_named(tmp_path):
    code = ("import os, sys; from tti_ray.lock import DirLock; "
            "DirLock(sys.argv[1]).acquire(); print(os.getpid(), flush=True); os._exit(9)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                       text=True, timeout=60)
    pid = int(r.stdout.split()[0])
    with DirLock(tmp_path) as lock:
        assert lock.stale is not None and lock.stale.startswith(f"pid {pid} on ")
