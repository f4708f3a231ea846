"""The API's request routes, each written once: its method and path, its body and answer
models (engine/http/contract.py), its errors, and what it asks the Engine. Two adapters serve
the same table: engine/http/fast.py answers these requests on the replica's hot path, and
`register` gives them to FastAPI, for the OpenAPI schema and for any request the hot path
leaves to FastAPI (a path that is not one of these, an id that is not a number)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Body, FastAPI, Path, Query, Request
from pydantic import BaseModel, TypeAdapter, ValidationError

import engine.http.contract as m
from actors.errors import InvalidInput
from actors.money import AMOUNT_MAX
from engine.http.answers import answer, validation_message
from engine.http.door import scope_security

KEYWORD = inspect.Parameter.KEYWORD_ONLY
ID_DESCRIPTIONS = {
    "user_id": "the user's or listener's id",
    "call_id": "the call's id",
    "payout_id": "the payout's id",
}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "/v1/wallets/{user_id}/top-ups": each {name} is a positive integer id
    summary: str
    answer: type[BaseModel]
    ask: Callable[..., Awaitable[dict]]  # ask(engine, body, **ids) -> the answer
    body: type | None = None  # a model, or a union of models told apart by a field
    body_optional: bool = False  # a request without a body (or `null`) uses the defaults
    query: type[BaseModel] | None = None  # a GET's parameters, handed to `ask` as its body
    status: int = 200
    errors: tuple[int, ...] = ()
    scope: str = "read"  # the key scope it needs (engine/keys.py): every GET reads
    operation: str = ""  # its operationId: a generated client's method name
    tag: str = ""  # the resource it belongs to: a generated client's module
    # The operations its answer's id leads to (OpenAPI links: a client, or a tool such as
    # Schemathesis, follows them from a made user, call or payout to what can be asked of it).
    leads_to: tuple[str, ...] = ()

    @functools.cached_property
    def body_adapter(self) -> TypeAdapter:
        """Reads the body (a model, or a union of models such as a top-up's) from JSON."""
        return TypeAdapter(self.body)

    def read_body(self, raw: bytes):
        """The body from its JSON; for an optional body, None when left out."""
        if self.body_optional and not raw.strip():
            return None
        return self.body_adapter.validate_json(raw)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s[1:-1] for s in self.path.split("/") if s.startswith("{"))

    @property
    def shape(self) -> tuple[str, ...]:
        """The path with every id as "{}": what the hot path matches a request's path on."""
        return tuple("{}" if s.startswith("{") else s for s in self.path.strip("/").split("/"))


async def _create_user(engine, body: m.NewUser) -> dict:
    return {"user_id": await engine.create_user(body.name, body.role)}


async def _wallet(engine, query: m.WalletQuery | None, user_id: int) -> dict:
    return await engine.balance(user_id, None if query is None else query.call_type)


async def _statement(engine, query: m.StatementQuery | None, user_id: int) -> dict:
    query = query or m.StatementQuery()
    return await engine.statement(user_id, query.after, query.limit)


async def _top_up(engine, body: m.Purchase | m.Bonus, user_id: int) -> dict:
    expires_at = getattr(body, "expires_at", None)  # a bonus's alone
    expires = None if expires_at is None else expires_at.timestamp()
    return await engine.top_up(user_id, body.amount, body.tx_type, body.idempotency_key, expires)


async def _spend(engine, body: m.Spend, user_id: int) -> dict:
    return await engine.spend(user_id, body.amount, body.idempotency_key)


async def _withdraw(engine, body: m.Withdrawal, user_id: int) -> dict:
    return await engine.withdraw(user_id, body.amount_paise, body.idempotency_key)


async def _payouts(engine, query: m.PayoutsQuery | None, user_id: int) -> dict:
    query = query or m.PayoutsQuery()
    out = await engine.payouts(user_id, query.limit, query.before)
    full = len(out) == query.limit
    return {"payouts": out, "next_before": out[-1]["payout_id"] if full else None}


async def _paid(engine, body: m.PayoutOutcome | None, payout_id: int) -> dict:
    return await engine.settle_payout(payout_id, "paid", None if body is None else body.reason)


async def _rejected(engine, body: m.PayoutOutcome | None, payout_id: int) -> dict:
    reason = None if body is None else body.reason
    return await engine.settle_payout(payout_id, "rejected", reason)


async def _refund(engine, body: m.NewRefund | None, call_id: int) -> dict:
    body = body or m.NewRefund()
    return await engine.refund_call(
        call_id, body.minutes, body.reason, body.idempotency_key, body.listener_pays
    )


async def _start_call(engine, body: m.NewCall) -> dict:
    return await engine.start_call(
        body.user_id, body.listener_id, body.call_type, body.idempotency_key, body.offer_code
    )


async def _get_call(engine, body, call_id: int) -> dict:
    return await engine.get_call(call_id)


async def _timeline(engine, body, call_id: int) -> dict:
    return await engine.explain_call(call_id)


async def _end_call(engine, body: m.EndCall | None, call_id: int) -> dict:
    return await engine.end_call(call_id, "hangup" if body is None else body.reason)


async def _heartbeat(engine, body, user_id: int) -> dict:
    return {"online": await engine.heartbeat(user_id)}


ROUTES = (
    Route("POST", "/v1/users", "create a user or listener", m.UserCreated, _create_user,
          m.NewUser, status=201, scope="calls",
          operation="create_user", tag="users",
          leads_to=("get_wallet", "top_up", "spend", "withdraw", "list_payouts", "get_statement",
                    "send_heartbeat")),
    Route("GET", "/v1/wallets/{user_id}", "balance and earnings now", m.Balance, _wallet,
          query=m.WalletQuery, errors=(404,),
          operation="get_wallet", tag="wallets"),
    Route("GET", "/v1/wallets/{user_id}/transfers", "the transfers, in time order, paged",
          m.Statement, _statement, query=m.StatementQuery, errors=(404,),
          operation="get_statement", tag="wallets"),
    Route("POST", "/v1/wallets/{user_id}/top-ups", "add coins (once per idempotency key)",
          m.Transfer, _top_up, m.TopUp, errors=(404, 409), scope="calls",
          operation="top_up", tag="wallets"),
    Route("POST", "/v1/wallets/{user_id}/spends", "take coins outside a call", m.Transfer,
          _spend, m.Spend, errors=(402, 404, 409), scope="calls",
          operation="spend", tag="wallets"),
    Route("POST", "/v1/wallets/{user_id}/withdrawals",
          "pay out a listener's earnings: held now, a pending payout", m.Withdrawn, _withdraw,
          m.Withdrawal, errors=(402, 404, 409), scope="payouts",
          operation="withdraw", tag="payouts",
          leads_to=("mark_payout_paid", "mark_payout_rejected")),
    Route("GET", "/v1/wallets/{user_id}/payouts", "a listener's payouts, newest first, paged",
          m.PayoutsPage, _payouts, query=m.PayoutsQuery,
          operation="list_payouts", tag="payouts"),
    Route("POST", "/v1/payouts/{payout_id}/paid", "a pending payout was paid; idempotent",
          m.PayoutSettlement, _paid, m.PayoutOutcome, body_optional=True, errors=(404, 409),
          scope="payouts",
          operation="mark_payout_paid", tag="payouts"),
    Route("POST", "/v1/payouts/{payout_id}/rejected",
          "a pending payout was rejected: its earnings back; idempotent", m.PayoutSettlement,
          _rejected, m.PayoutOutcome, body_optional=True, errors=(404, 409), scope="payouts",
          operation="mark_payout_rejected", tag="payouts"),
    Route("POST", "/v1/calls/{call_id}/refunds",
          "refund a call's last minutes: coins back, the earnings taken back", m.Refund, _refund,
          m.NewRefund, body_optional=True, status=201, errors=(402, 404, 409),
          scope="payouts",
          operation="refund_call", tag="calls"),
    Route("POST", "/v1/calls", "connect a call: minute 1 is charged now", m.Call, _start_call,
          m.NewCall, status=201, errors=(402, 404, 409), scope="calls",
          operation="start_call", tag="calls",
          leads_to=("get_call", "end_call", "get_call_timeline", "refund_call")),
    Route("GET", "/v1/calls/{call_id}", "a call now (live, or as stored once ended)", m.Call,
          _get_call, errors=(404,),
          operation="get_call", tag="calls"),
    Route("POST", "/v1/calls/{call_id}/end", "end a call; idempotent", m.Settlement, _end_call,
          m.EndCall, body_optional=True, errors=(404,), scope="calls",
          operation="end_call", tag="calls",
          leads_to=("refund_call", "get_call")),
    Route("GET", "/v1/calls/{call_id}/timeline", "every minute of a call explained", m.Timeline,
          _timeline, errors=(404,),
          operation="get_call_timeline", tag="calls"),
    Route("POST", "/v1/presence/{user_id}/heartbeat", "the user is online", m.Online,
          _heartbeat, scope="calls",
          operation="send_heartbeat", tag="presence"),
)  # fmt: skip


def register(app: FastAPI) -> None:
    """Give every route of the table to FastAPI: the schema documents it, and FastAPI
    answers a request the hot path leaves to it the same way."""
    for route in ROUTES:
        app.add_api_route(
            route.path,
            _endpoint(route),
            methods=[route.method],
            status_code=route.status,
            summary=route.summary,
            response_model=route.answer,
            responses=m.errors(*route.errors) | _links(route),
            name=route.operation,
            operation_id=route.operation,
            tags=[route.tag],
            openapi_extra={"security": scope_security(route.scope)},
        )


def _endpoint(route: Route):
    """A FastAPI endpoint for `route`, its signature made from the table: the request, the
    body (if any), each id as a positive integer in the path."""

    async def endpoint(request: Request, **given):
        engine = await request.app.state.get_engine()
        body = given.pop("body", None)
        if route.query is not None:
            fields = {f: given.pop(f) for f in route.query.model_fields}
            try:
                body = route.query(**fields)
            except ValidationError as e:  # a bound FastAPI's Query does not check
                raise InvalidInput(validation_message(e.errors())) from None
        return answer(await route.ask(engine, body, **given), route.status)

    params = [inspect.Parameter("request", KEYWORD, annotation=Request)]
    if route.body is not None:
        # An optional body may be left out (the schema says: the model, not required).
        kind = route.body | None if route.body_optional else route.body
        default = Body(None) if route.body_optional else Body()
        params.append(inspect.Parameter("body", KEYWORD, default=default, annotation=kind))
    for name, f in (route.query.model_fields if route.query is not None else {}).items():
        params.append(
            inspect.Parameter(
                name,
                KEYWORD,
                # the model's bounds (a limit's range, a cursor's pattern) stated in the schema
                default=Query(f.default, description=f.description, **_bounds(f)),
                annotation=f.annotation,
            )
        )
    for name in route.ids:
        params.append(
            inspect.Parameter(
                name,
                KEYWORD,
                default=Path(ge=1, le=AMOUNT_MAX, description=ID_DESCRIPTIONS[name]),
                annotation=int,
            )
        )
    endpoint.__signature__ = inspect.Signature(params)
    endpoint.__name__ = route.operation
    return endpoint


def _bounds(field) -> dict:
    """A model field's constraints (`ge`, `le`, `pattern`...) as keyword arguments."""
    out = {}
    for c in field.metadata:
        if dataclasses.is_dataclass(c):
            out |= dataclasses.asdict(c)
        else:
            out |= {k: v for k, v in vars(c).items() if not k.startswith("_") and v is not None}
    return out


def _links(route: Route) -> dict:
    """The answer's OpenAPI links: each operation it leads to, given the id the answer holds."""
    if not route.leads_to:
        return {}
    by_name = {r.operation: r for r in ROUTES}
    links = {}
    for name in route.leads_to:
        (param,) = by_name[name].ids
        links[name] = {"operationId": name, "parameters": {param: f"$response.body#/{param}"}}
    return {route.status: {"links": links}}
