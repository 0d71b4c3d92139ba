"""Reading a manifest field by field: each bad field becomes a FieldError naming its path and value,
and SpecError carries them all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """One or more fields are invalid; str() lists them, one per line, each naming its path."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))


class Reader:
    """Collects every error instead of stopping at the first, so users fix a manifest in one go."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def fail(self, path: str, message: str) -> None:
        self.errors.append(FieldError(path, message))

    def mapping(self, obj: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = obj.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(f"{path}.{key}", f"must be an object, got {show(value)}")
            return {}
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = obj.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{path}.{key}", f"must be true or false, got {show(value)}")
            return default
        return value

    def integer(self, obj: Mapping[str, Any], key: str, path: str, default: int | None,
                lo: int, hi: int) -> int | None:
        value = obj.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path}.{key}", f"must be an integer, got {show(value)}")
            return default
        if not lo <= value <= hi:
            self.fail(f"{path}.{key}", f"must be between {lo} and {hi}, got {value}")
            return default
        return value

    def number(self, obj: Mapping[str, Any], key: str, path: str, default: float, lo: float, hi: float) -> float:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{path}.{key}", f"must be a number, got {show(value)}")
            return default
        if not lo <= value <= hi:
            self.fail(f"{path}.{key}", f"must be between {lo:g} and {hi:g}, got {value:g}")
            return default
        return float(value)

    def string(self, obj: Mapping[str, Any], key: str, path: str, default: str | None) -> str | None:
        value = obj.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(f"{path}.{key}", f"must be a string, got {show(value)}")
            return default
        return value

    def choice(self, obj: Mapping[str, Any], key: str, path: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.string(obj, key, path, default)
        if value not in allowed:
            self.fail(f"{path}.{key}", f"must be one of {', '.join(allowed)}, got {show(value)}")
            return default
        return value


def show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
