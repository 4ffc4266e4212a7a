"""Settings dataclasses (`engine.fit.FitConfig`, `engine.evolution.EvolveConfig`, the morphs' configs) as the JSON
saved beside every result, and back: one way for all of them, so each config states only its fields."""

from __future__ import annotations

import dataclasses
import types
import typing


class SavedSettings:
    """Mixin for a frozen dataclass of settings: `to_dict` gives JSON types, `from_dict` rebuilds the nested settings
    dataclasses and tuples from them (``SirenConfig``, ``LossWeights``, ``(0.01, 0.03)``)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict):
        return _built(cls, data)

    def require_counts(self, *names: str) -> None:
        """Raise a ValueError naming the first of the fields ``names`` (counts: steps, batches, pools) below 1."""
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be at least 1, got {getattr(self, name)}")


def _built(cls: type, data: dict):
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be read from an object, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {', '.join(unknown)}; it has {', '.join(names)}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _value(hints[name], value) for name, value in data.items()})


def _value(hint, value):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (hint,) = [arg for arg in args if arg is not type(None)]
        return _value(hint, value)
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _built(hint, value)
    if origin is tuple and isinstance(value, (list, tuple)):
        items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        return tuple(_value(item_hint, item) for item_hint, item in zip(items, value, strict=True))
    return value
