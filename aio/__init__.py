"""Generic asyncio tools the engine's parts share: bounded batching of requests (`batching`),
retry with jittered backoff (`retry`), bounded waits (`waiting`), when a buffer is flushed
(`flushing`), work done once for concurrent callers (`once`). No I/O of their own: nothing here
imports asyncpg, redis or Ray."""
