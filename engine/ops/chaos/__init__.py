"""`billing-engine chaos`: load under injected faults, checked against an independent model.
`model` says what the policy requires, `driver` plays the load and the faults, `checks`
compares PostgreSQL with the model."""

from engine.ops.chaos.checks import ChaosResult, check_database
from engine.ops.chaos.driver import CRASH_KINDS, Chaos, chaos_command, run_chaos
from engine.ops.chaos.model import Model, ModelCall

__all__ = [
    "CRASH_KINDS",
    "Chaos",
    "ChaosResult",
    "Model",
    "ModelCall",
    "chaos_command",
    "check_database",
    "run_chaos",
]
