"""``custom_generate="path/to/folder"``: a decoding method from a local folder, as the reference loads it.

The reference accepts, as ``custom_generate``, a Hub repository or a local folder holding
``custom_generate/generate.py`` (and optionally ``custom_generate/requirements.txt``). Running it runs
that file's code, so it needs ``trust_remote_code=True``, for a local folder too. Its function
``generate(model, **arguments)`` then replaces the whole of ``generate``: it gets every argument of
the call, the prompt as ``inputs``.

`decoding` loads local folders the same way (:func:`load_folder`, then :func:`call_folder`). It never
downloads anything: a repository name is refused with :func:`hub_refusal`, which says what to use
instead (the built-in strategy where one exists).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

GENERATE_FILE = Path("custom_generate") / "generate.py"
REQUIREMENTS_FILE = Path("custom_generate") / "requirements.txt"

#: The reference's repositories for the strategies it moved to the Hub, and the built-in knobs that run them here.
BUILT_IN_INSTEAD: dict[str, str] = {
    "transformers-community/contrastive-search": "contrastive search is built in: pass penalty_alpha=0.6, top_k=4 "
                                                 "(docs/contrastive-search.md)",
    "transformers-community/dola": "DoLa is built in: pass dola_layers='high' (or 'low', or layer indices) "
                                   "(docs/dola.md)",
    "transformers-community/group-beam-search": "diverse (group) beam search is built in: pass num_beams, "
                                                "num_beam_groups and diversity_penalty",
    "transformers-community/constrained-beam-search": "constrained beam search is built in: pass num_beams and "
                                                      "force_words_ids (or constraints) (docs/constrained-beam-search.md)",
}


def is_folder(value: Any) -> bool:
    """Whether ``custom_generate=value`` names a local folder (a string or path to an existing directory)."""
    return isinstance(value, (str, os.PathLike)) and Path(value).is_dir()


def hub_refusal(name: Any) -> NotImplementedError:
    """The error for ``custom_generate="org/repo"`` (anything that is not a callable nor a local folder)."""
    instead = BUILT_IN_INSTEAD.get(str(name).strip("/"),
                                   "write the method as a strategy (generate(model, ids, strategy=fn), "
                                   "docs/strategies.md), or pass its function itself as custom_generate=fn")
    return NotImplementedError(
        f"custom_generate={name!r} names a Hub repository: the reference downloads and runs its "
        "custom_generate/generate.py (remote code), which decoding never does (no network access, no downloaded "
        f"code). Instead: {instead}. A local folder holding custom_generate/generate.py runs with "
        "trust_remote_code=True.")


def _check_requirements(folder: Path) -> None:
    """Every package ``custom_generate/requirements.txt`` lists is installed, in a listed version."""
    path = folder / REQUIREMENTS_FILE
    if not path.is_file():
        return
    from packaging.requirements import Requirement
    missing = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            missing.append(f"{line} (installed: {version})")
    if missing:
        raise ImportError(f"{path} needs packages that are not installed: {', '.join(missing)}; install them first.")


def load_folder(folder: Any, trust_remote_code: Any) -> Callable:
    """The ``generate`` function of ``folder/custom_generate/generate.py``.

    Raises:
        OSError: the folder has no ``custom_generate/generate.py`` (or it defines no ``generate``).
        ValueError: ``trust_remote_code`` is not True (the file's code would run), as the reference refuses.
        ImportError: a package of ``custom_generate/requirements.txt`` is missing.
    """
    folder = Path(folder)
    path = folder / GENERATE_FILE
    if not path.is_file():
        raise OSError(f"custom_generate={str(folder)!r}: the folder has no {GENERATE_FILE}, so there is no decoding "
                      "method to load.")
    if trust_remote_code is not True:
        raise ValueError(f"custom_generate={str(folder)!r} runs the code of {path}; pass trust_remote_code=True once "
                         "you have read it and trust it.")
    _check_requirements(folder)
    name = "decoding_custom_generate_" + re.sub(r"\W", "_", str(path.resolve()))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module                # relative imports and dataclasses in the file need it registered
    spec.loader.exec_module(module)
    function = getattr(module, "generate", None)
    if not callable(function):
        raise OSError(f"{path} defines no function `generate(model, **arguments)`.")
    return function


def call_folder(function: Callable, model: Any, input_ids: Any, attention_mask: Any, arguments: dict[str, Any]) -> Any:
    """Call a folder's ``generate`` as the reference calls it: ``model=``, the prompt as ``inputs=``, and every
    other argument of the call by its name (``attention_mask`` among them when given). Its result is returned
    as it is."""
    arguments = dict(arguments)
    if attention_mask is not None:
        arguments["attention_mask"] = attention_mask
    for name in ("generation_config", "logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn",
                 "synced_gpus", "assistant_model", "streamer", "negative_prompt_ids", "negative_prompt_attention_mask"):
        arguments.setdefault(name, None)
    return function(model=model, inputs=input_ids, **arguments)
