"""Here only so that the older API's `from api.clients.db import get_db_pool` keeps working."""
