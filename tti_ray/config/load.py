"""Load a run config from YAML (safely), merge its preset, apply ``--set`` overrides, validate.

Errors come out as one line: ``<file>: <key.path>: <what is wrong>``, raised as
:class:`ConfigError` (CLIs turn it into exit code 2).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tti_ray.cli import UserError
from tti_ray.config.base import KeyPathError, format_validation_error
from tti_ray.config.schema import RunConfig

PRESET_DIR = Path(__file__).parent / "presets"
MAX_YAML_BYTES = 64 * 2**20


class ConfigError(UserError):
    """A bad config file, key, value or flag. The message is one line naming file and key."""


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names the same key twice (PyYAML would keep the last one silently)."""


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml's parser when built
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``) and refuses
    duplicate keys in a mapping: the last one would otherwise win and, for a mapping value,
    replace the whole earlier section."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:  # explicit keys only: they may override a merge (<<)
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:
                    continue  # an unhashable key: the base constructor reports it
                if first is not key_node:
                    raise DuplicateKeyError(
                        None, None,
                        f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML mapping safely (no Python tags); errors name the file."""
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a directory, not a YAML file")
        if path.exists() and path.stat().st_size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES // 2**20} MiB")
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                          f"{e.start})") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: str | Path) -> dict[str, Any]:
    """Parse YAML text read from ``path`` (for messages) as :func:`read_yaml` does."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """Parse an override value the way YAML would (numbers, bools, lists, null)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.YAMLError:
        return text


def apply_override(raw: dict[str, Any], dotted: str, value: Any, source: str) -> None:
    """Set ``raw[a][b][c] = value`` for ``dotted = "a.b.c"``, creating mappings as needed.

    Whether the path exists is checked by validation afterwards (unknown keys are errors)."""
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"{source}: {dotted!r}: empty key in dotted path")
    node = raw
    for i, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(
                f"{source}: {'.'.join(keys[: i + 1])}: is a value, cannot set {dotted!r} below it"
            )
        node = child
    node[keys[-1]] = value


def parse_sets(sets: list[str] | None, source: str = "--set") -> list[tuple[str, Any]]:
    out = []
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"{source}: {item!r}: expected dotted.path=value")
        key, text = item.split("=", 1)
        out.append((key.strip(), parse_value(text)))
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def resolve_raw(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """Merge ``preset:`` (a shipped preset name) under the file's own keys."""
    preset = raw.get("preset")
    if preset is None:
        return raw
    if not isinstance(preset, str) or preset not in preset_names():
        raise ConfigError(
            f"{source}: preset: unknown preset {preset!r} (choose from {', '.join(preset_names())})"
        )
    base = read_yaml(PRESET_DIR / f"{preset}.yaml")
    base.pop("preset", None)
    return deep_merge(base, raw)


SCALE_SECTIONS = ("model", "data", "train", "eval")


def _rebase_on_preset(data: dict[str, Any], preset: str, source: str) -> dict[str, Any]:
    """Switch a config to another scale (``--preset paper``): the scale sections (model, data,
    train, eval) come from the new preset; what the file adds on top (interventions, workload,
    toy, name) carries over. Further tweaks go through ``--set``."""
    if preset not in preset_names():
        raise ConfigError(
            f"--preset: unknown preset {preset!r} (choose from {', '.join(preset_names())})"
        )
    out = {k: v for k, v in data.items() if k not in SCALE_SECTIONS}
    out["preset"] = preset
    return out


def validate(raw: dict[str, Any], source: str) -> RunConfig:
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None
    except KeyPathError as e:
        raise ConfigError(f"{source}: {e.path}: {e.msg}") from None


def load_config(
    path: str | Path | None = None,
    sets: list[str] | None = None,
    *,
    raw: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
) -> RunConfig:
    """Load ``path`` (or a ``raw`` dict), merge its preset (``preset`` replaces the file's
    ``preset:``, e.g. ``--preset paper``), apply ``--set`` strings and ``overrides`` (dotted
    path → value), and validate."""
    source = str(path) if path is not None else "<config>"
    data = read_yaml(path) if path is not None else copy.deepcopy(raw or {})
    if preset is not None:
        data = _rebase_on_preset(data, preset, source)
    data = resolve_raw(data, source)
    for key, value in parse_sets(sets):
        apply_override(data, key, value, f"{source} (--set {key})")
    for key, value in (overrides or {}).items():
        apply_override(data, key, value, source)
    return validate(data, source)
