"""The admin site's pages for the ``agentops`` app live in their rooms; Django discovers them through here."""

from agentops.config import admin as config_admin
from agentops.keys import admin as keys_admin

__all__ = ["config_admin", "keys_admin"]
