import os
import sys
import warnings

import pytest
from hypothesis import HealthCheck, settings

# The repository root first, so `decoding` and `tests.models` come from this checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

settings.register_profile(
    "ci", max_examples=int(os.environ.get("DECODING_EXAMPLES", "25")), deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _quiet_reference_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
