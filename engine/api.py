"""The Engine: the one Python API of the billing engine, served the same by both placements. A
small face over the parts that each own a piece of it: its running parts and their life
(`Lifecycle`), people and money (`PeopleAndMoney`), calls (`CallRequests`), payouts and refunds
(`PayoutsAndRefunds`), presence and jobs (`PresenceAndJobs`), and what an operator asks
(`Operator`). Each method below is its part's, named there. Importing it does not import Ray
(`engine.lifecycle` imports it when an engine starts).

    engine = await Engine(from_env()).start()
    ...
    await engine.stop()
"""

from __future__ import annotations

import functools

from engine.call_requests import CallRequests
from engine.config import Config
from engine.lifecycle import Lifecycle
from engine.money_requests import PeopleAndMoney
from engine.offer_requests import OfferRequests
from engine.operator import Operator
from engine.payout_requests import PayoutsAndRefunds
from engine.presence_jobs import PresenceAndJobs
from engine.price_requests import PricePlans


def _by(part: str, method):
    """The Engine's method that is `method` of its part `part` (its signature and docs)."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return method(getattr(self, part), *args, **kwargs)

    return call


class Engine:
    def __init__(self, config: Config | None = None) -> None:
        self.life = Lifecycle(config, self)
        self.money = PeopleAndMoney(self.life)
        self.offer_requests = OfferRequests(self.life)
        self.calls = CallRequests(self.life, self.offer_requests)
        self.payouts_refunds = PayoutsAndRefunds(self.life)
        self.presence_jobs = PresenceAndJobs(self.life, self)
        self.operator = Operator(self.life, self.calls)
        self.prices = PricePlans(self.life)

    async def start(self, attach_only: bool = False) -> Engine:
        """Join Ray, then attach to the engine running in the namespace, or start one (with
        `attach_only`, refuse naming the namespace and address instead)."""
        await self.life.start(attach_only)
        return self

    stop = _by("life", Lifecycle.stop)

    async def __aenter__(self) -> Engine:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @classmethod
    async def attach(cls, namespace: str) -> Engine:
        """An engine attached to the one running in `namespace` (a job's Ray task, a Serve
        replica, `inspect`); refused if none runs there."""
        return await cls(Config(namespace=namespace)).start(attach_only=True)

    # -- its running parts, as its users reach them ------------------------------------------

    config = property(lambda self: self.life.config)
    clock = property(lambda self: self.life.clock)
    placement = property(lambda self: self.life.placement)
    writer = property(lambda self: self.life.writer)
    presence = property(lambda self: self.life.presence)
    scheduler = property(lambda self: self.life.scheduler)
    database_url = property(lambda self: self.life.database_url)
    redis_url = property(lambda self: self.life.redis_url)
    attached = property(lambda self: self.life.attached)
    owns_ray = property(lambda self: self.life.owns_ray)
    is_current = _by("life", Lifecycle.is_current)
    pool = _by("life", Lifecycle.pool)
    sweeps = _by("life", Lifecycle.sweeps)
    relay_events = _by("life", Lifecycle.relay_events)

    # -- people and money --------------------------------------------------------------------

    create_user = _by("money", PeopleAndMoney.create_user)
    create_listener = _by("money", PeopleAndMoney.create_listener)
    top_up = _by("money", PeopleAndMoney.top_up)
    spend = _by("money", PeopleAndMoney.spend)
    withdraw = _by("money", PeopleAndMoney.withdraw)
    balance = _by("money", PeopleAndMoney.balance)
    statement = _by("money", PeopleAndMoney.statement)

    # -- calls -------------------------------------------------------------------------------

    start_call = _by("calls", CallRequests.start_call)
    end_call = _by("calls", CallRequests.end_call)
    get_call = _by("calls", CallRequests.get_call)
    calls_of = _by("calls", CallRequests.calls_of)
    bill_due = _by("calls", CallRequests.bill_due)
    events = _by("calls", CallRequests.events)

    # -- prices ------------------------------------------------------------------------------

    schedule_rate_card = _by("prices", PricePlans.schedule_rate_card)
    rate_cards = _by("prices", PricePlans.rate_cards)
    set_prices = _by("prices", PricePlans.set_prices)
    listener_prices = _by("prices", PricePlans.listener_prices)

    # -- offers ------------------------------------------------------------------------------

    create_offer = _by("offer_requests", OfferRequests.create_offer)
    offer = _by("offer_requests", OfferRequests.offer)
    offers = _by("offer_requests", OfferRequests.offers)
    set_listener_offers = _by("offer_requests", OfferRequests.set_listener_offers)
    listener_offers = _by("offer_requests", OfferRequests.listener_offers)

    # -- payouts and refunds -----------------------------------------------------------------

    settle_payout = _by("payouts_refunds", PayoutsAndRefunds.settle_payout)
    payouts = _by("payouts_refunds", PayoutsAndRefunds.payouts)
    refund_call = _by("payouts_refunds", PayoutsAndRefunds.refund_call)
    finish_refund = _by("payouts_refunds", PayoutsAndRefunds.finish_refund)

    # -- presence and jobs -------------------------------------------------------------------

    heartbeat = _by("presence_jobs", PresenceAndJobs.heartbeat)
    set_busy_for = _by("presence_jobs", PresenceAndJobs.set_busy_for)
    mark_inactive_users_offline = _by("presence_jobs", PresenceAndJobs.mark_inactive_users_offline)
    cleanup_expired_busy_status = _by("presence_jobs", PresenceAndJobs.cleanup_expired_busy_status)
    online_users_count = _by("presence_jobs", PresenceAndJobs.online_users_count)
    cleanup_expired_calls = _by("presence_jobs", PresenceAndJobs.cleanup_expired_calls)
    assign_daily_badges = _by("presence_jobs", PresenceAndJobs.assign_daily_badges)
    badges_missed = _by("presence_jobs", PresenceAndJobs.badges_missed)
    run_job = _by("presence_jobs", PresenceAndJobs.run_job)
    run_job_task = _by("presence_jobs", PresenceAndJobs.run_job_task)

    # -- what an operator asks ---------------------------------------------------------------

    advance = _by("operator", Operator.advance)
    sync = _by("operator", Operator.sync)
    readiness = _by("operator", Operator.readiness)
    writers = _by("operator", Operator.writers)
    processes = _by("operator", Operator.processes)
    inspect = _by("operator", Operator.inspect)
    explain_call = _by("operator", Operator.explain_call)
