"""Operator tools: the CLI, the demo, chaos and its fault proxies. They use the Engine's
public API, `engine.runtime`'s helpers for the cluster, and `persistence` for what they read."""
