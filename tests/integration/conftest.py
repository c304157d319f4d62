"""Fixtures shared by integration tests."""
import pytest


@pytest.fixture
def hugepages():
    """Reserve N 2 MiB hugepages (root) for one test and release them afterwards."""
    path = "/proc/sys/vm/nr_hugepages"
    old = int(open(path).read())

    def reserve(n):
        with open(path, "w") as f:
            f.write(str(n))
        got = int(open(path).read())
        if got < n:
            pytest.skip(f"could only reserve {got} of {n} hugepages")
    yield reserve
    with open(path, "w") as f:
        f.write(str(old))
