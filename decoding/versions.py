"""The one place where behaviour that depends on the installed ``transformers`` release is chosen.

The reference changes between releases in ways that change tokens or break calls (the cache's
constructor, keyword names, beam sampling's candidate order). Every such difference is decided here,
from the installed version, and imported by the code that needs it; nothing else in the package
looks at ``transformers.__version__``.
"""

from __future__ import annotations

from typing import Any

import transformers
from packaging.version import Version
from transformers import DynamicCache

#: The installed reference release.
INSTALLED = Version(transformers.__version__)

#: Before 4.56 a ``DynamicCache`` took no config (its layers were created as they were filled).
CACHE_TAKES_CONFIG = INSTALLED >= Version("4.56")


def new_dynamic_cache(config: Any) -> DynamicCache:
    """An empty ``DynamicCache`` for a model whose (decoder) text config is ``config``."""
    return DynamicCache(config=config) if CACHE_TAKES_CONFIG else DynamicCache()
