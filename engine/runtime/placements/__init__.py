"""Where wallets and calls live: the `Placement` protocol and its two placements, `sharded`
and `actor-per-call`."""
