"""The Ray runtime: everything that imports Ray. Where wallets and calls live (the shard, the
per-call actors, the host they share, the placements), the writer actor, the jobs' tasks,
joining the cluster, and reading a running engine's actors."""
