"""The one loader of every input file (configs, sweep specs, `amm.toml`): a mapping -> a frozen
dataclass, each bad key or value named by its dotted key and what is allowed (`ConfigError`)."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from amm_core.errors import ConfigError
from amm_core.fs import read_text_file


def choice(default: str, *choices: str) -> Any:
    """A field whose value must be one of `choices`."""
    assert default in choices
    return dataclasses.field(default=default, metadata={"choices": choices})


def checked(default: Any, ok: Any, allowed: str) -> Any:
    """A field whose given value must pass `ok` ("key 'k' must be <allowed>, got v" if not)."""
    return dataclasses.field(default=default, metadata={"check": (ok, allowed)})


def at_least(default: Any, low: float) -> Any:
    """A number field that must be >= low."""
    return checked(default, lambda v: v >= low, f">= {low:g}")


@contextlib.contextmanager
def within(where: str) -> Iterator[None]:
    """Prefix a ConfigError raised inside with where the input came from ("config file 'x': ")."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key '{key}': '{p}' is both a value and a section")
        node[parts[-1]] = v
    return out


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section: a key `over` gives replaces the same key of
    `base`, a mapping in both is merged key by key (a preset over its `base:` preset)."""
    out = dict(base)
    for k, v in over.items():
        both = isinstance(v, dict) and isinstance(out.get(k), dict)
        out[k] = merge(out[k], v) if both else v
    return out


def did_you_mean(key: str, known: list[str], prefix: str = "") -> str:
    """' (did you mean loss.gp_weight?)' for a close match (difflib), else ''."""
    import difflib

    close = difflib.get_close_matches(key, known, n=2, cutoff=0.75)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""


# numbers in exponent form without a dot ('1e-4', '2E5'), which YAML 1.1 leaves as strings
_YAML11_FLOAT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_WORDS |= {list: "a list", dict: "a mapping"}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """value checked against a field type (scalars, list[T], dict[str, T], unions, dataclasses)."""
    origin, args = typing.get_origin(typ) or typ, typing.get_args(typ)
    if typ is Any:
        return value
    if dataclasses.is_dataclass(typ):
        return build(typ, value, key + ".")
    if origin is types.UnionType:
        arms = [a for a in args if a is not type(None)]
        if value is None and len(arms) < len(args):
            return None
        if len(arms) == 1:
            return _coerce(key, value, arms[0])
        for arm in arms:
            with contextlib.suppress(ConfigError):
                return _coerce(key, value, arm)
        words = " or ".join(_WORDS[typing.get_origin(a) or a] for a in arms)
        raise ConfigError(f"key '{key}': expected {words}, got {value!r}")
    if typ is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if typ is float and isinstance(value, str) and _YAML11_FLOAT.match(value):
        value = float(value)  # '1e-4': YAML 1.1 (PyYAML) reads it as a string
    allowed = (int, float) if typ is float else origin
    if isinstance(value, bool) is not (typ is bool) or not isinstance(value, allowed):
        raise ConfigError(f"key '{key}': expected {_WORDS[origin]}, got {value!r}")
    if origin is list and args:
        return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict and args:
        return {k: _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    return float(value) if typ is float else value


def retired(cls: type, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`data` without the keys `cls` no longer has: those of its class attribute `RETIRED` (key ->
    the one value a user's file could give it; another value is an error) and, while reading a
    stored config (`stored`), any key it does not know, whatever its value. Each dropped key: a
    one-line note on stderr (once per key and process)."""
    gone = getattr(cls, "RETIRED", {})
    drop = set(data) & set(gone)
    for k in sorted(drop):
        if data[k] != gone[k] and not STORED.get():
            raise ConfigError(f"key '{prefix}{k}' was removed (its one value was {gone[k]!r})")
    if STORED.get() and dataclasses.is_dataclass(cls):
        drop |= set(data) - {f.name for f in dataclasses.fields(cls)}
    for k in sorted(drop):
        if prefix + k not in _NOTED:
            _NOTED.add(prefix + k)
            print(f"amm: note: key '{prefix}{k}' is no longer a setting; ignored", file=sys.stderr)
    return {k: v for k, v in data.items() if k not in drop}


_NOTED: set[str] = set()
STORED: contextvars.ContextVar[bool] = contextvars.ContextVar("amm_stored", default=False)


@contextlib.contextmanager
def stored() -> Iterator[None]:
    """Within: the configs read were written by amm, maybe by an older version (a checkpoint, a
    sweep's stored base), so a key this version no longer has is dropped with a note, not an
    error as in a user's file."""
    token = STORED.set(True)
    try:
        yield
    finally:
        STORED.reset(token)


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """A mapping -> a frozen dataclass: unknown keys (with "did you mean"), missing required
    keys, wrong types, values outside a field's choices or checks, each named by dotted key;
    retired keys dropped (`retired`)."""
    if not isinstance(data, dict):
        raise ConfigError(f"key '{prefix.rstrip('.') or '<root>'}': expected a mapping")
    data = retired(cls, data, prefix)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        hint = did_you_mean(unknown[0], list(fields), prefix)
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}'{hint}; "
            f"allowed under '{prefix.rstrip('.') or '<root>'}': {', '.join(fields)}"
        )
    for name, f in fields.items():
        if name not in data and f.default is f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"key '{prefix}{name}' is required")
    kwargs = {}
    for name, value in data.items():
        key, meta = prefix + name, fields[name].metadata
        value = kwargs[name] = _coerce(key, value, hints[name])
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"key '{key}': {value!r} is not allowed; allowed: {', '.join(map(str, choices))}"
            )
        ok, allowed = meta.get("check", (None, ""))
        if ok and value is not None and not ok(value):
            raise ConfigError(f"key '{key}' must be {allowed}, got {value!r}")
    return cls(**kwargs)


def describe(cls: type, prefix: str = "") -> list[str]:
    """Every key of a dataclass with its default (and choices), one line each."""
    lines, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines += describe(hints[f.name], prefix + f.name + ".")
            continue
        choices = f.metadata.get("choices")
        extra = f"  (one of: {', '.join(choices)})" if choices else ""
        shown = "null" if f.default is None else repr(f.default)  # as YAML writes None
        lines.append(f"{prefix}{f.name} = {shown}{extra}")
    return lines


_TAG_RE = re.compile(r"constructor for the tag '(?:tag:yaml\.org,2002:)?([^']*)'")


def yaml_problem(e: yaml.YAMLError) -> str:
    """A PyYAML error as one line: where (line, column) and what, without its position marker
    (the copied text and a caret, over several lines); a tag that would build a Python object
    (`!!python/object/apply:...`) is named and refused, never constructed."""
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = str(getattr(e, "problem", None) or e).splitlines()[0]
    tag = _TAG_RE.search(problem)
    if tag:
        shown = ("!!" if "tag:yaml.org,2002:" in problem else "") + tag.group(1)
        return f"{where}tag {shown} is not allowed (plain YAML only: no tags that build objects)"
    context, cmark = getattr(e, "context", None), getattr(e, "context_mark", None)
    if context and cmark and (not mark or (cmark.line, cmark.column) != (mark.line, mark.column)):
        problem += f" ({context} started at line {cmark.line + 1}, column {cmark.column + 1})"
    return where + problem


def parse_override(item: str) -> tuple[str, Any]:
    """'loss.gp_weight=10' -> ('loss.gp_weight', 10). Values are parsed as YAML scalars
    ('model.dropout=null' -> None); an empty value is the empty string."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. loss.gp_weight=10")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(
            f"override {item!r}: value is not valid YAML ({yaml_problem(e)})"
        ) from None
    return key.strip(), value


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file: {}), else a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        data = yaml.safe_load(read_text_file(path, what)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} '{path}': not valid YAML at {yaml_problem(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}': expected a mapping at the top level")
    return data
