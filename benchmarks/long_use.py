"""Long use: many short generations in one process, and what decoding.load(...).close() gives back.

Runs ``--calls`` short generations (default 1,000; greedy, sampling, beam search and prompt lookup in
turn) and reports the process's resident memory (RSS, Linux /proc) after the first call and after
the last, and the CUDA memory allocated when a GPU runs the model. Every strategy's first output is
compared with its output in the last round: "True" when equal (nothing leaked into later calls).
Then loads a saved model with ``decoding.load``, closes it, and reports RSS before, loaded and closed.

    python benchmarks/long_use.py                  # tiny Llama, 1,000 calls
    python benchmarks/long_use.py --calls 100 --model PATH
"""

from __future__ import annotations

import gc
import os
import tempfile

import torch

from common import parser, setup  # benchmarks/common.py; it puts the repository on sys.path
import decoding  # noqa: E402

STRATEGIES = {
    "greedy": {},
    "sampling": dict(do_sample=True, top_k=20, seed=0),
    "beam search": dict(num_beams=2),
    "prompt lookup": dict(prompt_lookup_num_tokens=2),
}


def rss() -> int:
    """The process's resident memory in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cuda_allocated() -> int:
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def many_calls(model, ids: torch.LongTensor, calls: int, new_tokens: int) -> dict:
    """``calls`` generations in turn over :data:`STRATEGIES`; RSS and CUDA memory after the first and the last."""
    names = list(STRATEGIES)
    first_out, last_out, figures = {}, {}, {}
    for i in range(calls):
        name = names[i % len(names)]
        out = decoding.generate(model, ids, max_new_tokens=new_tokens, **STRATEGIES[name])
        first_out.setdefault(name, out)
        last_out[name] = out
        if i == 0:
            gc.collect()
            figures["rss_first"], figures["cuda_first"] = rss(), cuda_allocated()
    gc.collect()
    figures["rss_last"], figures["cuda_last"] = rss(), cuda_allocated()
    figures["same"] = {name: torch.equal(first_out[name], last_out[name]) for name in first_out}
    return figures


def load_and_close() -> dict:
    """Save a ~70 MB Llama (vocabulary 32,000) and a tokenizer; RSS before ``decoding.load``, loaded, and after ``close()``."""
    import transformers

    from tests.tokenizer import byte_tokenizer

    config = transformers.LlamaConfig(vocab_size=32000, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    with tempfile.TemporaryDirectory() as folder:
        transformers.LlamaForCausalLM(config).save_pretrained(folder)
        byte_tokenizer().save_pretrained(folder)
        gc.collect()
        before = rss()
        loaded = decoding.load(folder, device="cpu")
        decoding.generate(loaded.model, torch.tensor([[5, 6, 7]]), max_new_tokens=2)
        with_model = rss()
        loaded.close()
        del loaded
        gc.collect()
        return dict(before=before, loaded=with_model, closed=rss())


def main() -> None:
    p = parser(__doc__, new_tokens=4)
    p.add_argument("--calls", type=int, default=1000, help="generations in one process (default 1000)")
    args = p.parse_args()
    model, label, ids = setup(args)
    ids = ids[:, :8]
    mib = 2 ** 20
    f = many_calls(model, ids, args.calls, args.new_tokens)
    print(f"{label}: {args.calls} calls of {args.new_tokens} new tokens ({', '.join(STRATEGIES)} in turn)")
    print(f"RSS after the first call: {f['rss_first'] / mib:.1f} MiB; after the last: {f['rss_last'] / mib:.1f} MiB "
          f"(growth {(f['rss_last'] - f['rss_first']) / mib:+.1f} MiB)")
    if torch.cuda.is_available():
        print(f"CUDA allocated after the first call: {f['cuda_first'] / mib:.1f} MiB; after the last: "
              f"{f['cuda_last'] / mib:.1f} MiB")
    for name, same in f["same"].items():
        print(f"{name:14s} first and last outputs equal: {same}")
    if not args.model:
        m = load_and_close()
        print(f"decoding.load + close: RSS {m['before'] / mib:.1f} MiB before, {m['loaded'] / mib:.1f} MiB loaded, "
              f"{m['closed'] / mib:.1f} MiB closed")


if __name__ == "__main__":
    main()
