"""Tiny randomly initialised causal LMs from `transformers` configs, with realistic output entropy.

A random model spreads probability almost uniformly over the vocabulary, which makes sampling
tests weak (every token equally likely) and greedy ties likely. ``tiny_model`` therefore unties the
output head and scales it until the mean next-token entropy is near ``TARGET_ENTROPY`` nats, about
what a small trained model shows on ordinary text.

Models are cached per architecture: building one takes ~0.1 s, and tests never modify them.
"""

from __future__ import annotations

import functools

import torch
import transformers

VOCAB = 512
TARGET_ENTROPY = 2.5  # nats
EOS, BOS, PAD = 2, 1, 0

_COMMON = dict(vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
               tie_word_embeddings=False)

ARCHITECTURES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM,
              dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256)),
    "gpt2": (transformers.GPT2Config, transformers.GPT2LMHeadModel,
             dict(n_embd=64, n_layer=2, n_head=4, n_positions=256)),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
              dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=256)),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM,
                dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, sliding_window=8, max_position_embeddings=256)),
    "gemma": (transformers.GemmaConfig, transformers.GemmaForCausalLM,
              dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=16, max_position_embeddings=256)),
    "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM,
             dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, original_max_position_embeddings=256)),
    "gpt_neox": (transformers.GPTNeoXConfig, transformers.GPTNeoXForCausalLM,
                 dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=256)),
    "opt": (transformers.OPTConfig, transformers.OPTForCausalLM,
            dict(hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                 word_embed_proj_dim=64, max_position_embeddings=256)),
    "gemma2": (transformers.Gemma2Config, transformers.Gemma2ForCausalLM,
               dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, sliding_window=8, max_position_embeddings=256)),
}


def mean_entropy(model, vocab: int = VOCAB, seed: int = 0) -> float:
    """Mean next-token entropy (nats) over random prompts."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (8, 12), generator=g)
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits, -1)
    return float(-(logp.exp() * logp).sum(-1).mean())


@functools.lru_cache(maxsize=None)
def tiny_model(arch: str = "llama", seed: int = 0, target_entropy: float = TARGET_ENTROPY):
    """A tiny ``arch`` model in eval mode whose output head gives ~``target_entropy`` nats."""
    config_cls, model_cls, extra = ARCHITECTURES[arch]
    config = config_cls(**_COMMON, **extra)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    head = model.get_output_embeddings().weight
    base = head.detach().clone()
    low, high = 1.0, 400.0
    for _ in range(30):  # bisect the head scale on entropy (which falls as the scale grows)
        mid = (low * high) ** 0.5
        with torch.no_grad():
            head.copy_(base * mid)
        if mean_entropy(model) > target_entropy:
            low = mid
        else:
            high = mid
    with torch.no_grad():
        head.copy_(base * high)
    return model


def prompts(batch: int, seed: int, min_len: int = 2, max_len: int = 9):
    """Random left-padded prompts: ``(input_ids, attention_mask)``, ids in [3, VOCAB)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=g).tolist()
    longest = max(lengths)
    ids = torch.full((batch, longest), PAD, dtype=torch.long)
    mask = torch.zeros((batch, longest), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, longest - n:] = torch.randint(3, VOCAB, (n,), generator=g)
        mask[row, longest - n:] = 1
    return ids, mask
