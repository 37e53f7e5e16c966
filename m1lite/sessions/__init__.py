"""Session stores: one live document per visitor, and the flusher that turns a visitor
who left into one `sessionTimeout` event (see docs/sessions.md).

- documents.py: ops, merging, the timeout event (shared with `m1lite flush`)
- store.py: one store in memory and its LMDB records
- index.py: the store's query index (the `/query` engine over live sessions)
- registry.py: the environment's stores
- flusher.py: the built-in flusher
- remote.py: `m1lite flush`, the same over the public API
"""

from m1lite.sessions.flusher import Flusher
from m1lite.sessions.registry import SessionStores

__all__ = ["Flusher", "SessionStores"]
