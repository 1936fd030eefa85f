import pytest

import oracle


def pytest_configure(config):
    try:
        oracle.verify_binary()
    except RuntimeError as e:
        raise pytest.UsageError(str(e))


@pytest.fixture
def candidate(tmp_path):
    """An empty candidate root: run_case writes <root>/<case name>/out.*.npy there."""
    root = tmp_path / "candidate"
    root.mkdir()
    return root
