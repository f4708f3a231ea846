"""Settings from environment variables: a table of variable -> (field, parser), read one way,
a bad value refused naming the variable (engine/config.py, engine/http/options.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from actors.errors import InvalidInput


def read(env: Mapping[str, str], table: Mapping[str, tuple[str, Callable]]) -> dict:
    """The fields the variables of `table` set in `env` (unset or empty ones are left out)."""
    values: dict = {}
    for var, (name, parse) in table.items():
        if env.get(var):
            try:
                values[name] = parse(env[var])
            except ValueError:
                raise InvalidInput(f"{var}={env[var]!r} is not a valid {name}") from None
    return values


def flag(value: str) -> bool:
    """A yes/no setting: 1, true, yes, on or 0, false, no, off."""
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)
