import pytest


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One base-model cache for every end-to-end test of the session: the
    smoke base is built once and reused."""
    return tmp_path_factory.mktemp("model-cache")
