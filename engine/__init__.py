"""Placement, time, the Engine API and the CLI. The only package that imports Ray."""

from engine.api import Engine
from engine.config import Config, from_env

__all__ = ["Config", "Engine", "from_env"]
