"""The Ray runtime: every module here imports Ray. The placements (`placements`: where wallets
and calls live), the Ray actors that carry the hosts and the writer (`ray_actors`), the seam to
Ray (`raycalls`: names, remote calls, fan-outs), joining the cluster (`cluster`), the jobs'
tasks (`scheduler`) and the engine's metrics (`metrics`). The hosts themselves are Ray-free
(`engine.host`)."""
