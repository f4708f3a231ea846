"""The HTTP API's contract: every request body, answer, event and error as a typed model, so
that the OpenAPI schema at /openapi.json is enough for a client generator. `kinds` has the
words (one named enum per idea, from the tuples the engine checks against) and the scalar
rules; `requests` what a client sends; `replies` what the engine answers; `events` each event
type; `errors` how a refusal looks."""

from engine.http.contract.errors import DOOR_ERRORS, ERRORS, Error, ErrorDetail, errors
from engine.http.contract.events import Event, Settlement
from engine.http.contract.kinds import (
    Answer,
    Body,
    CallStatus,
    CallType,
    DeliveryStatus,
    EndReason,
    EventType,
    Id,
    PayoutStatus,
    Role,
    Tier,
    Timestamp,
    TopUpType,
    Unit,
    WebhookStatus,
)
from engine.http.contract.replies import (
    Balance,
    Bucket,
    Call,
    CallEnd,
    CallsPage,
    EventsPage,
    Health,
    Online,
    Payout,
    PayoutSettlement,
    PayoutsPage,
    Readiness,
    Refund,
    Statement,
    StatementRow,
    StoredCall,
    Timeline,
    TimelineMinute,
    Transfer,
    UserCreated,
    WalletEvent,
    Withdrawn,
)
from engine.http.contract.requests import (
    REFUND_MINUTES_MAX,
    Bonus,
    EndCall,
    NewCall,
    NewRefund,
    NewUser,
    PayoutOutcome,
    PayoutsQuery,
    Purchase,
    Spend,
    StatementQuery,
    TopUp,
    WalletQuery,
    Withdrawal,
)

__all__ = [
    "DOOR_ERRORS", "ERRORS", "REFUND_MINUTES_MAX", "Answer", "Balance", "Body", "Bonus", "Bucket",
    "Call", "CallEnd", "CallStatus", "CallType", "CallsPage", "EndCall", "EndReason", "Error",
    "ErrorDetail", "Event", "EventType", "EventsPage", "Health", "Id", "NewCall", "NewRefund",
    "NewUser", "Online", "Payout", "PayoutOutcome", "PayoutSettlement", "PayoutStatus",
    "PayoutsPage", "PayoutsQuery", "Purchase", "Readiness", "Refund", "Role", "Settlement", "Spend",
    "Statement", "StatementQuery", "StatementRow", "StoredCall", "Tier", "Timeline",
    "TimelineMinute", "Timestamp", "TopUp", "TopUpType", "Transfer", "Unit", "UserCreated",
    "WalletEvent", "WalletQuery", "Withdrawal", "Withdrawn", "errors", "WebhookStatus",
    "DeliveryStatus",
]  # fmt: skip
