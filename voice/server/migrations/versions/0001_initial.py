"""The store's schema as it was before migrations: calls, events and every module's tables.

Every statement creates only what is missing, so this revision also adopts a store written
before migrations existed, keeping its data; one from before the analytics rollups gets them
filled from its events.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    from voice.integrations import routing, zendesk
    from voice.integrations.outbox import Outbox
    from voice.quality import corrections, reviews, sampling
    from voice.server import analytics
    from voice.server.db import Connection
    from voice.server.store import SCHEMA

    db = Connection(op.get_bind())
    had_analytics = db.has_table(analytics.TABLES[0])
    db.executescript(SCHEMA)
    Outbox.create(db)
    routing.create(db)
    zendesk.create(db)
    corrections.create(db)
    reviews.create(db)
    sampling.create(db)
    analytics.create(db)
    if db.postgresql:
        db.execute(JSON_EXTRACT)
    if not had_analytics:
        analytics.rebuild(db)


def downgrade() -> None:
    raise NotImplementedError("the first revision is not undone: delete the database instead")


# SQLite's json_extract(doc, '$.a.b') for PostgreSQL: the value at that path as text (a string
# unquoted, an object or array as JSON, JSON null as NULL), as the store's queries use it.
JSON_EXTRACT = """
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS
$$ SELECT doc::jsonb #>> string_to_array(substr(path, 3), '.') $$
"""
