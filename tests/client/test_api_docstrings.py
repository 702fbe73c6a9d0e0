"""The public API's docstrings are complete enough for the generated reference (docs/api.md): every class
and function `emotion_ai` exports, and every public method of those classes, has a docstring, and those
that take arguments name them under "Args:" (dataclass-generated `__init__` excepted: the class docstring
describes the fields)."""

from __future__ import annotations

import dataclasses
import inspect

import emotion_ai
import pytest


def _public_callables() -> list[tuple[str, object]]:
    found = []
    for name in emotion_ai.__all__:
        obj = getattr(emotion_ai, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        found.append((name, obj))
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                generated = attr == "__init__" and (
                    dataclasses.is_dataclass(obj) or getattr(obj, "_is_protocol", False))
                if inspect.isfunction(member) and (not attr.startswith("_") or attr == "__init__") and not generated:
                    found.append((f"{name}.{attr}", member))
    return found


def _arguments(func: object) -> list[str]:
    params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    return [p.name for p in params if p.name not in ("self", "cls") and p.kind is not p.VAR_KEYWORD]


@pytest.mark.parametrize(("name", "obj"), _public_callables(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_public_callable_is_documented(name: str, obj: object) -> None:
    doc = inspect.getdoc(obj) or ""
    if name.endswith(".__init__"):
        owner = getattr(emotion_ai, name.split(".", maxsplit=1)[0])
        doc = (obj.__doc__ or "") + (inspect.getdoc(owner) or "")
        assert "Args:" in doc, f"{name}: its arguments are not described (class docstring Args:)"
        return
    assert doc.strip(), f"{name} has no docstring"
    if inspect.isfunction(obj) and len(_arguments(obj)) > 1:
        assert "Args:" in doc, f"{name} takes {_arguments(obj)} but its docstring has no Args: section"


def test_the_main_calls_say_what_they_return_and_raise() -> None:
    for cls in (emotion_ai.EmotionClient, emotion_ai.AsyncEmotionClient):
        for method in ("predict", "predict_batch", "stream"):
            doc = inspect.getdoc(getattr(cls, method)) or ""
            assert "Returns:" in doc and "Raises:" in doc and "InvalidImageError" in doc, (cls.__name__, method)
