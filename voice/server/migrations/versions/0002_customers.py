"""Context per customer and text conversations (issue 18): customer_context,
customer_conversations (voice/server/customers.py) and channel_messages
(voice/server/conversations.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from voice.server import conversations, customers
    from voice.server.db import Connection

    db = Connection(op.get_bind())
    customers.create(db)
    conversations.create(db)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS channel_messages")
    op.execute("DROP TABLE IF EXISTS customer_conversations")
    op.execute("DROP TABLE IF EXISTS customer_context")
