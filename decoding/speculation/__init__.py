"""What speculative decoding needs besides its loop (``decoding/strategies/speculative.py``).

- ``setup.py``: the checks before the first forward pass, and the drafter the settings ask for;
- ``drafters.py``: one class per way of proposing tokens (draft model, early exit, prompt lookup);
- ``block_runner.py``: a forward over several tokens per row, and taking rejected tokens back;
- ``ragged.py``: sequences whose rows grow by different amounts.
"""

from .drafters import Draft, Drafter, DraftModel, EarlyExit, PromptLookup

__all__ = ["Draft", "Drafter", "DraftModel", "EarlyExit", "PromptLookup"]
