import pytest


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private, empty dataset cache for tests that check cache behaviour."""
    d = tmp_path / "cache"
    monkeypatch.setenv("KD_CACHE_DIR", str(d))
    return d
