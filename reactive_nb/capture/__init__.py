"""Where changes come from: this process's writes and writes made by anyone else.

Every source turns what it sees into small events for the layer above, which never
depends on how a source learns about a write (SQLAlchemy events, PostgreSQL NOTIFY,
a SQLite change table; a logical-replication source can be added later):

- ``external``: ``ExternalChange``, the event produced by the external sources;
- ``postgres``: statement-level triggers + NOTIFY, and the LISTEN thread;
- ``sqlite``: row triggers that bump a change table, and the ``data_version`` poller.

Submodules are imported lazily: they pull in psycopg / SQLAlchemy at top level.
"""
