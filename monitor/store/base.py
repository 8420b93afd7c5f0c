"""The store's contract: what the rest of the monitor needs from its database.

(placeholder during the move: the Protocol is written in the next commit)
"""

from monitor.store.sqlite import Store as Store
