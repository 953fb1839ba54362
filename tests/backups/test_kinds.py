"""A kind of backup source is one module in onwatch/backups/kinds/: the generic code asks
the source's kind and never names one, and every kind implements the whole interface."""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path
from typing import cast

import pytest

from onwatch.backups import kinds
from onwatch.backups.models import SourceKind

# Uses no database of onwatch's: scripts/test runs it in one of its two passes.
pytestmark = pytest.mark.once

ONWATCH = Path(kinds.__file__).parents[2]
KINDS_DIR = Path(kinds.__file__).parent
# The choices the database stores are the one place besides the kinds' own modules.
ALLOWED = {KINDS_DIR, ONWATCH / "backups" / "models.py"}
VALUES = "|".join(re.escape(v) for v in SourceKind.values)
NAMES_A_KIND = [
    re.compile(r"SourceKind\.[A-Z]"),
    # `source.kind == "sqlite"`, `kind in ("postgresql", …)`, `{% if s.kind == "mariadb" %}`
    re.compile(rf"""kind\s*(==|!=|in)\s*[(\[{{]?\s*["']({VALUES})["']"""),
]


def generic_files() -> list[Path]:
    found = []
    for path in sorted([*ONWATCH.rglob("*.py"), *ONWATCH.rglob("*.html")]):
        if "migrations" in path.parts or any(a in (path, *path.parents) for a in ALLOWED):
            continue
        found.append(path)
    return found


def test_no_module_outside_the_kinds_names_a_kind_of_source() -> None:
    files = generic_files()
    assert ONWATCH / "backups" / "runs.py" in files
    assert ONWATCH / "templates" / "backups" / "restore.html" in files
    named = [
        f"{path.relative_to(ONWATCH)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(p.search(line) for p in NAMES_A_KIND)
    ]
    assert named == []


def test_the_check_finds_a_module_that_branches_on_a_kind() -> None:
    lines = [
        "    if source.kind == SourceKind.SQLITE:",
        '    if plan.source.kind in ("postgresql", "mariadb"):',
        '{% if source.kind == "directory" %}',
    ]
    assert all(any(p.search(line) for p in NAMES_A_KIND) for line in lines)
    assert not any(p.search("    return kind_of(source).check(source)") for p in NAMES_A_KIND)


def members() -> tuple[dict[str, object], dict[str, inspect.Signature]]:
    """The Kind interface: its data members with their types, its functions with theirs."""
    data = {n: t for n, t in inspect.get_annotations(kinds.Kind).items()}
    functions = {
        name: inspect.signature(value)
        for name, value in vars(kinds.Kind).items()
        if inspect.isfunction(value) and not name.startswith("_")
    }
    return data, functions


def shown(signature: inspect.Signature) -> list[tuple[str, str]]:
    """Names and (unqualified) types of the parameters, then the return type. mypy checks
    the types themselves (each kind assigns itself to a Kind); this says which is off."""

    def name(annotation: object) -> str:
        return str(annotation).rsplit(".", 1)[-1]

    params = [(p.name, name(p.annotation)) for p in signature.parameters.values()]
    return [*params, ("return", name(signature.return_annotation))]


def test_every_kind_is_a_module_there_and_implements_the_whole_interface() -> None:
    registry = kinds.registry()
    assert sorted(registry) == sorted(SourceKind.values)
    modules = sorted(p.stem for p in KINDS_DIR.glob("*.py") if p.stem != "__init__")
    names = [cast(types.ModuleType, m).__name__ for m in registry.values()]  # modules, all
    assert sorted(name.rsplit(".", 1)[-1] for name in names) == modules
    data, functions = members()
    assert {"check", "backup", "drill", "restore", "kit_steps"} <= set(functions)
    assert {"FIELDS", "SCHEMES"} <= set(data)
    for value, kind in registry.items():
        assert isinstance(kind, types.ModuleType) and isinstance(kind, kinds.Kind)
        assert value == kind.KIND and kinds.named(value) is kind
        for name, wanted in functions.items():
            got = shown(inspect.signature(getattr(kind, name)))
            assert got == shown(wanted)[1:], (value, name)  # the same but for self
        for name, annotation in data.items():
            shape = {"str": str, "int": int, "bool": bool}.get(str(annotation).split("[")[0])
            shape = shape or {"tuple": tuple, "dict": dict}[str(annotation).split("[")[0]]
            assert isinstance(getattr(kind, name), shape), (value, name)
        assert set(kind.FIELD_HELP) <= set(kind.FIELDS)


def test_a_module_without_one_of_the_functions_is_not_a_kind() -> None:
    whole = kinds.named(SourceKind.SQLITE)
    partial = types.ModuleType("partial")
    vars(partial).update({n: v for n, v in vars(whole).items() if n != "kit_steps"})
    assert not isinstance(partial, kinds.Kind)


def test_a_kind_onwatch_does_not_know_is_said_in_words() -> None:
    try:
        kinds.named("oracle")
    except kinds.UnknownKind as e:
        assert str(e) == "onwatch cannot back up sources of kind 'oracle'"
    else:
        raise AssertionError("an unknown kind was accepted")
