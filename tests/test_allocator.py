"""zoo.allocator: the two glibc policies take the settings they name and have their effect.

The effect is measured in a fresh process each time (a policy is process-wide): the page
faults of a training-like loop that frees and allocates a 10 MB tensor, like a fresh gradient,
every step. Both runs start from the fixed threshold (a process that ran ``zoo embed``): glibc's
own dynamic threshold would also keep this one block, so only from there does a no-op, or a
``keep_freed_memory`` that set one of its two options, show.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from zoo import allocator

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")


def test_options_reach_mallopt(monkeypatch):
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(allocator, "_mallopt", lambda: lambda o, v: calls.append((o, v)) or 1)
    assert allocator.keep_freed_memory(1 << 20) is True
    assert calls == [(-3, 1 << 20), (-1, 1 << 20)]  # M_MMAP_THRESHOLD, then M_TRIM_THRESHOLD
    calls.clear()
    assert allocator.fixed_mmap_threshold(4096) is True
    assert calls == [(-3, 4096)]
    monkeypatch.setattr(allocator, "_mallopt", lambda: None)  # no glibc: nothing, said so
    assert allocator.keep_freed_memory() is False and allocator.fixed_mmap_threshold() is False


@pytest.mark.parametrize("limit", [0, 2**31])
def test_a_limit_outside_a_c_int_is_refused(limit):
    with pytest.raises(ValueError, match="C int"):
        allocator.keep_freed_memory(limit)


_FAULTS = textwrap.dedent(
    """
    import resource, sys
    import torch
    from zoo import allocator
    assert allocator.fixed_mmap_threshold()  # the embed's policy first
    if sys.argv[1] == "keep":  # then a training run in the same process
        assert allocator.keep_freed_memory()
    x = torch.ones(1)
    for step in range(30):  # a 10 MB gradient, freed and made again each step
        grad = torch.zeros(10, 64, 4096)
        grad.add_(1.0)
        del grad
        if step == 9:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(policy: str) -> int:
    """Minor page faults of the last 20 steps of the loop above under ``policy``."""
    out = subprocess.run(
        [sys.executable, "-c", _FAULTS, policy], capture_output=True, text=True, check=True
    )
    return int(out.stdout.split()[-1])


@LINUX
def test_kept_memory_spares_the_page_faults_of_fresh_tensors():
    """A 10 MB block freed and allocated again: in its own mapping (the fixed threshold) each
    step faults its 2 560 pages in again; kept, the pages stay and the steps fault ~nothing.
    (Measured here: 51 220 and 0; with only the mmap threshold raised, 50 560: the freed heap
    top is trimmed; with only the trim threshold, 51 220.)"""
    fixed, kept = _faults("fixed"), _faults("keep")
    assert fixed > 20 * 2000  # 20 steps of ~2 560 pages each
    assert kept < 1000
