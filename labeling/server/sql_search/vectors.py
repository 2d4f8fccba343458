"""Cosine similarity over the vectors Argilla stores as JSON, with Elasticsearch's scores.

Parsing every vector per query would be slow at 100k records, so each process keeps one normalised matrix per
vector settings, rebuilt when the count or the newest update time of that settings' vectors changes (one
index-only query on `ix_wbsql_vectors_settings_updated` per search).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from argilla_server.models import Vector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

try:
    import numpy
except ImportError:  # the server venv normally has numpy (through `datasets`); stay correct without it
    numpy = None


@dataclasses.dataclass
class _Matrix:
    signature: tuple[Any, ...]
    record_ids: list[UUID]
    rows: Any  # numpy array (n, dims) of unit rows, or a list of unit lists
    position: dict[UUID, int] = dataclasses.field(default_factory=dict)


_CACHE: dict[UUID, _Matrix] = {}


def forget(vector_settings_id: UUID | None = None) -> None:
    if vector_settings_id is None:
        _CACHE.clear()
    else:
        _CACHE.pop(vector_settings_id, None)


async def _matrix(db: AsyncSession, vector_settings_id: UUID) -> _Matrix:
    signature_row = await db.execute(
        select(func.count(), func.max(Vector.updated_at)).where(Vector.vector_settings_id == vector_settings_id)
    )
    signature = tuple(signature_row.one())
    cached = _CACHE.get(vector_settings_id)
    if cached is not None and cached.signature == signature:
        return cached
    result = await db.execute(
        select(Vector.record_id, Vector.value).where(Vector.vector_settings_id == vector_settings_id)
    )
    record_ids, rows = [], []
    for record_id, value in result:
        if isinstance(value, str):
            value = json.loads(value)
        record_ids.append(record_id)
        rows.append(_unit(value))
    matrix = numpy.asarray(rows, dtype=numpy.float32) if (numpy is not None and rows) else rows
    position = {record_id: row for row, record_id in enumerate(record_ids)}
    _CACHE[vector_settings_id] = _Matrix(signature, record_ids, matrix, position)
    return _CACHE[vector_settings_id]


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else list(vector)


async def nearest(
    db: AsyncSession,
    vector_settings_id: UUID,
    query: Sequence[float],
    k: int,
    allowed: set[UUID] | None,
    excluded: UUID | None,
) -> list[tuple[UUID, float]]:
    """The k records whose vectors are closest to `query` by cosine, best first, scored like Elasticsearch's
    cosine similarity: (1 + cosine) / 2."""
    matrix = await _matrix(db, vector_settings_id)
    if not matrix.record_ids:
        return []
    unit_query = _unit(query)
    if numpy is not None:
        return _nearest_numpy(matrix, unit_query, k, allowed, excluded)
    scored = zip(matrix.record_ids, (sum(a * b for a, b in zip(row, unit_query)) for row in matrix.rows))
    candidates = [
        (record_id, (1.0 + cosine) / 2.0)
        for record_id, cosine in scored
        if record_id != excluded and (allowed is None or record_id in allowed)
    ]
    candidates.sort(key=lambda item: item[1], reverse=True)
    return candidates[:k]


def _nearest_numpy(matrix: _Matrix, unit_query: list[float], k: int, allowed, excluded) -> list[tuple[UUID, float]]:
    cosines = matrix.rows @ numpy.asarray(unit_query, dtype=numpy.float32)
    if allowed is not None:
        rows = numpy.fromiter((matrix.position[r] for r in allowed if r in matrix.position), dtype=numpy.int64)
    else:
        rows = numpy.arange(len(matrix.record_ids))
    if excluded is not None and excluded in matrix.position:
        rows = rows[rows != matrix.position[excluded]]
    if rows.size == 0:
        return []
    candidate_cosines = cosines[rows]
    if rows.size > k:
        # Top k without sorting every record: partition, then sort only the k kept.
        kept = numpy.argpartition(-candidate_cosines, k - 1)[:k]
        rows, candidate_cosines = rows[kept], candidate_cosines[kept]
    order = numpy.argsort(-candidate_cosines, kind="stable")
    return [(matrix.record_ids[rows[i]], (1.0 + float(candidate_cosines[i])) / 2.0) for i in order]
