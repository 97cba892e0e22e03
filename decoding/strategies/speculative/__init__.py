"""Speculative decoding: a drafter proposes tokens, the target checks them all in one forward pass.

- :mod:`.loop`: the round loop (propose, verify, accept, trim, stop) and the acceptance rules;
- :mod:`.drafters`: one class per way of proposing tokens (draft model, early exit, prompt lookup);
- :mod:`.block_runner`: a forward over several tokens per row, and taking rejected tokens back;
- :mod:`.ragged`: sequences whose rows grow by different amounts;
- :mod:`.setup`: the family's checks before the first forward pass, and the drafter the settings ask for.
"""

from .drafters import Draft, Drafter, DraftModel, EarlyExit, PromptLookup
from .loop import (SpeculationStats, accept_greedy, accept_speculative_sampling, seeded_target_tokens,
                   speculative_decoding)

__all__ = ["Draft", "Drafter", "DraftModel", "EarlyExit", "PromptLookup", "SpeculationStats",
           "speculative_decoding", "accept_greedy", "accept_speculative_sampling", "seeded_target_tokens"]
