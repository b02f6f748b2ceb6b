"""Alembic's environment: runs on the connection `migrate` passes in, never from a config file."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
