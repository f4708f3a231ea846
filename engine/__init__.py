"""Placement, time, the Engine API and the CLI. The only package that imports Ray.

Every refusal is a `BillingError` (a `ValueError`) that names what is wrong and changed
nothing; `EngineUnavailable` (a `ConnectionError`) means no answer now: retry, with the same
idempotency key. All of them are importable from here: `from engine import InsufficientCoins`.
"""

from actors import errors
from actors.errors import *  # noqa: F403 - the exceptions callers catch, listed in errors
from engine.api import Engine
from engine.config import Config, from_env

__all__ = [*errors.__all__, "Config", "Engine", "from_env"]
