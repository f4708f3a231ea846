"""A whole call through the Python client `openapi-python-client` generated from the schema the
running service serves (`python drive.py URL KEY`, the client's package on the path): users, a
top-up, a call started, read and ended, the wallet, the statement, the events page, a payout
paid, a refund, and a 402 and a 404 read as typed errors. Prints `whole call: ok`."""

import datetime as dt
import sys

from client import AuthenticatedClient
from client.api.calls import end_call, get_call, refund_call, start_call
from client.api.events import list_events
from client.api.payouts import mark_payout_paid, withdraw
from client.api.users import create_user
from client.api.wallets import get_statement, get_wallet, top_up
from client.models import (
    CallSettled,
    CallStarted,
    CallStatus,
    EndReason,
    Error,
    NewCall,
    NewRefund,
    NewUser,
    PayoutStatus,
    Purchase,
    Role,
    Withdrawal,
)

url, key = sys.argv[1], sys.argv[2]
api = AuthenticatedClient(base_url=url, token=key, raise_on_unexpected_status=True, timeout=30)

user = create_user.sync(client=api, body=NewUser(name="asha")).user_id
listener = create_user.sync(client=api, body=NewUser(name="ravi", role=Role.LISTENER)).user_id
topped = top_up.sync(user, client=api, body=Purchase(amount=100, idempotency_key="o-1"))
assert topped.applied and topped.balance_coins == 100, topped

call = start_call.sync(client=api, body=NewCall(user_id=user, listener_id=listener))
assert isinstance(call.connected_at, dt.datetime) and call.billed_minutes == 1, call
read = get_call.sync(call.call_id, client=api)
assert read.status == CallStatus.ONGOING and read.minutes_affordable == 9, read
ended = end_call.sync(call.call_id, client=api)  # no body: a hang-up
assert ended.end_reason == EndReason.HANGUP and ended.coins_spent == 10, ended

wallet = get_wallet.sync(listener, client=api)
assert wallet.earnings_paise == ended.earnings_paise == 100, wallet
statement = get_statement.sync(user, client=api)
assert [r.kind for r in statement.transfers] == ["purchase", "minutes"], statement
assert statement.transfers[-1].balance_after == 90

events = list_events.sync(client=api, user_id=user).events
assert [type(e) for e in events] == [CallStarted, CallSettled], events
assert isinstance(events[0].data.connected_at, dt.datetime)
assert events[1].data.end_reason == EndReason.HANGUP

payout = withdraw.sync(listener, client=api, body=Withdrawal(amount_paise=60, idempotency_key="p"))
assert payout.status == PayoutStatus.PENDING and payout.earnings_paise == 40, payout
paid = mark_payout_paid.sync(payout.payout_id, client=api)  # no body
assert paid.status == PayoutStatus.PAID, paid
refund = refund_call.sync(call.call_id, client=api, body=NewRefund(listener_pays=False))
assert (refund.minutes, refund.coins, refund.paise) == (1, 10, 0), refund

poor = create_user.sync(client=api, body=NewUser(name="nobody-pays")).user_id
refused = start_call.sync(client=api, body=NewCall(user_id=poor, listener_id=listener))
assert isinstance(refused, Error) and refused.error.type_ == "InsufficientCoins", refused
missing = get_call.sync(2**53 - 1, client=api)
assert isinstance(missing, Error) and missing.error.type_ == "UnknownCall", missing
print("whole call: ok")
