"""`billing-engine chaos`: load under injected faults, checked against an independent model.
`model` says what the policy requires, `workload` what a step asks, `faults` what hits it,
`answers` sends the requests and checks each answer (`payouts_refunds` those of payouts and
refunds), `checks` compares PostgreSQL with the
model, and `driver` runs the steps."""

from engine.cli.chaos.checks import ChaosResult, check_database
from engine.cli.chaos.driver import PLAN_CARD, Chaos, chaos_command, run_chaos
from engine.cli.chaos.faults import CRASH_KINDS
from engine.cli.chaos.model import Model, ModelCall

__all__ = [
    "CRASH_KINDS",
    "Chaos",
    "ChaosResult",
    "Model",
    "PLAN_CARD",
    "ModelCall",
    "chaos_command",
    "check_database",
    "run_chaos",
]
