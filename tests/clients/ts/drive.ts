// A whole call through a TypeScript client made from the schema the running service serves
// (`schema.d.ts`: openapi-typescript; calls: openapi-fetch): users, a top-up, a call started,
// read and ended, the wallet, the statement, the events page, a payout paid, a refund, and a
// 402 and a 404 read as typed errors. `tsc` checks it against the schema, then `node` runs it:
// `node dist/drive.js URL KEY` prints `whole call: ok`.
import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

const [url, key] = process.argv.slice(2);
const api = createClient<paths>({ baseUrl: url, headers: { Authorization: `Bearer ${key}` } });

function must<T>(answer: { data?: T; error?: unknown; response: Response }, what: string): T {
  if (answer.data === undefined) {
    throw new Error(`${what}: ${answer.response.status} ${JSON.stringify(answer.error)}`);
  }
  return answer.data;
}

function check(ok: boolean, what: string, value: unknown): void {
  if (!ok) throw new Error(`${what}: ${JSON.stringify(value)}`);
}

const user = must(await api.POST("/v1/users", { body: { name: "asha" } }), "user").user_id;
const listener = must(
  await api.POST("/v1/users", { body: { name: "ravi", role: "listener" } }),
  "listener",
).user_id;
const topped = must(
  await api.POST("/v1/wallets/{user_id}/top-ups", {
    params: { path: { user_id: user } },
    body: { amount: 100, idempotency_key: "o-1" },
  }),
  "top-up",
);
check(topped.applied && topped.balance_coins === 100, "top-up", topped);

const call = must(
  await api.POST("/v1/calls", { body: { user_id: user, listener_id: listener } }),
  "start",
);
check(call.billed_minutes === 1 && !Number.isNaN(Date.parse(call.connected_at)), "start", call);
const read = must(
  await api.GET("/v1/calls/{call_id}", { params: { path: { call_id: call.call_id } } }),
  "read",
);
check(read.status === "ongoing", "read", read);
const ended = must(
  await api.POST("/v1/calls/{call_id}/end", { params: { path: { call_id: call.call_id } } }),
  "end",
);
check(ended.end_reason === "hangup" && ended.coins_spent === 10, "end", ended);

const wallet = must(
  await api.GET("/v1/wallets/{user_id}", { params: { path: { user_id: listener } } }),
  "wallet",
);
check(wallet.earnings_paise === 100, "wallet", wallet);
const statement = must(
  await api.GET("/v1/wallets/{user_id}/transfers", { params: { path: { user_id: user } } }),
  "statement",
);
check(statement.transfers.map((r) => r.kind).join() === "purchase,minutes", "statement", statement);

const events = must(
  await api.GET("/v1/events", { params: { query: { user_id: user } } }),
  "events",
).events;
check(events.map((e) => e.type).join() === "call_started,call_settled", "events", events);
const settled = events[1];
if (settled?.type === "call_settled") {
  check(settled.data.end_reason === "hangup", "settled event", settled); // typed by its `type`
}

const payout = must(
  await api.POST("/v1/wallets/{user_id}/withdrawals", {
    params: { path: { user_id: listener } },
    body: { amount_paise: 60, idempotency_key: "p" },
  }),
  "withdraw",
);
check(payout.status === "pending" && payout.earnings_paise === 40, "withdraw", payout);
const paid = must(
  await api.POST("/v1/payouts/{payout_id}/paid", {
    params: { path: { payout_id: payout.payout_id } },
  }),
  "paid",
);
check(paid.status === "paid", "paid", paid);
const refund = must(
  await api.POST("/v1/calls/{call_id}/refunds", {
    params: { path: { call_id: call.call_id } },
    body: { listener_pays: false },
  }),
  "refund",
);
check(refund.minutes === 1 && refund.coins === 10 && refund.paise === 0, "refund", refund);

const poor = must(await api.POST("/v1/users", { body: { name: "nobody-pays" } }), "poor").user_id;
const refused = await api.POST("/v1/calls", { body: { user_id: poor, listener_id: listener } });
check(
  refused.response.status === 402 && refused.error?.error.type === "InsufficientCoins",
  "402",
  refused.error,
);
const missing = await api.GET("/v1/calls/{call_id}", {
  params: { path: { call_id: 2 ** 53 - 1 } },
});
check(missing.response.status === 404 && missing.error?.error.type === "UnknownCall", "404", missing.error);
console.log("whole call: ok");
