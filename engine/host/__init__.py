"""A host: the wallets of some people and the calls they pay, in one process (a shard hosts
many, a wallet actor one), and their history in time order. Ray-free: the Ray actors that
carry a host are in `engine.runtime.ray_actors`."""
