"""Extra indexes that make the backend's queries index lookups instead of table scans. Created once per process,
idempotently (CREATE INDEX IF NOT EXISTS); Argilla's migrations never touch them, and dropping them is harmless."""

from __future__ import annotations

import logging
import re

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_LOGGER = logging.getLogger(__name__)

# name -> (table, column list). Every query of the backend starts from one of these.
_STATIC_INDEXES = {
    # The annotation queue: records of one dataset and status, walked in id order (see engine._rotated_page).
    "ix_wbsql_records_dataset_status_id": ("records", "dataset_id, status, id"),
    "ix_wbsql_records_dataset_id": ("records", "dataset_id, id"),
    # The default order of a search without a user: insertion order.
    "ix_wbsql_records_dataset_inserted": ("records", "dataset_id, inserted_at"),
    # One user's responses: the queue's count and the per-user progress read only these.
    "ix_wbsql_responses_user_record": ("responses", "user_id, record_id, status"),
    # Whether the vectors cached for similarity search are still current.
    "ix_wbsql_vectors_settings_updated": ("vectors", "vector_settings_id, updated_at"),
}

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def metadata_index_name(property_name: str) -> str:
    return "ix_wbsql_md_" + re.sub(r"[^A-Za-z0-9_]", "_", property_name)


async def create_static_indexes(db: AsyncSession) -> None:
    for name, (table, columns) in _STATIC_INDEXES.items():
        await db.execute(text(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})"))
    await db.commit()


async def create_metadata_index(db: AsyncSession, property_name: str) -> None:
    """An expression index on one metadata key, for its filters, sorts and metrics. SQLite only: there the
    expression must match the query's text exactly, which json_sql.JsonSql guarantees for safe names."""
    if db.bind.dialect.name != "sqlite" or not _SAFE_NAME.match(property_name):
        return
    expression = f"json_extract(metadata, '$.\"{property_name}\"')"
    # The trailing id makes the index covering for filters that then probe responses by record id.
    index = metadata_index_name(property_name)
    statement = f"CREATE INDEX IF NOT EXISTS {index} ON records (dataset_id, {expression}, id)"
    await db.execute(text(statement))
    await db.commit()


async def create_all(db: AsyncSession) -> None:
    if db.bind.dialect.name == "sqlite":
        # WAL lets the UI's reads proceed while a bulk upload writes; it is a property of the file and persists.
        try:
            await db.execute(text("PRAGMA journal_mode=WAL"))
        except Exception as error:  # another connection holds a lock: keep the current mode
            _LOGGER.warning("could not switch SQLite to WAL: %s", error)
    await create_static_indexes(db)
    names = await db.execute(text("SELECT DISTINCT name FROM metadata_properties"))
    for (name,) in names.all():
        await create_metadata_index(db, name)
