"""The documentation of stnkit.geometry and stnkit.nn: every public name has a runnable example, and it runs.

The examples are doctests. ``make test`` also collects them from ``src/``; running
them here as well lets ``pytest tests`` check them.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from torch import nn

import stnkit.geometry
import stnkit.nn

PACKAGES = (stnkit.geometry, stnkit.nn)
MODULES = [
    importlib.import_module(f"{p.__name__}.{m.name}") for p in PACKAGES for m in pkgutil.iter_modules(p.__path__)
]
PUBLIC = {f"{p.__name__}.{name}": getattr(p, name) for p in PACKAGES for name in p.__all__}
CALLABLES = {k: v for k, v in PUBLIC.items() if inspect.isclass(v) or inspect.isfunction(v)}
SIZE_ARGUMENTS = ("size", "in_size", "out_size", "loc_size")


def public_methods(cls: type):
    """Methods a stnkit class adds (not torch's own hooks such as ``extra_repr``)."""
    for name, fn in inspect.getmembers(cls, inspect.isfunction):
        if not name.startswith("_") and fn.__module__.startswith("stnkit") and not hasattr(nn.Module, name):
            yield name, fn


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_examples_run(module):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert tests, f"{module.__name__} has no examples"
    for t in tests:
        runner.run(t)
    assert runner.summarize(verbose=False).failed == 0  # the report above names the failing example


@pytest.mark.parametrize("name", CALLABLES)
def test_public_names_have_an_example(name):
    doc = inspect.getdoc(CALLABLES[name]) or ""
    assert "Example:" in doc and ">>>" in doc, f"{name} has no runnable Example: block"


@pytest.mark.parametrize("name", [k for k, v in CALLABLES.items() if inspect.isclass(v)])
def test_public_methods_are_documented(name):
    undocumented = [m for m, fn in public_methods(CALLABLES[name]) if not inspect.getdoc(fn)]
    assert not undocumented, f"{name}: {undocumented} have no docstring"


def test_size_arguments_are_typed():
    functions = [(k, v) for k, v in CALLABLES.items() if inspect.isfunction(v)]
    functions += [(f"{k}.{m}", fn) for k, v in CALLABLES.items() if inspect.isclass(v) for m, fn in public_methods(v)]
    functions += [(f"{k}.__init__", v.__init__) for k, v in CALLABLES.items() if inspect.isclass(v)]
    untyped = [
        f"{name}({arg})"
        for name, fn in functions
        for arg, p in inspect.signature(fn).parameters.items()
        if arg in SIZE_ARGUMENTS
        and not any(t in str(p.annotation) for t in ("int | tuple[int, int]", "int | tuple[int, int, int]"))
    ]
    assert len(functions) > 30 and not untyped


def test_readme_own_model_example_runs(tmp_path, monkeypatch):
    """The README's Python example (marked <!-- example:own-model -->) runs as it is."""
    import re

    pytest.importorskip("lightning")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    start = readme.index("<!-- example:own-model -->")
    code = re.search(r"```python\n(.*?)```", readme[start:], re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md example", "exec"), namespace)  # noqa: S102 (our own README)
    assert namespace["results"]["epochs"] == 1 and (tmp_path / "runs" / "example" / "model.safetensors").is_file()
