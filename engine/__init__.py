"""The Engine and its configuration. Ray lives under `engine.runtime` and is imported only when
an Engine starts; operator tools (CLI, demo, chaos) are under `engine.cli`.

Every refusal is a `BillingError` (a `ValueError`) that names what is wrong and changed
nothing; `EngineUnavailable` (a `ConnectionError`) means no answer now: retry, with the same
idempotency key; an `OperatorError` means the engine was started or reached the wrong way. All
of them are importable from here: `from engine import InsufficientCoins`.
"""

from actors import errors
from actors.errors import *  # noqa: F403 - the exceptions callers catch, listed in errors
from engine.api import Engine
from engine.config import Config, from_env

__all__ = [*errors.__all__, "Config", "Engine", "from_env"]
