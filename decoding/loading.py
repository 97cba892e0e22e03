"""Load a model and its tokenizer in one call, quantized or dispatched, and free them again.

``decoding.load()`` is the one place that turns "a model name" into ``(model, tokenizer)``:

- ``None`` is the built-in model (SmolLM2-135M-Instruct, converted once, see :mod:`decoding.builtin`);
- a local Hugging Face folder (``config.json``, weights, tokenizer files);
- a hub id (``"org/name"``), where the network (or the local hub cache) allows.

Quantization goes through ``bitsandbytes`` (``BitsAndBytesConfig``): ``"4bit"`` is NF4 with bfloat16
compute, ``"8bit"`` is LLM.int8(). Both run on CPU with bitsandbytes 0.50 (and on CUDA, XPU, ...).
``device_map`` (``"auto"``, or a map that sends some modules to ``"cpu"`` or ``"disk"``) is passed to
``transformers``/``accelerate`` unchanged; ``decoding.generate`` runs on such a dispatched model exactly
as ``model.generate`` does.

What :func:`load` returns is a :class:`LoadedModel`: it unpacks as ``model, tokenizer = load(...)``,
and it is a context manager whose exit (or :meth:`LoadedModel.close`) frees the model's memory.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

from .errors import (ClosedModelError, LoadError, MissingDependencyError, ModelNotFoundError,  # noqa: F401
                     UnsupportedDeviceError)

QUANTIZATIONS: tuple[str, ...] = ("4bit", "8bit")

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: Union[None, str, torch.dtype]) -> Union[None, str, torch.dtype]:
    """``None`` (the checkpoint's own), ``"auto"``, a ``torch.dtype`` or a name such as ``"bfloat16"``."""
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype={dtype!r} is not understood; use one of {sorted(set(_DTYPES))}, 'auto', a "
                     "torch.dtype, or None for the checkpoint's own.")


def default_device() -> str:
    """``"cuda"`` when a CUDA device is there, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _device_available(device: torch.device) -> bool:
    if device.type in ("cpu", "meta"):
        return True
    backend = getattr(torch, device.type, None)
    available = getattr(backend, "is_available", None)
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return bool(available()) if callable(available) else False


def resolve_device(device: Union[None, str, torch.device]) -> torch.device:
    """The device to load onto; raises :class:`UnsupportedDeviceError` when it is not there."""
    if device is None:
        return torch.device(default_device())
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise UnsupportedDeviceError(f"device={device!r} is not a torch device ({error}); use e.g. 'cpu', "
                                     "'cuda' or 'cuda:1'.") from None
    if not _device_available(resolved):
        raise UnsupportedDeviceError(f"device={device!r} is not available on this machine; use device='cpu' "
                                     f"(or leave it out to get {default_device()!r}).")
    return resolved


def _require(module: str, why: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(
            f"{why} needs the `{module}` package, which is not installed ({error}); run "
            f"`pip install {module} -c constraints.txt` (or install decoding with the `quantization` extra).") from None


class _OnceFilter(logging.Filter):
    """Lets a log message that starts with ``prefix`` through once, then drops its repeats.

    bitsandbytes' 8-bit matmul logs "inputs will be cast ... to float16" on every call (every layer,
    every step) for float32 inputs; once is informative, thousands of times buries the answer.
    """

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def _quiet_repeated_bitsandbytes_logs() -> None:
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter("MatMul8bitLt: inputs will be cast"))


def quantization_config(quantization: str, device: Optional[torch.device] = None) -> Any:
    """The ``transformers.BitsAndBytesConfig`` for ``"4bit"`` (NF4, bfloat16 compute) or ``"8bit"``.

    Raises:
        ValueError: ``quantization`` is not one of :data:`QUANTIZATIONS`.
        MissingDependencyError: bitsandbytes or accelerate is not installed.
        UnsupportedDeviceError: bitsandbytes cannot run on ``device``.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r} is not supported; use one of {QUANTIZATIONS} or None.")
    bnb = _require("bitsandbytes", f"quantization={quantization!r}")
    _require("accelerate", f"quantization={quantization!r}")
    supported = set(getattr(bnb, "supported_torch_devices", {"cpu", "cuda"}))
    if device is not None and device.type not in supported:
        raise UnsupportedDeviceError(
            f"quantization={quantization!r} cannot run on device {str(device)!r}: bitsandbytes "
            f"{getattr(bnb, '__version__', '?')} supports {sorted(supported)}; pick one of those devices or "
            "load without quantization.")
    from transformers import BitsAndBytesConfig

    _quiet_repeated_bitsandbytes_logs()
    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def _looks_like_path(name: str) -> bool:
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
            or Path(name).expanduser().exists())


def resolve_source(model_id_or_path: Union[None, str, Path]) -> str:
    """The folder (or hub id) to load: None is the built-in model, fetched and converted on first use."""
    if model_id_or_path is None:
        from .builtin import builtin_model_path

        return str(builtin_model_path())
    name = str(model_id_or_path)
    if isinstance(model_id_or_path, Path) or _looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"model {name!r} is not a folder; pass a local Hugging Face folder (config.json, weights, "
                "tokenizer files), a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or nothing for the "
                "built-in model.")
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {name!r} has no config.json; is it a Hugging Face model "
                                     "folder (save_pretrained's output)?")
        return str(folder)
    return name


def _hub_error(name: str, error: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"could not load {name!r}: it is not a local folder, and the Hugging Face hub could not provide it "
        f"(offline, or no such model: {str(error).splitlines()[0] if str(error) else type(error).__name__}). "
        "Pass a local folder (download it once with `hf download NAME --local-dir FOLDER` where the network "
        "allows), or leave --model out for the built-in model.")


def _hub_reachable() -> bool:
    """Whether the hub's host name resolves (a fast offline check; the hub client retries for ~30 s)."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.getaddrinfo(host, 443)
    except (OSError, UnicodeError):
        return False
    return True


def _uses_disk(device_map: Any) -> bool:
    return isinstance(device_map, dict) and any(str(where) == "disk" for where in device_map.values())


class LoadedModel:
    """A loaded ``(model, tokenizer)`` pair that can free itself.

    ``model, tokenizer = decoding.load(...)`` unpacks it; ``with decoding.load(...) as loaded:`` (or
    ``as (model, tokenizer)``) frees the model's memory at the end of the block. ``load_seconds`` is
    how long loading took; ``source`` is the folder or hub id it came from.
    """

    def __init__(self, model: Any, tokenizer: Any, source: str, quantization: Optional[str],
                 load_seconds: float, offload_folder: Optional[str] = None):
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.quantization = quantization
        self.load_seconds = load_seconds
        self._offload_folder = offload_folder

    def __iter__(self) -> Iterator[Any]:
        if self.model is None:
            raise ClosedModelError("this LoadedModel was closed; load the model again.")
        return iter((self.model, self.tokenizer))

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self.model is None

    def close(self) -> None:
        """Free the model's weights (even where other references to it remain), the temporary offload
        folder, and the accelerator's cached memory. Calling it twice is harmless."""
        if self.model is not None:
            release(self.model)
        self.model = self.tokenizer = None
        if self._offload_folder is not None:
            shutil.rmtree(self._offload_folder, ignore_errors=True)
            self._offload_folder = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else type(self.model).__name__
        return f"LoadedModel({state}, source={self.source!r}, quantization={self.quantization!r})"


def load(model_id_or_path: Union[None, str, Path] = None, quantization: Optional[str] = None,
         device: Union[None, str, torch.device] = None, dtype: Union[None, str, torch.dtype] = None,
         device_map: Any = None, **from_pretrained_kwargs: Any) -> LoadedModel:
    """Load a causal LM and its tokenizer, ready for :func:`decoding.generate` and :func:`decoding.chat`.

    Args:
        model_id_or_path: None for the built-in model, a local Hugging Face folder, or a hub id.
        quantization: None, ``"4bit"`` (NF4 weights, bfloat16 compute) or ``"8bit"`` (LLM.int8()),
            through bitsandbytes.
        device: where the whole model goes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...); None picks CUDA
            when present, else CPU. Not together with ``device_map``.
        dtype: the weights' dtype (``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"``, a
            ``torch.dtype``); None keeps the checkpoint's. With ``quantization`` it is the dtype of the
            modules left unquantized.
        device_map: passed to ``from_pretrained`` (``"auto"``, or ``{"module.name": "cpu" | 0 | "disk"}``);
            a map with ``"disk"`` and no ``offload_folder`` gets a temporary folder, removed by ``close()``.
        **from_pretrained_kwargs: passed to ``AutoModelForCausalLM.from_pretrained`` (e.g.
            ``local_files_only=True``, ``revision=``, ``attn_implementation=``).

    Returns:
        A :class:`LoadedModel`; ``model, tokenizer = load(...)`` unpacks it. The model is in ``.eval()``
        mode; the tokenizer has a pad token (its eos token when it had none).

    Raises:
        ValueError: a bad ``quantization``/``dtype``, or both ``device`` and ``device_map``.
        MissingDependencyError: bitsandbytes or accelerate is needed and not installed.
        UnsupportedDeviceError: the device is not here, or cannot run the quantization.
        ModelNotFoundError: not a model folder, or a hub id that cannot be reached (offline).
        decoding.builtin.BuiltinModelError: the built-in model could not be fetched (says what to run).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization={quantization!r} is not supported; use one of {QUANTIZATIONS} or None.")
    if device is not None and device_map is not None:
        raise ValueError(f"pass device={device!r} or device_map={device_map!r}, not both: device puts the whole "
                         "model on one device, device_map spreads it.")
    if quantization is not None and "quantization_config" in from_pretrained_kwargs:
        raise ValueError(f"pass quantization={quantization!r} or quantization_config=..., not both.")
    resolved_dtype = resolve_dtype(dtype)
    target = resolve_device(device) if device_map is None else None
    started = time.perf_counter()
    kwargs = dict(from_pretrained_kwargs)
    if quantization is not None:  # before fetching anything: a missing package fails fast
        kwargs["quantization_config"] = quantization_config(quantization, target)
    source = resolve_source(model_id_or_path)

    if resolved_dtype is not None:
        kwargs["dtype"] = resolved_dtype
    if quantization is not None:
        # bitsandbytes quantizes while placing the weights, so the device goes through device_map
        kwargs["device_map"] = device_map if device_map is not None else {"": str(target)}
    elif device_map is not None:
        kwargs["device_map"] = device_map
    offload_folder = None
    if _uses_disk(device_map) and "offload_folder" not in kwargs:
        offload_folder = tempfile.mkdtemp(prefix="decoding-offload-")
        kwargs["offload_folder"] = offload_folder

    is_hub_id = not Path(source).is_dir()
    if is_hub_id and not kwargs.get("local_files_only") and not _hub_reachable():
        kwargs["local_files_only"] = True  # offline: the local hub cache only, then a clear error
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, **{k: kwargs[k] for k in ("revision", "local_files_only", "trust_remote_code", "token")
                       if k in kwargs})
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as error:
        if offload_folder is not None:
            shutil.rmtree(offload_folder, ignore_errors=True)
        if is_hub_id:
            raise _hub_error(source, error) from error
        raise ModelNotFoundError(f"could not load the model folder {source!r}: {error}") from error
    except BaseException:
        if offload_folder is not None:
            shutil.rmtree(offload_folder, ignore_errors=True)
        raise
    if quantization is None and device_map is None and target is not None and target.type != "cpu":
        model = model.to(target)
    model.eval()
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model, tokenizer, source, quantization, time.perf_counter() - started, offload_folder)


def _closed_hook(module: Any, args: Any, kwargs: Any) -> None:
    raise ClosedModelError(f"this {type(module).__name__} was freed by decoding.release() / LoadedModel.close(); "
                           "load it again to use it.")


def _release_module(model: torch.nn.Module) -> None:
    if getattr(model, "_decoding_released", False):
        return
    try:  # accelerate's dispatch hooks keep their own references to offloaded weights
        from accelerate.hooks import remove_hook_from_submodules

        remove_hook_from_submodules(model)
    except ImportError:
        pass
    for module in model.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None:
                module._parameters[name] = torch.nn.Parameter(
                    torch.empty(0, dtype=parameter.dtype, device="meta"), requires_grad=False)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None:
                module._buffers[name] = torch.empty(0, dtype=buffer.dtype, device="meta")
    model.register_forward_pre_hook(_closed_hook, with_kwargs=True)
    model._decoding_released = True


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc keeps freed weights for reuse otherwise)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc (musl, ...): nothing to trim
        pass


def release(*objects: Any) -> None:
    """Free models and KV caches now, then collect garbage and empty the accelerator's allocator cache.

    The one-line replacement for ``del model; gc.collect(); torch.cuda.empty_cache()``. A model's
    weights and buffers are dropped even where other references to the model remain (a later forward
    raises :class:`ClosedModelError`); a ``transformers`` cache loses its layers. Other objects are
    left alone (drop your own references to them).
    """
    for obj in objects:
        if isinstance(obj, torch.nn.Module):
            _release_module(obj)
        elif hasattr(obj, "layers") and isinstance(obj.layers, list) and hasattr(obj, "get_seq_length"):
            obj.layers.clear()
    gc.collect()
    _trim_heap()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        torch.xpu.empty_cache()
    if hasattr(torch.backends, "mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()
