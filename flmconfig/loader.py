"""One generic loader: YAML -> typed dataclass, dotted `--set` overrides, validation.

Every package defines the dataclasses of its own settings; this module only knows how to fill
them. Errors name the full dotted key and, where the type allows, what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from flm.config.bundled import configs_dir
from flm.config.errors import FlmError

T = TypeVar("T")

BASE_KEY = "base"
"""A top-level `base: other` key makes a YAML file start from another (same folder, a path, or a bundled
config of that name)."""


class ConfigError(FlmError, ValueError):
    """A configuration value or key is wrong; the message names the dotted key."""


def find_config(name: str | Path, kind: str) -> Path:
    """Resolve a config given as a path or as a bundled name under configs/<kind>/."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = configs_dir() / kind / f"{name}.yaml"
    if candidate.exists():
        return candidate
    available = sorted(p.stem for p in (configs_dir() / kind).glob("*.yaml"))
    raise ConfigError(f"no {kind} config named {str(name)!r}; available: {', '.join(available) or 'none'}")


MAX_CONFIG_BYTES = 1 << 20
MAX_ALIASES = 100
"""A config is small and hand-written; more aliases than this is an alias bomb (a few lines that expand to GBs)."""


class _ConfigLoader(yaml.SafeLoader):
    """yaml's safe loader, counting aliases so that a file cannot expand without bound."""

    aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_ALIASES} aliases (*name); refusing to expand them")
        return super().compose_node(parent, index)


def _load_yaml(path: Path) -> Any:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
        loader = _ConfigLoader(path.read_text(encoding="utf-8"))
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err


def read_yaml(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, following `base:` chains (the child's keys win, merged deeply)."""
    data = _load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    base_path = Path(base) if Path(base).suffix else path.parent / f"{base}.yaml"
    if not base_path.is_absolute() and not base_path.exists():
        base_path = path.parent / base_path
    bundled = sorted(configs_dir().glob(f"*/{base}.yaml")) if not Path(base).suffix else []
    if not base_path.exists() and len(bundled) == 1:  # `base: 1b` in a user's own file: the bundled stage
        base_path = bundled[0]
    chain = (*_chain, path.resolve())
    if base_path.resolve() in chain:
        raise ConfigError(f"{path}: `base: {base}` makes a cycle: "
                          f"{' -> '.join(p.name for p in (*chain, base_path.resolve()))}")
    return deep_merge(read_yaml(base_path, chain), data)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ["train.lr=3e-4", "model.layers=4"] into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = value
    return nested


def load_config(cls: type[T], source: str | Path | Mapping[str, Any] | None = None,
                overrides: Sequence[str] = ()) -> T:
    """Build `cls` from a YAML path or a mapping (or defaults), then apply dotted overrides."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        data = read_yaml(Path(source))
    data = deep_merge(data, parse_overrides(overrides))
    return from_dict(cls, data, prefix="")


def from_dict(cls: type[T], data: Any, prefix: str) -> T:
    """Convert a mapping into dataclass `cls`, checking keys and types recursively."""
    where = prefix or "config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {join(prefix, key)!r}{hint}; allowed: {', '.join(fields)}")
        kwargs[key] = convert(hints[key], value, join(prefix, key))
    missing = [name for name, f in fields.items() if name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{where}: missing required key(s): {', '.join(join(prefix, m) for m in missing)}")
    try:
        obj = cls(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from err
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as err:
            raise ConfigError(f"{where}: {err}") from err
    return obj


def join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def convert(tp: Any, value: Any, key: str) -> Any:  # noqa: C901 - one branch per supported type
    """Check `value` against type `tp`, converting where it is lossless (int -> float, str -> Path)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value in args:
            return value
        allowed = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{key}: {value!r} is not allowed; allowed values: {allowed}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value if value is not None else {}, key)
    if origin in (list, Sequence, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            return tuple(convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item = args[0] if args else Any
        items = [convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {convert(kt, k, key): convert(vt, v, join(key, k)) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


def config_to_dict(obj: Any) -> Any:
    """A plain, YAML/JSON-ready view of a config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
