"""Names the older code imports (`api.clients.db`)."""
