"""The package's layers: a module imports only from layers below it (or from its own package), and no
import cycle exists anywhere, deferred imports inside functions included.

The intended order, lowest first, follows the data flow of docs/how-it-works.md: the leaves that
import nothing of the package (the check primitives among them), the declarations (what a knob and a
sampler are), the runner, the processors (each sampler declares its own knobs), the table of knobs
built from them, settings, inputs, validation, stopping, the strategies (their shared state, the prepared call, the families, the contract), the drop-in
``generate``, and the outer ring, which nothing inside imports.
"""

import ast
import pathlib

import decoding

ROOT = pathlib.Path(decoding.__file__).parent

# Lowest first. A module belongs to the first entry that equals it or is a package above it.
LAYERS = [
    ["decoding.errors", "decoding.merge", "decoding.outputs", "decoding.scores", "decoding.seeding",
     "decoding.streaming", "decoding.checks", "decoding.model_kwargs", "decoding.constraints"],
    ["decoding.versions"],   # the reference-release switches (it warns with an errors.py class)
    ["decoding.declarations"],
    ["decoding.caches"],
    ["decoding.compiled"],
    ["decoding.runner"],
    ["decoding.processors"],
    ["decoding.knobs"],
    ["decoding.config"],
    ["decoding.inputs"],
    ["decoding.validation"],
    ["decoding.stopping"],
    ["decoding.strategies.state"],
    ["decoding.strategies.choosers"],
    ["decoding.strategies.call"],
    ["decoding.strategies.sampling", "decoding.strategies.beam", "decoding.strategies.speculative",
     "decoding.strategies.contrastive", "decoding.strategies.dola", "decoding.strategies.custom_folder"],
    ["decoding.strategies.contract"],
    ["decoding.strategies"],
    ["decoding.insight"],
    ["decoding.generation"],
    ["decoding.comparison"],
    ["decoding.replay"],
    ["decoding.builtin"],
    ["decoding.loading"],
    ["decoding.conversation"],
    ["decoding.cli"],
    ["decoding.__main__"],
    ["decoding"],
]


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str, source: str = None) -> set[str]:
    """Every module of the package that ``name`` imports, at any depth of its code (``source``: its text)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in MODULES and m != name}


def layer(name: str) -> int:
    for index, entries in enumerate(LAYERS):
        if any(name == entry or name.startswith(entry + ".") for entry in entries):
            return index
    raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_layers.py")


def same_family(a: str, b: str) -> bool:
    """Both modules sit in one package below the layer's entry (e.g. two modules of decoding.processors)."""
    entries = [e for e in LAYERS[layer(a)] if a == e or a.startswith(e + ".")]
    return any(b == e or b.startswith(e + ".") for e in entries)


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def upward(name: str, source: str = None) -> list[str]:
    return [f"{name} imports {target}" for target in sorted(imports(name, source))
            if layer(target) > layer(name) or (layer(target) == layer(name) and not same_family(name, target))]


def test_no_import_goes_up_a_layer():
    found = [line for name in sorted(MODULES) for line in upward(name)]
    assert not found, "imports against the layer order:\n" + "\n".join(found)


def test_no_import_cycle():
    graph = {name: imports(name) for name in MODULES}
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_checker_sees_an_upward_deferred_import():
    """A deferred import back to generate inside a function (what beams/run.py once had) is caught."""
    source = MODULES["decoding.strategies.beam.run"].read_text() + (
        "\n\ndef later():\n    from ...generation import generate\n    return generate\n")
    assert upward("decoding.strategies.beam.run", source) == [
        "decoding.strategies.beam.run imports decoding.generation"]
    sideways = "from ..speculative.loop import Rounds\n"
    assert upward("decoding.strategies.beam.run", sideways) == [
        "decoding.strategies.beam.run imports decoding.strategies.speculative.loop"]
