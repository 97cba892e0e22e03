"""Long use: many generations in one process, memory given back by close()/release, two threads at once.

The figures of a full run come from benchmarks/long_use.py; these tests bound them.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

import decoding
from tests.models import tiny_model
from tests.tokenizer import byte_tokenizer

ROOT = Path(__file__).resolve().parent.parent
MIB = 2 ** 20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS is read from /proc (Linux)")
def test_a_thousand_short_generations_do_not_grow_memory():
    model, ids = tiny_model("llama"), torch.tensor([[5, 6, 7, 8]])
    kinds = [dict(), dict(do_sample=True, seed=1), dict(num_beams=2), dict(prompt_lookup_num_tokens=2)]
    outputs = {}
    for i in range(1000):
        kwargs = kinds[i % len(kinds)]
        out = decoding.generate(model, ids, max_new_tokens=2, **kwargs)
        outputs.setdefault(i % len(kinds), out)
        assert torch.equal(out, outputs[i % len(kinds)])
        if i == 99:   # after the allocator and caches warmed up
            gc.collect()
            warm = rss()
    gc.collect()
    assert rss() - warm < 16 * MIB, f"RSS grew by {(rss() - warm) / MIB:.1f} MiB over 900 calls"


LOAD_AND_CLOSE = textwrap.dedent("""
    import gc, os, sys, tempfile, warnings
    warnings.filterwarnings("ignore")
    sys.path.insert(0, os.getcwd())
    import torch, transformers, decoding
    from tests.tokenizer import byte_tokenizer

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    folder = tempfile.mkdtemp()
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    for way in ("warm-up", "close", "release"):   # the first load also fills the allocator's caches
        gc.collect()
        before = rss()
        loaded = decoding.load(folder, device="cpu")
        decoding.generate(loaded.model, torch.tensor([[5, 6, 7]]), max_new_tokens=2)
        during = rss()
        if way != "release":
            loaded.close()
        else:
            decoding.release(loaded.model)
        del loaded
        gc.collect()
        print(way, before, during, rss())
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS is read from /proc (Linux)")
def test_close_and_release_give_the_memory_back():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-c", LOAD_AND_CLOSE], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for line in result.stdout.splitlines()[1:]:
        way, before, during, after = line.split()[0], *map(int, line.split()[1:])
        assert during - before > 30 * MIB, f"{way}: the model did not load ({(during - before) / MIB:.0f} MiB)"
        assert after <= before * 1.03, f"{way}: {after / MIB:.0f} MiB after, {before / MIB:.0f} MiB before"


def test_one_model_from_two_threads_with_iterator_streamers():
    """Two generations of one model at once, each streaming to its own consumer: both as if alone."""
    model, tok = tiny_model("llama"), byte_tokenizer()
    prompts = [torch.tensor([[5, 6, 7, 8]]), torch.tensor([[40, 41, 42]])]
    alone = [decoding.generate(model, ids, max_new_tokens=12) for ids in prompts]
    streamers = [decoding.TextIteratorStreamer(tok, skip_prompt=True, timeout=60) for _ in prompts]
    results, errors = {}, []

    def produce(i):
        try:
            results[i] = decoding.generate(model, prompts[i], max_new_tokens=12, streamer=streamers[i])
        except BaseException as error:   # noqa: BLE001 (kept for the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=produce, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    texts = ["".join(streamer) for streamer in streamers]
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(2):
        assert torch.equal(results[i], alone[i])
        assert texts[i] == tok.decode(alone[i][0, prompts[i].shape[1]:])
