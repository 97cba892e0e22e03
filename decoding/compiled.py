"""The compiled path: the decode step captured with ``torch.compile`` on top of the static cache.

Opt-in. ``compile=True`` (a knob of ours) compiles on any device; left unset, a call compiles as the
reference decides it (``_valid_auto_compile_criteria``): a static cache, a ``compile_config`` or not,
on an accelerator, or on any device when the ``CompileConfig`` says ``_compile_all_devices``.
``disable_compile=True`` (or ``compile=False``) never compiles.

What is compiled: only the decode step (one token per row, every shape fixed: the static cache, the
prepared 4-D mask, the positions). The prefill runs eagerly, as in the reference. The compiled
callable is kept on the model, one per compile configuration (:func:`compiled_step`); dynamo keeps
one graph per input shape inside it. A compiled call buckets its static cache length
(:func:`bucket_length`) so that prompts of other lengths reuse the same graph: the eager path's
cache length, and so its tokens, never change.

Compiled kernels may round differently from eager ones: tests/test_compiled.py reports the largest
logit difference and the share of identical tokens against the eager static path.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import types
import weakref
from typing import Any, Callable, Optional

import torch

from .caches import prepared_mask
from .versions import CACHE_KEYWORD

#: Devices the reference compiles on without being told to (``_valid_auto_compile_criteria``).
AUTO_DEVICES = ("cuda", "xpu", "neuron", "tpu")
#: The static cache length of a compiled call is rounded up to a multiple of this.
BUCKET = 64
#: Graphs one compiled step may hold (one per shape: rows, cache bucket, dtype) before dynamo runs
#: further shapes eagerly; dynamo's own default (``recompile_limit``, 8) counts per code object, and
#: each step compiles its own (:func:`_entry`). Set while the step traces a new shape only.
RECOMPILE_LIMIT = 64
#: The keyword that hands a compiled step the 2-D mask to build the 4-D one from, inside the graph.
PADDING_MASK = "padding_mask"
#: Inductor's options on the CPU when no ``compile_config`` is given:
#: - ``freezing``: the weights become constants of the graph, packed once for the matrix kernels;
#: - ``cpp_wrapper``: the graph is called from C++, not Python (at batch 1 on a small model the
#:   step's own overhead is most of its time).
CPU_OPTIONS = {"freezing": True, "cpp_wrapper": True}
#: Added to :data:`CPU_OPTIONS` for a step of at most :data:`TEMPLATE_ROWS` rows:
#: - ``max_autotune`` with the ``CPP`` and ``ATEN`` GEMM backends, the C++ template taken wherever it
#:   applies (:func:`template_first`): every matrix product is inductor's own C++ template on the
#:   packed weights, not the BLAS call, and nothing is benchmarked (compiling costs only the
#:   template's C++, once per weight shape); a product the template does not take (some attention
#:   products, e.g. Gemma 2's) stays ATEN's. A decode step multiplies a few rows by each weight
#:   matrix; MKL's product reads the weights at about a third of the memory bandwidth on this
#:   project's 2-core EPYC, the template at close to all of it.
#: - ``cpp.enable_concat_linear``: products of one input by several weights (q, k, v; gate, up) become
#:   one product by the weights stacked: 121 products per step of the built-in model instead of 211.
#: The built-in 135M model's step (2 threads): 49.7 ms with MKL, 21.5 ms with the template, 17.4 ms
#: with both (the weights read at 31 GB/s). On the small benchmark model at 32 rows the packed MKL
#: product is faster again (12.0 against 15.4 ms per step); at 16 rows the two are level.
TEMPLATE_OPTIONS = {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN", "cpp.enable_concat_linear": True}
TEMPLATE_ROWS = 16
#: The ``CompileConfig`` fields passed on to ``torch.compile``.
FIELDS = ("fullgraph", "dynamic", "backend", "mode", "options")


def bucket_length(positions: int, bucket: int = BUCKET) -> int:
    """``positions`` rounded up to a multiple of ``bucket`` (at least one bucket)."""
    return max(bucket, -(-positions // bucket) * bucket)


def compile_options(compile_config: Any, device: torch.device, rows: int = 1) -> dict[str, Any]:
    """The keyword arguments of ``torch.compile`` for one call.

    Args:
        compile_config: a ``transformers.CompileConfig`` (or a dict of its fields), or None.
        device: the model's device.
        rows: the rows of one decode step (batch × beams or returned sequences).

    Without a config: ``fullgraph=False, dynamic=False`` (one graph per shape: the static cache and
    the bucketed length keep them few), the inductor backend, and ``mode="reduce-overhead"`` (CUDA
    graphs) on CUDA; on the CPU :data:`CPU_OPTIONS` (:func:`compiled_step` compiles again if a frozen
    weight changes), with :data:`TEMPLATE_OPTIONS` up to :data:`TEMPLATE_ROWS` rows. With a config,
    its ``fullgraph``, ``dynamic``, ``backend``, ``mode`` and ``options``, as the reference passes them.
    """
    if compile_config is None:
        if device.type == "cpu":
            return {"fullgraph": False, "dynamic": False, "backend": "inductor",
                    "options": {**CPU_OPTIONS, **(TEMPLATE_OPTIONS if rows <= TEMPLATE_ROWS else {})}}
        return {"fullgraph": False, "dynamic": False, "backend": "inductor",
                "mode": "reduce-overhead" if device.type == "cuda" else "default"}
    values = compile_config if isinstance(compile_config, dict) else vars(compile_config)
    options = {name: values[name] for name in FIELDS if name in values}
    if options.get("options") is not None:
        options.pop("mode", None)          # torch.compile takes one of mode and options
    else:
        options.pop("options", None)
    return options


def wants_compile(compile: Optional[bool], disable_compile: Optional[bool], compile_config: Any,
                  static: bool, device: torch.device) -> bool:
    """Whether a call compiles its decode step.

    Args:
        compile: our knob: True always (on a static cache), False never, None as the reference decides.
        disable_compile: the reference's switch: True never compiles (it wins over ``compile=True``).
        compile_config: the reference's ``CompileConfig`` (or None).
        static: whether the call runs on a static (compileable) cache.
        device: the model's device.
    """
    if disable_compile or compile is False or not static:
        return False
    if compile:
        return True
    everywhere = bool(getattr(compile_config, "_compile_all_devices", None)
                      or (isinstance(compile_config, dict) and compile_config.get("_compile_all_devices")))
    return device.type in AUTO_DEVICES or everywhere


def check_compile_request(compile: Optional[bool], implementation: Optional[str], user_cache: Any,
                          use_cache: bool) -> None:
    """Refuse ``compile=True`` where there is no static cache to compile on.

    Raises:
        ValueError: ``compile=True`` with ``use_cache=False``, with another ``cache_implementation``
            than a static one, or with a cache to continue that is not static.
    """
    from .caches import STATIC, is_static, normalized

    if not compile:
        return
    if not use_cache:
        raise ValueError("compile=True compiles the decode step on a static cache; use_cache=False has no cache: "
                         "drop one of the two.")
    implementation = normalized(implementation)
    if implementation is not None and implementation not in STATIC:
        raise ValueError(f"compile=True runs on a static cache, but cache_implementation={implementation!r}: leave "
                         "it unset (compile=True then builds a static one) or pass cache_implementation='static'.")
    if user_cache is not None and not is_static(user_cache):
        raise ValueError(f"compile=True runs on a static cache, but past_key_values is a {type(user_cache).__name__}: "
                         "continue a StaticCache, or drop compile=True.")


_template_first = contextvars.ContextVar("decoding_template_first", default=False)
_registered = False


def _keep_templates(choices: list) -> list:
    """Inductor's preprocessing of one product's candidates: while :func:`template_first` is active,
    only the C++ template's when there is one (a single candidate: nothing to benchmark), else all
    (ATEN's)."""
    if not _template_first.get():
        return choices
    from torch._inductor.select_algorithm import ExternKernelCaller
    # ATEN's kernels are the extern ones; the template's candidate may come wrapped (weight packing)
    return [choice for choice in choices if not isinstance(choice, ExternKernelCaller)] or choices


@contextlib.contextmanager
def template_first(active: bool = True):
    """While inductor compiles inside this block, a matrix product takes the C++ template whenever the
    template applies (and ATEN's kernel otherwise), without benchmarking one against the other.

    Outside the block (the reference's compiled path, a user's own ``torch.compile``) inductor selects
    as it always does. Uses inductor's ``add_preprocessing_fn`` (torch 2.13); where a torch lacks it,
    max-autotune benchmarks the template against ATEN's kernel instead (slower to compile, same result).
    """
    global _registered
    if active and not _registered:
        try:
            from torch._inductor.select_algorithm import add_preprocessing_fn
        except ImportError:
            active = False
        else:
            add_preprocessing_fn(_keep_templates)
            _registered = True
    token = _template_first.set(bool(active))
    try:
        yield
    finally:
        _template_first.reset(token)


_cacheable_class: Any = None


def _cacheable_cpp_wrapper() -> Any:
    """Inductor's C++ wrapper code generator (the CPU's, for ``cpp_wrapper``), changed so that its C++
    source no longer names the frozen weights' identities (``hash(tensor)``, an address that differs
    in every process): only their device, dtype, shape and strides stay there, and the identities move
    to the Python module around it, where they keep two models' steps apart in one process.

    Inductor keys its compiled C++ on the source text: with the identities in it, every process
    compiled the same wrapper again (about 7 s of the C++ compiler for the tests' tiny model, a step
    of the built-in model's minute and a half). Without them, a graph compiled once is loaded from
    inductor's disk cache by every later process. The source is otherwise the same.
    """
    global _cacheable_class
    if _cacheable_class is None:
        from torch._inductor.codegen.cpp_wrapper_cpu import CppWrapperCpu

        class CacheableCppWrapper(CppWrapperCpu):
            @staticmethod
            def create(*args: Any, **kwargs: Any) -> "CacheableCppWrapper":    # as CppWrapperCpu.create
                return CacheableCppWrapper()

            def write_constant(self, name: str, hashed: str) -> None:
                description, _, identity = hashed.rpartition(" ")
                self.header.writeline(f"// {name} {description}")
                self.__dict__.setdefault("_identities", []).append(f"# {name} {identity}")

            def generate_end(self, result: Any) -> None:
                super().generate_end(result)
                for line in self.__dict__.get("_identities", []):    # Python, after the C++ source
                    result.writeline(line)

        _cacheable_class = CacheableCppWrapper
    return _cacheable_class


@contextlib.contextmanager
def cacheable_wrapper(active: bool = True):
    """While inductor compiles inside this block, the CPU's C++ wrapper is :func:`_cacheable_cpp_wrapper`'s
    (where inductor's registry holds its own ``CppWrapperCpu``; anything else is left alone)."""
    if not active:
        yield
        return
    try:              # inductor's internals (torch 2.13): where they differ, inductor's own wrapper stays
        from torch._inductor.codegen.common import device_codegens, init_backend_registration
        from torch._inductor.codegen.cpp_wrapper_cpu import CppWrapperCpu
        init_backend_registration()
        entry = device_codegens["cpu"]
        ours = entry.cpp_wrapper_codegen is CppWrapperCpu and "write_constant" in vars(CppWrapperCpu)
    except Exception:
        ours = False
    if not ours:
        yield
        return
    entry.cpp_wrapper_codegen = _cacheable_cpp_wrapper()
    try:
        yield
    finally:
        entry.cpp_wrapper_codegen = CppWrapperCpu


@contextlib.contextmanager
def templates_parsed_once(active: bool = True):
    """While inductor compiles inside this block, each of its Jinja code templates is parsed once.

    Inductor renders the C++ template's code from Jinja sources, parsing the source again at every use
    (``KernelTemplate._template_from_string``: 2,443 parses of a few distinct strings for one step of
    the built-in model, about a quarter of its compile time). Inside the block the parsed template is
    kept per source text and rendered again; the code produced is the same.
    """
    try:
        from torch._inductor.codegen.common import KernelTemplate
    except ImportError:
        active = False
    if not active or "_template_from_string" not in vars(KernelTemplate):
        yield
        return
    original = vars(KernelTemplate)["_template_from_string"]
    parse = original.__func__ if isinstance(original, staticmethod) else original
    KernelTemplate._template_from_string = staticmethod(functools.lru_cache(maxsize=256)(parse))
    try:
        yield
    finally:
        KernelTemplate._template_from_string = original


@contextlib.contextmanager
def compiling(template: bool, cpp_wrapper: bool):
    """What our step's compilation runs under: :func:`template_first` (for our own template options),
    :func:`cacheable_wrapper` (with ``cpp_wrapper``) and :func:`templates_parsed_once`."""
    with template_first(template), cacheable_wrapper(cpp_wrapper), templates_parsed_once(template):
        yield


def compiled_step(model: Any, options: dict[str, Any]) -> "CompiledStep":
    """The :class:`CompiledStep` of ``model.forward`` for ``options``, built once per model and options and
    kept on the model (with inductor's ``freezing``, built again once a weight has changed).

    Dynamo keeps one graph per input shape (rows, cache length, dtype) inside it; calls with shapes it
    has seen run without compiling again (``torch._dynamo.utils.counters["stats"]`` counts the
    compilations, :func:`compile_count` reads it).
    """
    key = repr(sorted(options.items()))
    steps = model.__dict__.setdefault("_decoding_compiled_steps", {})
    weights = _weights_signature(model) if (options.get("options") or {}).get("freezing") else None
    if key not in steps or steps[key][1] != weights:     # frozen weights are constants: a changed one recompiles
        steps[key] = (CompiledStep(model, options), weights)
    return steps[key][0]


class CompiledStep:
    """``torch.compile(model.forward, **options)``, called with keyword arguments only.

    Inductor's ``freezing`` option (the weights become constants of the graph, so that inductor can
    pack them for its matrix kernels) only takes effect when ``torch._inductor.config.freezing`` is
    set while dynamo traces (dynamo then treats the parameters as constants); ``torch.compile``'s
    ``options`` are applied later, so by themselves they leave the weights graph inputs. A call whose
    input signature (:func:`signature`) is new may trace: it runs with that setting patched in; a
    call with a known signature runs as it is (setting the patch costs tens of microseconds).

    With freezing, dynamo also turns every tensor marked with a static address into a constant of
    the graph: the static cache marks its tensors so (for CUDA graphs), and a frozen graph would keep
    writing into the first call's cache. The mark is taken off the tensors of each new cache
    (:func:`unmark_static`) before it reaches the graph; they are then ordinary inputs.

    Dynamo checks its guards (about a thousand: every parameter, the cache's layers, the model's
    attributes) before every call: a tenth of a small model's step. A call with the same signature,
    the same cache object and the same cache tensors as the call just before it (the next decode step
    of one generation, where only the tensors' values have changed; beam search's reordered cache
    holds new tensors, so its steps are checked) skips them (``torch.compiler.set_stance(...,
    skip_guard_eval_unsafe=True)``), once such a repeated step has been seen to pass them without
    compiling again. Never skipped: the first step of every generation, any step whose shapes
    changed, a step that graph-broke (several frames), a model with its own hooks (Python run per
    step), and a step whose repeat once compiled again (guarded Python state that changes per step).
    This assumes the model is not modified in the middle of a generation.
    """

    def __init__(self, model: Any, options: dict[str, Any]):
        self.function = torch.compile(_entry(model), **options)
        self.freezing = bool((options.get("options") or {}).get("freezing"))
        self.template = (options.get("options") or {}).get("max_autotune_gemm_backends") == \
            TEMPLATE_OPTIONS["max_autotune_gemm_backends"]     # our own options: the template wherever it applies
        self.cpp_wrapper = bool((options.get("options") or {}).get("cpp_wrapper"))
        self.seen: set = set()
        self._unmarked: Callable[[], Any] = lambda: None     # a weak reference to the cache last unmarked
        self._previous: Any = None                           # the signature and cache of the last call
        self.trusted: set = set()        # signatures whose repeated steps passed the guards without compiling
        self.untrusted = False           # a graph break, or a repeated step compiled again: never skip guards
        self.hookless = _entry_is_forward(model)

    def __call__(self, **inputs: Any) -> Any:
        cache = inputs.get(CACHE_KEYWORD)
        if self.freezing and cache is not None and self._unmarked() is not cache:
            unmark_static(cache)
            self._unmarked = weakref.ref(cache)
        key = signature(inputs)
        held = _held_tensors(cache)
        previous, self._previous = self._previous, (key, weakref.ref(cache) if cache is not None else None, held)
        again = (previous is not None and previous[0] == key and cache is not None and previous[1]() is cache
                 and previous[2] == held)
        if again and key in self.trusted and not self.untrusted:
            # the next step of the same generation, already seen to pass dynamo's guards
            with torch.compiler.set_stance(_current_stance(), skip_guard_eval_unsafe=True):
                return self.function(**inputs)
        graphs, breaks = compile_count(), _graph_breaks()
        if key in self.seen:
            with compiling(self.template, self.cpp_wrapper):
                out = self.function(**inputs)
        else:                            # a new shape may trace: with our recompile limit (and freezing)
            import torch._dynamo.config as dynamo_config
            import torch._inductor.config as inductor_config
            with dynamo_config.patch(recompile_limit=max(RECOMPILE_LIMIT, dynamo_config.recompile_limit)), \
                    inductor_config.patch(freezing=self.freezing or inductor_config.freezing), \
                    compiling(self.template, self.cpp_wrapper):
                out = self.function(**inputs)
        if _graph_breaks() != breaks:
            self.untrusted = True       # several frames, each with its own guards: always check them
        elif again and self.hookless and compile_count() == graphs:
            self.trusted.add(key)       # a repeated step ran without compiling again: its guards hold
        elif again:
            self.untrusted = True       # a repeated step compiled again: something guarded changes per step
        self.seen.add(key)
        return out


def _held_tensors(cache: Any) -> tuple:
    """The identities of the tensors ``cache``'s layers hold: a reordered cache (beam search) holds new ones,
    and its next step checks the guards in full."""
    return tuple(id(getattr(layer, "keys", None)) for layer in getattr(cache, "layers", ()))


def _graph_breaks() -> int:
    """How many graph breaks dynamo has met in this process."""
    from torch._dynamo.utils import counters
    return sum(counters["graph_break"].values())


def _current_stance() -> str:
    """The stance ``torch.compiler.set_stance`` last set (``"default"`` unless a caller changed it)."""
    from torch._dynamo import eval_frame
    return getattr(getattr(eval_frame, "_stance", None), "stance", "default")


def mask_in_graph(cache: Any) -> Optional[int]:
    """The width of the 2-D mask a compiled step builds its 4-D mask from (:data:`PADDING_MASK`), or None
    where the mask is built before the step, eagerly: the static cache's length when all its layers
    attend to every position (a sliding-window layer's mask sizes depend on the position in Python)."""
    layers = getattr(cache, "layers", None)
    if not layers or any(getattr(cache, "is_sliding", [])) or any(type(layer).__name__ != "StaticLayer"
                                                                  for layer in layers):
        return None
    return int(layers[0].max_cache_len)


def unmark_static(cache: Any) -> None:
    """Take dynamo's static-address mark (``torch._dynamo.mark_static_address``) off the tensors of
    ``cache``'s layers."""
    for layer in cache.layers:
        for tensor in vars(layer).values():
            if isinstance(tensor, torch.Tensor) and hasattr(tensor, "_dynamo_static_input_type"):
                del tensor._dynamo_static_input_type


def signature(value: Any) -> Any:
    """What dynamo's guards on a decode step's inputs mostly look at, as a hashable value: each tensor's
    shape, strides, dtype and device, a cache's type and its layers' key shapes, other values as they
    are (or their type, when unhashable)."""
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.stride(), value.dtype, value.device)
    if isinstance(value, dict):
        return tuple((name, signature(item)) for name, item in value.items())
    layers = getattr(value, "layers", None)
    if layers is not None:
        return (type(value), tuple(signature(getattr(layer, "keys", None)) for layer in layers))
    try:
        hash(value)
    except TypeError:
        return type(value)
    return value


def _entry_is_forward(model: Any) -> bool:
    """Whether :func:`_entry` calls ``model.forward`` directly (no hooks registered on the model itself)."""
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return isinstance(model, torch.nn.Module) and not any(getattr(model, name, None) for name in hooks)


def _entry(model: Any) -> Callable[..., Any]:
    """What to compile: a function of its own that calls ``model.forward`` (skips ``nn.Module.__call__``'s
    Python: about 7% of a step on a small model at batch 1), or ``model.__call__`` when hooks are
    registered on the model itself.

    Dynamo keeps its graphs on the code object it compiles, not on the ``torch.compile`` wrapper:
    compiling ``model.forward`` itself would share them with every model of the class (and with the
    reference's compiled path), so a step built again after a weight changed in place would find the
    old frozen graph, whose guards (the parameters' identities) still pass. Each step therefore
    compiles a fresh copy of a small function (its own code object): its graphs, and dynamo's
    recompile limit, are its own, and go when the step goes.

    Given ``padding_mask=`` (:data:`PADDING_MASK`: the 2-D 0/1 mask as wide as the static cache, or None
    when it is all ones) instead of ``attention_mask=``, the step builds the model's 4-D mask itself
    (:func:`decoding.caches.prepared_mask`, the eager path's function) inside the graph, instead of a
    dozen small eager operations before every step.
    """
    if _entry_is_forward(model):
        target = model.forward
    else:
        target = model.__call__

    def decode_step(**inputs: Any) -> Any:
        if PADDING_MASK in inputs:       # the 2-D mask (or None): the 4-D mask is built here, inside the graph
            padding = inputs.pop(PADDING_MASK)
            inputs["attention_mask"] = prepared_mask(model, inputs[CACHE_KEYWORD], padding, inputs["position_ids"],
                                                     inputs["position_ids"].shape[1], False)
        return target(**inputs)

    code = decode_step.__code__.replace(co_name=f"decode_step_{next(_STEPS)}")
    return types.FunctionType(code, decode_step.__globals__, code.co_name, None, decode_step.__closure__)


#: Numbers the compiled steps' code objects (:func:`_entry`).
_STEPS = itertools.count()


def _weights_signature(model: Any) -> tuple:
    """Where each parameter lives and how often it was changed in place (``_version``): differs once a
    weight is assigned or modified."""
    return tuple((p.data_ptr(), p._version) for p in model.parameters())


def compile_count() -> int:
    """How many graphs dynamo has compiled in this process (first compilations and recompilations)."""
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


__all__ = ["AUTO_DEVICES", "BUCKET", "bucket_length", "check_compile_request", "compile_count", "compile_options",
           "compiled_step", "CompiledStep", "mask_in_graph", "PADDING_MASK", "RECOMPILE_LIMIT", "signature",
           "wants_compile"]
