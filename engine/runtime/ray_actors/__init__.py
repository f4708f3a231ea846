"""The engine's Ray actors: a shard (many wallets), a wallet actor and a call actor
(actor-per-call), the face they share over a host (`host_actor`), and the writer actor."""
