"""``--set`` overrides: ``a.b.c=value`` applied to the raw recipe mapping before validation.

Kept apart from the loader because it is its own small language (dotted keys, list indices in either
``.0`` or ``[0]`` form, YAML-parsed values, lists started from the schema's defaults), with its own errors;
the result is validated with the rest of the recipe by :func:`srcal.config.load.recipe_from_dict`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from srcal.config.schema import Recipe, RecipeError


def _parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML would (so `--set rounds=1` gives an int); a value YAML cannot
    read (``[``, ``*a``, ``'``, control characters) is a :class:`RecipeError`, not a parser traceback."""
    import yaml

    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as e:  # ValueError: an int past Python's 4,300-digit limit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RecipeError(f"override value {text!r:.60} is not valid YAML ({first}); quote a string value, "
                          f"e.g. --set 'key=\"{text[:20]}\"'") from None


def _key_parts(dotted: str, key: str) -> list[str | int]:
    """``data.sources.0.path`` or ``data.sources[0].path`` → ``["data", "sources", 0, "path"]``."""
    import re

    parts: list[str | int] = []
    for chunk in key.strip().split("."):
        m = re.fullmatch(r"([^\[\]]*)((?:\[\s*-?\d+\s*\])*)", chunk)
        if m is None or (not m.group(1) and not m.group(2)):
            raise RecipeError(f"override {dotted!r}: cannot read the key {key.strip()!r}; write a dotted key "
                              "like align.beta or data.sources.0.path")
        name, brackets = m.groups()
        if name:
            parts.append(int(name) if re.fullmatch(r"-?\d+", name) else name)
        parts += [int(i) for i in re.findall(r"-?\d+", brackets)]
    return parts


def _schema_child(tp: Any, part: str | int) -> Any:
    """The type at ``part`` below type ``tp`` (a Recipe dataclass or ``list[...]``), or None when unknown."""
    if isinstance(part, int):
        args = typing.get_args(tp) if typing.get_origin(tp) is list else ()
        return args[0] if args else None
    if dataclasses.is_dataclass(tp):
        return typing.get_type_hints(tp).get(part)
    return None


def _schema_default(parent_tp: Any, name: str) -> Any:
    """The default of field ``name`` of dataclass ``parent_tp`` (a fresh copy), or None."""
    if not dataclasses.is_dataclass(parent_tp):
        return None
    for f in dataclasses.fields(parent_tp):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return None if f.default is dataclasses.MISSING else f.default
    return None


def _list_default(dotted: str, parts: list[str | int], parent_tp: Any) -> list:
    """What an indexed list the recipe does not set starts from: the field's default, as plain data."""
    name = str(parts[-1])
    if dataclasses.is_dataclass(parent_tp) and name not in {f.name for f in dataclasses.fields(parent_tp)}:
        fields = [f.name for f in dataclasses.fields(parent_tp)]
        close = difflib.get_close_matches(name, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"override {dotted!r}: {_show(parts)}: unknown key{hint}; allowed: {sorted(fields)}")
    default = _schema_default(parent_tp, name)
    if not isinstance(default, list):
        raise RecipeError(f"override {dotted!r}: {_show(parts)} is not a list, so it has no numbered entries")
    return [dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x for x in default]


def _show(parts: list[str | int]) -> str:
    """A key path as the validation messages write it: ``data.sources[0].path``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def apply_override(raw: dict[str, Any], dotted: str) -> None:
    """Apply ``a.b.c=value`` to a nested dict, creating intermediate dicts (validated later).

    A number in the key indexes a list: ``data.sources.0.path=s3://bucket/x/`` (or ``data.sources[0].path``)
    changes one source without restating the list. A list the recipe does not set starts from the field's
    default (``data.category_ratio.0=3``). The value is parsed as YAML (``=3`` an int, ``={a: 1}`` a mapping)
    and validated with the rest of the recipe, so a wrong type is reported by its full key.
    """
    if "=" not in dotted:
        raise RecipeError(f"override {dotted!r}: expected key=value, e.g. align.beta=0.2")
    key, value = dotted.split("=", 1)
    parts = _key_parts(dotted, key)
    node: Any = raw
    tp: Any = Recipe
    for i, part in enumerate(parts[:-1]):
        nxt = parts[i + 1]
        if isinstance(node, list):
            if not isinstance(part, int):
                raise RecipeError(f"override {dotted!r}: {_show(parts[:i])} is a list; index it with a number")
            node = node[_index(dotted, parts, i, node)]
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"override {dotted!r}: {_show(parts[:i + 1])} is a single value, not a section")
        else:
            name = str(part)
            if isinstance(nxt, int) and node.get(name) is None:
                node[name] = _list_default(dotted, parts[:i + 1], tp)
            node = node.setdefault(name, {})
            if isinstance(nxt, int) and not isinstance(node, list):
                raise RecipeError(f"override {dotted!r}: {_show(parts[:i + 1])} is not a list, so it has no "
                                  f"entry {nxt}")
            if not isinstance(node, (dict, list)):
                raise RecipeError(f"override {dotted!r}: {part!r} is not a section")
        tp = _schema_child(tp, part)
    last = parts[-1]
    if isinstance(node, list):
        if not isinstance(last, int):
            raise RecipeError(f"override {dotted!r}: {_show(parts[:-1])} is a list; index it with a number")
        node[_index(dotted, parts, len(parts) - 1, node)] = _parse_scalar(value)
    else:
        node[str(last)] = _parse_scalar(value)


def _index(dotted: str, parts: list[str | int], i: int, items: list) -> int:
    """``parts[i]`` as a valid index into ``items``, else an error that names the list and its length."""
    idx = parts[i]
    assert isinstance(idx, int)
    if not -len(items) <= idx < len(items):
        have = f"indices 0–{len(items) - 1}" if items else "none"
        raise RecipeError(f"override {dotted!r}: index {idx} is out of range: {_show(parts[:i])} has "
                          f"{len(items)} entr{'y' if len(items) == 1 else 'ies'} ({have})")
    return idx
