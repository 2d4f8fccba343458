"""`workbench-sql`: Argilla's search engine interface answered from Argilla's own SQL database.

The Elasticsearch backend copies every record, response and suggestion into an index and keeps it in sync
through the write hooks below. Here the SQL rows are the index, so the hooks have nothing to copy, and every
read is a query on the rows the request just committed. No second store means nothing to reindex or to drift.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from argilla_server.database import AsyncSessionLocal
from argilla_server.enums import MetadataPropertyType, SimilarityOrder
from argilla_server.models import Dataset, MetadataProperty, Record, Response, Suggestion, User, VectorSettings
from argilla_server.search_engine.base import (
    Filter,
    FloatMetadataMetrics,
    IntegerMetadataMetrics,
    MetadataMetrics,
    Order,
    SearchEngine,
    SearchResponseItem,
    SearchResponses,
    TermsMetrics,
    TextQuery,
)
from sqlalchemy import Uuid, bindparam, exists, func, literal_column, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from . import indexes, vectors
from .filters import Conditions, DatasetSchema, FilterTranslator
from .json_sql import JsonSql

ENGINE_NAME = "workbench-sql"
# Per-user order: a true shuffle while the matching records are this few, an index-friendly rotation beyond.
_SHUFFLE_IN_MEMORY_UP_TO = 5000
_LOGGER = logging.getLogger(__name__)

_prepared = False
_prepare_lock: asyncio.Lock | None = None
_metadata_indexes: set[str] = set()


async def _prepare_database() -> None:
    """Create the backend's indexes once per process. A failure (a locked SQLite file) is retried later."""
    global _prepared, _prepare_lock
    if _prepared:
        return
    _prepare_lock = _prepare_lock or asyncio.Lock()
    async with _prepare_lock:
        if _prepared:
            return
        try:
            async with AsyncSessionLocal() as db:
                await indexes.create_all(db)
            _prepared = True
        except Exception as error:
            _LOGGER.warning("workbench-sql: indexes not created yet (%s); searches still work, slower", error)


@SearchEngine.register(ENGINE_NAME)
class SQLSearchEngine(SearchEngine):
    def __init__(self) -> None:
        self._db: AsyncSession | None = None

    @classmethod
    async def new_instance(cls) -> SQLSearchEngine:
        await _prepare_database()
        return cls()

    async def _session(self) -> AsyncSession:
        if self._db is None:
            self._db = AsyncSessionLocal()
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> bool:
        db = await self._session()
        return (await db.execute(text("SELECT 1"))).scalar() == 1

    async def info(self) -> dict:
        db = await self._session()
        return {"name": ENGINE_NAME, "database": db.bind.dialect.name}

    # -- write hooks: the SQL rows are already the index -------------------------------------------------------

    async def create_index(self, dataset: Dataset) -> None:
        pass

    async def delete_index(self, dataset: Dataset) -> None:
        vectors.forget()

    async def configure_metadata_property(self, dataset: Dataset, metadata_property: MetadataProperty) -> None:
        # Not here: the caller's transaction still holds SQLite's write lock, so DDL from this session would wait
        # on it. The expression index is created by the first search that needs it.
        pass

    async def configure_index_vectors(self, vector_settings: VectorSettings) -> None:
        pass

    async def index_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        pass

    async def partial_record_update(self, record: Record, **update: Any) -> None:
        pass

    async def delete_records(self, dataset: Dataset, records: Iterable[Record]) -> None:
        pass

    async def update_record_response(self, response: Response) -> None:
        pass

    async def delete_record_response(self, response: Response) -> None:
        pass

    async def update_record_suggestion(self, suggestion: Suggestion) -> None:
        pass

    async def delete_record_suggestion(self, suggestion: Suggestion) -> None:
        pass

    # -- progress and metrics ----------------------------------------------------------------------------------

    async def get_dataset_progress(self, dataset: Dataset) -> dict:
        if dataset.is_draft:
            return {}
        db = await self._session()
        rows = await db.execute(
            select(Record.status, func.count()).where(Record.dataset_id == dataset.id).group_by(Record.status)
        )
        counts = {str(status.value if hasattr(status, "value") else status): n for status, n in rows if n}
        return {"total": sum(counts.values()), **counts}

    async def get_dataset_user_progress(self, dataset: Dataset, user: User) -> dict:
        # Counts this user's responses by status. (Elasticsearch aggregates the flattened `responses.status` of the
        # records this user answered, so there a record answered by two users with different statuses is counted
        # under both; that double count is an artefact of its mapping, not something to copy.)
        if dataset.is_draft:
            return {}
        db = await self._session()
        in_dataset = exists(select(1).where(Record.id == Response.record_id, Record.dataset_id == dataset.id))
        rows = await db.execute(
            select(Response.status, func.count())
            .where(Response.user_id == user.id, in_dataset)
            .group_by(Response.status)
        )
        counts = {str(status.value if hasattr(status, "value") else status): n for status, n in rows if n}
        return {"total": sum(counts.values()), **counts}

    async def compute_metrics_for(self, metadata_property: MetadataProperty) -> MetadataMetrics:
        db = await self._session()
        await self._ensure_metadata_index(db, metadata_property.name)
        json = JsonSql(db.bind.dialect.name)
        keys = [metadata_property.name]
        in_dataset = Record.dataset_id == metadata_property.dataset_id
        if metadata_property.type == MetadataPropertyType.terms:
            return await self._terms_metrics(db, json, keys, in_dataset)
        low, high = await self._min_max(db, json, keys, in_dataset)
        if metadata_property.type == MetadataPropertyType.integer:
            return IntegerMetadataMetrics(min=_int_or_none(low), max=_int_or_none(high))
        return FloatMetadataMetrics(min=low, max=high)

    async def _min_max(self, db: AsyncSession, json: JsonSql, keys: list[str], in_dataset) -> tuple[Any, Any]:
        value = json.extract_number(Record.metadata_, keys)
        if json.is_postgres:
            query = select(func.min(value), func.max(value)).where(in_dataset, value.is_not(None))
            return tuple((await db.execute(query)).one())
        # Two ends of the expression index instead of an aggregate over every record. SQLite orders numbers before
        # text, so the low end is numeric whenever any value is; the high end is checked and, if a stray text value
        # sits there, the aggregate over numeric values decides.
        numeric = func.json_type(Record.metadata_, json._sqlite_path(keys)).in_(["integer", "real"])
        base = select(value).where(in_dataset, value.is_not(None)).limit(1)
        low = (await db.execute(base.order_by(value.asc()))).scalar()
        high = (await db.execute(base.order_by(value.desc()))).scalar()
        if isinstance(low, str) or isinstance(high, str):
            query = select(func.min(value), func.max(value)).where(in_dataset, numeric)
            low, high = (await db.execute(query)).one()
        return low, high

    async def _terms_metrics(self, db: AsyncSession, json: JsonSql, keys: list[str], in_dataset) -> TermsMetrics:
        # Elasticsearch's keyword terms aggregation: a list value counts once for each distinct element.
        value = json.extract(Record.metadata_, keys)
        counts: dict[str, int] = {}
        if json.is_postgres:
            elements, is_scalar, term = json.pg_scalar_elements(Record.metadata_, keys)
            query = (
                select(term, func.count(Record.id.distinct()))
                .select_from(Record)
                .join(elements, literal_column("true"))
                .where(in_dataset, is_scalar)
                .group_by(term)
            )
            counts = {str(term): n for term, n in await db.execute(query)}
        else:
            # Both queries read only the expression index. JSON text of a list starts with '[', and so sorts in
            # ['[', '\\'): values outside that range are scalars, grouped directly; values inside it are expanded by
            # json_each (which also yields a scalar string that happens to start with '[' as itself).
            outside = or_(value < "[", value >= "\\")
            scalars = select(value, func.count()).where(in_dataset, value.is_not(None), outside).group_by(value)
            for term, n in await db.execute(scalars):
                counts[str(term)] = counts.get(str(term), 0) + n
            elements = func.json_each(Record.metadata_, json._sqlite_path(keys)).table_valued("value", "type")
            expanded = (
                select(elements.c.value, func.count(Record.id.distinct()))
                .select_from(Record)
                .join(elements, literal_column("1") == 1)
                .where(in_dataset, value >= "[", value < "\\", elements.c.type.not_in(["null", "object", "array"]))
                .group_by(elements.c.value)
            )
            for term, n in await db.execute(expanded):
                counts[str(term)] = counts.get(str(term), 0) + n
        counted = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        return TermsMetrics(
            total=sum(n for _, n in counted),
            values=[TermsMetrics.TermCount(term=term, count=n) for term, n in counted],
        )

    # -- search ------------------------------------------------------------------------------------------------

    async def search(
        self,
        dataset: Dataset,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        sort: list[Order] | None = None,
        offset: int = 0,
        limit: int = 100,
        user_id: UUID | None = None,
    ) -> SearchResponses:
        db = await self._session()
        translator = await self._translator(db, dataset.id, filter, sort)
        conditions = translator.conditions(filter, query)
        total = await self._count(db, dataset.id, conditions)
        if limit <= 0 or offset >= total:
            return SearchResponses(items=[], total=total)
        where = [Record.dataset_id == dataset.id, *conditions.all()]
        if sort:
            order = [*translator.order_by(sort), *_insertion_order(db)]
            page = select(Record.id).where(*where).order_by(*order).offset(offset).limit(limit)
            record_ids = list((await db.execute(page)).scalars())
        elif user_id is not None and total <= _SHUFFLE_IN_MEMORY_UP_TO:
            record_ids = await self._shuffled_page(db, where, user_id, offset, limit)
        elif user_id is not None:
            record_ids = await self._rotated_page(db, where, user_id, offset, limit)
        else:
            if conditions.clauses and await self._dense(db, dataset.id, total, offset + limit):
                # Walking the insertion-order index finds the page after ~(offset + limit) / density rows, sooner
                # than collecting and sorting every match through a metadata index.
                unindexed = FilterTranslator(translator.schema, JsonSql(db.bind.dialect.name, False))
                where = [Record.dataset_id == dataset.id, *unindexed.conditions(filter, query).all()]
            page = select(Record.id).where(*where).order_by(*_insertion_order(db)).offset(offset).limit(limit)
            record_ids = list((await db.execute(page)).scalars())
        # Elasticsearch scores every hit of a filter-only query 1.0; a text query's relevance is not modelled.
        return SearchResponses(items=[SearchResponseItem(record_id=rid, score=1.0) for rid in record_ids], total=total)

    async def _dense(self, db: AsyncSession, dataset_id: UUID, total: int, wanted: int) -> bool:
        """Whether scanning in insertion order reads fewer rows (wanted * size / total) than the matches (total)."""
        if db.bind.dialect.name != "sqlite" or total == 0:
            return False
        size = (await db.execute(select(func.count()).where(Record.dataset_id == dataset_id))).scalar_one()
        return wanted * size < total * total

    async def _count(self, db: AsyncSession, dataset_id: UUID, conditions: Conditions) -> int:
        in_dataset = [Record.dataset_id == dataset_id, *conditions.clauses]
        matching = (await db.execute(select(func.count()).select_from(Record).where(*in_dataset))).scalar_one()
        if conditions.pending_for_user is None:
            return matching
        # Records the user has not answered = all matching records - the matching records the user answered. The
        # second count starts from the user's own responses (the EXISTS makes the planner drive from them), so the
        # queue's total never probes every record of the dataset.
        answered = aliased(Response)
        record_matches = exists(select(1).where(Record.id == answered.record_id, *in_dataset))
        answered_count = (
            select(func.count())
            .select_from(answered)
            .where(answered.user_id == conditions.pending_for_user, record_matches)
        )
        return matching - (await db.execute(answered_count)).scalar_one()

    async def _shuffled_page(self, db: AsyncSession, where: list, user_id: UUID, offset: int, limit: int) -> list:
        """A page of a per-user shuffle: Elasticsearch orders a user's records by random_score seeded with the
        user id, so annotators sharing a dataset work through it in different orders. Up to a few thousand
        matching records, sorting their ids by a hash of (user, record) costs a few milliseconds."""
        salt = UUID(str(user_id)).bytes
        ids = list((await db.execute(select(Record.id).where(*where))).scalars())
        ids.sort(key=lambda record_id: hashlib.blake2b(record_id.bytes, digest_size=8, key=salt).digest())
        return ids[offset : offset + limit]

    async def _rotated_page(self, db: AsyncSession, where: list, user_id: UUID, offset: int, limit: int) -> list:
        """The per-user order for larger datasets, where hashing every match per request would be a full scan.
        Record ids are random (uuid4), so the id order is already a shuffle; each user starts it at their own id
        and wraps around, so annotators start in different places. Both halves are index range scans that stop
        after offset + limit rows."""
        wanted = offset + limit
        seed = bindparam("seed", user_id, type_=Uuid())
        after = select(Record.id).where(*where, Record.id >= seed).order_by(Record.id).limit(wanted)
        first = list((await db.execute(after)).scalars())
        if len(first) < wanted:
            before = select(Record.id).where(*where, Record.id < seed).order_by(Record.id).limit(wanted - len(first))
            first += list((await db.execute(before)).scalars())
        return first[offset:wanted]

    async def similarity_search(
        self,
        dataset: Dataset,
        vector_settings: VectorSettings,
        value: list[float] | None = None,
        record: Record | None = None,
        query: TextQuery | str | None = None,
        filter: Filter | None = None,
        max_results: int = 100,
        order: SimilarityOrder = SimilarityOrder.most_similar,
        threshold: float | None = None,
    ) -> SearchResponses:
        if bool(value) == bool(record):
            raise ValueError("Must provide either vector value or record to compute the similarity search")
        db = await self._session()
        excluded = None
        if not value:
            excluded = record.id
            value = record.vector_value_by_vector_settings(vector_settings)
        if not value:
            raise ValueError("Cannot find a vector value to apply with provided info")
        if order == SimilarityOrder.least_similar:
            value = [-x for x in value]
        allowed = None
        if filter is not None or query is not None:
            translator = await self._translator(db, dataset.id, filter, None)
            conditions = translator.conditions(filter, query)
            ids = select(Record.id).where(Record.dataset_id == dataset.id, *conditions.all())
            allowed = set((await db.execute(ids)).scalars())
        hits = await vectors.nearest(db, vector_settings.id, value, max_results, allowed, excluded)
        total = len(hits)
        if threshold is not None:
            hits = [hit for hit in hits if hit[1] >= threshold]
        return SearchResponses(items=[SearchResponseItem(record_id=rid, score=s) for rid, s in hits], total=total)

    # -- helpers -----------------------------------------------------------------------------------------------

    async def _translator(self, db: AsyncSession, dataset_id: UUID, filter, sort) -> FilterTranslator:
        schema = await DatasetSchema.load(db, dataset_id)
        for name in _metadata_names(filter, sort):
            await self._ensure_metadata_index(db, name)
        return FilterTranslator(schema, JsonSql(db.bind.dialect.name))

    async def _ensure_metadata_index(self, db: AsyncSession, name: str) -> None:
        if name in _metadata_indexes:
            return
        try:
            await indexes.create_metadata_index(db, name)
            _metadata_indexes.add(name)
        except Exception as error:
            await db.rollback()
            _LOGGER.warning("workbench-sql: no index for metadata %r yet (%s)", name, error)


def _insertion_order(db: AsyncSession) -> list:
    # Elasticsearch returns equally scored hits in index order, i.e. the order records were logged. Records logged
    # in one batch can share inserted_at; SQLite's rowid keeps their order, PostgreSQL falls back to the id.
    if db.bind.dialect.name == "sqlite":
        return [Record.inserted_at.asc(), literal_column("records.rowid").asc()]
    return [Record.inserted_at.asc(), Record.id.asc()]


def _metadata_names(filter, sort) -> set[str]:
    from .filters import _flatten

    names = set()
    for leaf in _flatten(filter):
        if hasattr(leaf.scope, "metadata_property"):
            names.add(leaf.scope.metadata_property)
    for order in sort or []:
        if hasattr(order.scope, "metadata_property"):
            names.add(order.scope.metadata_property)
    return names


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
