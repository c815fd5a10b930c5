"""task2vec.memory: the allocator setting takes effect on glibc, and freed large blocks are reused."""

import resource
import sys

import pytest
import torch

from task2vec.memory import keep_freed_memory


def test_refuses_a_non_positive_threshold():
    assert keep_freed_memory(0) is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_large_tensors_reuse_freed_memory_without_page_faults():
    assert keep_freed_memory() is True
    for _ in range(20):  # warm: the first blocks are new pages (measured: none faults after the first dozen)
        torch.ones(64 << 20 >> 2).sum()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        torch.ones(64 << 20 >> 2).sum()  # 64 MiB, above glibc's default mmap threshold (32 MiB at most)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    fresh = 10 * (64 << 20) // resource.getpagesize()  # what ten newly mapped blocks fault (measured: 163,902)
    assert faults < fresh // 10, f"{faults} minor page faults for 10 reused 64 MiB blocks"
