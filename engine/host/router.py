"""Where an operation goes from a host: to itself, when it hosts the person the operation is
routed by, else to the host beside it that does (`Peers`)."""

from __future__ import annotations

from typing import Protocol

from engine.host.peers import Peers
from engine.operations import Operation


class Handler(Protocol):
    async def handle(self, op: Operation): ...


class Router:
    def __init__(self, here: Handler, peers: Peers) -> None:
        self.here = here
        self.peers = peers

    def is_local(self, user_id: int) -> bool:
        return self.peers.is_local(user_id)

    async def ask(self, op: Operation):
        if self.peers.is_local(op.routed_by):
            return await self.here.handle(op)
        return await self.peers.ask(op)
