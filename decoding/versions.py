"""The one place where behaviour that depends on the installed ``transformers`` release is chosen.

The reference changes between releases in ways that change tokens or break calls (the cache's
constructor, keyword names, beam sampling's candidate order). Every such difference is decided here,
from the installed version, and imported by the code that needs it; nothing else in the package
looks at ``transformers.__version__``.

Each switch below names the release that introduced the change and what it changes. The releases
the project checks token for token are :data:`VERIFIED`; importing ``decoding`` beside any other
release warns once (:class:`~decoding.errors.UnverifiedReferenceWarning`): it may work, but equality
with that release's ``model.generate`` has not been tested.
"""

from __future__ import annotations

import warnings
from typing import Any

import transformers
from packaging.version import Version
from transformers import DynamicCache

from .errors import UnverifiedReferenceWarning

#: The installed reference release.
INSTALLED = Version(transformers.__version__)

#: The releases the equivalence tests run against (``.ci/run`` builds one environment for each), and
#: what is checked there. 4.55.4 is the last release that runs contrastive search, DoLa, group beam
#: search and constrained beam search inside ``model.generate``; those are checked against it.
VERIFIED: dict[str, str] = {
    "4.55.4": "contrastive search, DoLa, diverse and constrained beam search (tests/transformers_4_55)",
    "5.23.0": "everything (the pinned release of constraints.txt)",
    "5.24.0": "everything (constraints-5.24.txt)",
}

#: Before 4.56 a ``DynamicCache`` took no config (its layers were created as they were filled).
CACHE_TAKES_CONFIG = INSTALLED >= Version("4.56")

#: 5.24 renamed the cache keyword of ``model.forward`` / ``generate`` and the cache field of model and
#: generate outputs from ``past_key_values`` to ``cache`` (the old name still works, with a warning).
CACHE_KEYWORD = "cache" if INSTALLED >= Version("5.24") else "past_key_values"

#: 5.24: beam sampling sorts the ``2 * num_beams`` tokens it draws per prompt by score (highest first)
#: before choosing the beams; 5.23 keeps them in the order they were drawn. The set of candidates is the
#: same, but which candidate fills which beam slot (and so ties, and the beam indices) differ.
BEAM_SAMPLE_SORTS_DRAWS = INSTALLED >= Version("5.24")

#: 5.24: ``prefix_allowed_tokens_fn`` is told ``max(num_beams, num_return_sequences)`` rows per prompt
#: (before, ``num_beams``): with sampling and several return sequences, the batch id it is given
#: is ``row // num_return_sequences`` instead of ``row // 1``.
PREFIX_ROWS_COUNT_RETURN_SEQUENCES = INSTALLED >= Version("5.24")

#: 4.55 penalised the pad ids of a left-padded prompt in ``repetition_penalty``; the 5 series leaves each
#: row's left padding out (the releases between 4.55.4 and 5.0 are not checked).
REPETITION_PENALTY_SKIPS_PADDING = INSTALLED >= Version("5.0")


def new_dynamic_cache(config: Any) -> DynamicCache:
    """An empty ``DynamicCache`` for a model whose (decoder) text config is ``config``."""
    return DynamicCache(config=config) if CACHE_TAKES_CONFIG else DynamicCache()


def check_installed() -> None:
    """Warn once when the installed reference is not one of :data:`VERIFIED`."""
    if str(INSTALLED) not in VERIFIED:
        warnings.warn(
            f"transformers {INSTALLED} is installed; decoding is verified token for token against "
            f"{', '.join(VERIFIED)} only. It may work, but equality with this release's model.generate is "
            f"untested: install a verified release (pip install -c constraints.txt -e .) to be sure.",
            UnverifiedReferenceWarning, stacklevel=3)


check_installed()
