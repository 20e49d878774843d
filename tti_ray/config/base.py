"""The ground floor every config section stands on: :class:`Section`, :class:`KeyPathError`, the
one pydantic-error → key-path formatter, and :class:`Registry`, the kind → config-class registry
that interventions, SAE kinds and toy workloads register into.

Nothing here knows a plugin: a higher stage registers its kinds by import
(``tti_ray.interventions`` registers the built-in interventions when it loads). A registry may
name the package that holds its built-ins (``builtins=``); it imports that package by name the
first time someone looks a kind up, so that ``load_config`` works without the caller importing
every plugin first, while light entry points (``python -m tti_ray.sweep --help``, the tracking
and analysis CLIs) still start without torch. That by-name import is the only way this module
reaches above ``config`` (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError


class Section(BaseModel):
    """Base for all config sections: strict types, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class KeyPathError(Exception):
    """A config problem at a dotted key path; formatted by the loader as ``file: path: msg``.

    Deliberately not a ``ValueError`` so it passes through pydantic validators unchanged."""

    def __init__(self, path: str, msg: str) -> None:
        super().__init__(f"{path}: {msg}")
        self.path, self.msg = path, msg


def first_error(err: ValidationError) -> tuple[str, str]:
    """``(dotted location, message)`` of a pydantic error's first entry: validator wrappers
    (``function-…``) dropped from the location, ``extra_forbidden`` said as ``unknown key``,
    pydantic's ``Value error, `` prefix removed."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
    return loc, msg.removeprefix("Value error, ")


def key_path_error(err: ValidationError, prefix: str) -> KeyPathError:
    """The first error of ``err`` as a :class:`KeyPathError` below ``prefix``."""
    loc, msg = first_error(err)
    return KeyPathError(f"{prefix}.{loc}" if loc else prefix, msg)


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line for a whole-file validation error: ``<source>: <key.path>: <msg>`` plus how many
    more errors there were."""
    loc, msg = first_error(err)
    more = len(err.errors()) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    if not loc and re.match(r"[\w.\[\]]+: ", msg):  # a model-level check names its own key
        return f"{source}: {msg}{tail}"
    return f"{source}: {loc or '<top>'}: {msg}{tail}"


E = TypeVar("E")


class Registry(Generic[E]):
    """Named kinds (an intervention class, an SAE class, a toy config), each with a config class
    that validates its settings. Registering a name twice is an error (SAELens
    ``register_sae_class`` style).

    ``what`` names the kind in messages (``intervention``); ``config_of`` gives an entry's config
    class; ``unknown`` is the message for an unknown kind, formatted with ``kind``, ``names``
    (sorted, comma-separated) and ``choices`` (registration order, quoted); ``key`` is the
    settings key that holds the kind; ``builtins`` the package whose import registers the
    built-in kinds (see the module docstring)."""

    def __init__(
        self,
        what: str,
        *,
        config_of: Callable[[E], type[BaseModel]],
        unknown: str,
        key: str = "type",
        builtins: str | None = None,
    ) -> None:
        self.what, self.config_of, self.unknown, self.key = what, config_of, unknown, key
        self.builtins = builtins
        self._entries: dict[str, E] = {}
        self._builtins_loaded = builtins is None

    def register(self, name: str, entry: E) -> E:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def _load_builtins(self) -> None:
        if not self._builtins_loaded:
            self._builtins_loaded = True  # before the import: it registers into this registry
            try:
                importlib.import_module(self.builtins)  # type: ignore[arg-type]
            except BaseException:
                self._builtins_loaded = False
                raise

    def entries(self) -> dict[str, E]:
        """A copy of ``{name: entry}`` in registration order."""
        self._load_builtins()
        return dict(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        try:
            return name in self._entries
        except TypeError:  # an unhashable kind (a list from YAML) is simply unknown
            return False

    def __getitem__(self, name: str) -> E:
        self._load_builtins()
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries())

    def unknown_error(self, kind: Any, path: str) -> KeyPathError:
        names = self.entries()
        return KeyPathError(path, self.unknown.format(
            kind=kind, names=", ".join(sorted(names)), choices=", ".join(map(repr, names))))

    def parse(self, kind: Any, settings: Mapping[str, Any], path: str, kind_path: str) -> Any:
        """Validate ``settings`` with the config class of ``kind``: an unknown kind is a
        :class:`KeyPathError` at ``kind_path``, a bad setting one at ``path.<key>``."""
        if kind not in self:
            raise self.unknown_error(kind, kind_path)
        try:
            return self.config_of(self._entries[kind]).model_validate(
                {**settings, self.key: kind})
        except ValidationError as e:
            raise key_path_error(e, path) from None
