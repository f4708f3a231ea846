"""The older system's background-task API, kept working on top of the engine."""
