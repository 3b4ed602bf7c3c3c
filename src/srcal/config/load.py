"""Loading a recipe: find it (shipped name or YAML path), apply overrides, validate against the schema.

Every problem (unknown key, wrong type, value outside the allowed set or range, a rule across fields) is
collected and reported at once, each naming the dotted key, as torchtune's ``config/_validate.py`` does.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

from srcal.config.overrides import apply_override
from srcal.config.schema import Recipe, RecipeError

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def _resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = RECIPES_DIR / f"{name_or_path}.yaml"
    if cand.exists():
        return cand
    raise RecipeError(
        f"recipe {name_or_path!r} not found: not a YAML file and not one of the shipped recipes "
        f"{available_recipes()} (in {RECIPES_DIR})"
    )


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def _build(cls: type, raw: Any, path: str, errors: list[str]) -> Any:
    """Build dataclass ``cls`` from ``raw``, appending every problem found to ``errors``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(f"{path or '<root>'}: expected a mapping, got {type(raw).__name__}")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            errors.append(f"{path}{key}: unknown key{hint}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        tp, value, dotted = hints[name], raw[name], f"{path}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, dotted + ".", errors)
            continue
        if typing.get_origin(tp) is list and typing.get_args(tp) and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            inner = typing.get_args(tp)[0]
            if not isinstance(value, list):
                errors.append(f"{dotted}: expected a list of mappings")
                continue
            kwargs[name] = [_build(inner, v, f"{dotted}[{i}].", errors) for i, v in enumerate(value)]
            continue
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if tp is float and isinstance(value, str):  # YAML 1.1 reads `5e-7` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, tp):
            if typing.get_origin(tp) is Literal:
                errors.append(f"{dotted}: {value!r} is not allowed; choose one of {list(typing.get_args(tp))}")
            else:
                errors.append(f"{dotted}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
            continue
        meta = f.metadata
        if "choices" in meta and value not in meta["choices"]:
            errors.append(f"{dotted}: {value!r} is not allowed; choose one of {meta['choices']}")
        if "min" in meta and isinstance(value, (int, float)) and value < meta["min"]:
            errors.append(f"{dotted}: {value!r} is below the minimum {meta['min']}")
        if "max" in meta and isinstance(value, (int, float)) and value > meta["max"]:
            errors.append(f"{dotted}: {value!r} is above the maximum {meta['max']}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - defensive, fields are checked above
        errors.append(f"{path}: {e}")
        return cls()


def _cross_checks(r: Recipe) -> list[str]:
    """Rules that span fields."""
    errs = []
    if len(r.data.category_ratio) != 3 or any(x < 0 for x in r.data.category_ratio) or sum(r.data.category_ratio) <= 0:
        errs.append("data.category_ratio: expected three non-negative weights (perception, chart, math)")
    if r.data.world == "real" and not r.data.sources:
        errs.append("data.sources: world 'real' needs at least one source")
    if r.search.n_candidates > r.search.beams * r.search.expansions:
        errs.append("search.n_candidates: cannot exceed search.beams × search.expansions")
    if r.teacher.kind == "openai" and not r.teacher.url:
        errs.append("teacher.url: required when teacher.kind is 'openai'")
    if r.labeller.kind == "openai" and not r.labeller.url:
        errs.append("labeller.url: required when labeller.kind is 'openai'")
    if r.curate.judge == "oracle" and r.data.world != "shapes":
        errs.append("curate.judge: 'oracle' needs the shapes world's oracle (data.world: shapes); real data "
                    "has no oracle, use 'rscorer'")
    if r.model.base == "tiny" and r.data.world != "shapes":
        errs.append("model.base: 'tiny' only knows the shapes world; set data.world=shapes or a real model")
    return errs


# Keys that recipes once had: setting one is an error that names what replaced it (not "unknown key").
REMOVED_KEYS: dict[str, str] = {
    "rscorer.max_train_s": "rscorer.steps — the judge trains a fixed number of steps; a wall-time cap made "
                           "the judge, and every number after it, depend on machine load (issue 13)",
}


def _removed(raw: dict[str, Any]) -> list[str]:
    errs = []
    for dotted, repl in REMOVED_KEYS.items():
        node: Any = raw
        for part in dotted.split("."):
            node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
        if node is not _MISSING:
            errs.append(f"{dotted}: removed; use {repl}")
    return errs


_MISSING = object()


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    errors: list[str] = _removed(raw)
    if errors:
        raise RecipeError("invalid recipe:\n  " + "\n  ".join(errors))
    recipe = _build(Recipe, raw, "", errors)
    if not errors:
        errors += _cross_checks(recipe)
    if errors:
        raise RecipeError("invalid recipe:\n  " + "\n  ".join(errors))
    return recipe


def load_recipe(name_or_path: str = "tiny", overrides: list[str] | None = None) -> Recipe:
    """Load a shipped recipe by name or a YAML path, apply ``key=value`` overrides, validate."""
    import yaml

    path = _resolve(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML: {e}") from e
    for ov in overrides or []:
        apply_override(raw, ov)
    try:
        return recipe_from_dict(raw)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
