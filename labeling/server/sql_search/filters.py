"""Argilla's search filters and sort orders as SQL over the tables Argilla already writes.

Each translation mirrors one branch of argilla_server/search_engine/commons.py (the Elasticsearch backend), so
the comments name the Elasticsearch query they stand for.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import Any
from uuid import UUID

from argilla_server.enums import MetadataPropertyType, QuestionType, ResponseStatusFilter, SortOrder
from argilla_server.models import Field, MetadataProperty, Question, Record, Response, Suggestion
from argilla_server.search_engine.base import (
    AndFilter,
    Filter,
    MetadataFilterScope,
    Order,
    RangeFilter,
    RecordFilterScope,
    ResponseFilterScope,
    SuggestionFilterScope,
    TermsFilter,
    TextQuery,
)
from sqlalchemy import and_, exists, false, func, not_, or_, select, true
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from .json_sql import JsonSql

# Question types Elasticsearch indexes with a type of its own; the others are mapped `enabled: false`, so a filter
# or sort on them matches nothing there, and nothing here.
_NUMERIC_QUESTIONS = {QuestionType.rating}
_KEYWORD_QUESTIONS = {QuestionType.label_selection, QuestionType.multi_label_selection}


@dataclasses.dataclass
class DatasetSchema:
    """What the Elasticsearch mapping knows about a dataset: field, question and metadata types."""

    dataset_id: UUID
    questions: dict[str, tuple[UUID, QuestionType]]
    metadata_types: dict[str, MetadataPropertyType]
    text_fields: list[str]

    @classmethod
    async def load(cls, db: AsyncSession, dataset_id: UUID) -> DatasetSchema:
        questions = await db.execute(
            select(Question.name, Question.id, Question.settings).where(Question.dataset_id == dataset_id)
        )
        metadata = await db.execute(
            select(MetadataProperty.name, MetadataProperty.settings).where(MetadataProperty.dataset_id == dataset_id)
        )
        fields = await db.execute(select(Field.name, Field.settings).where(Field.dataset_id == dataset_id))
        return cls(
            dataset_id=dataset_id,
            questions={name: (qid, QuestionType(settings["type"])) for name, qid, settings in questions},
            metadata_types={name: MetadataPropertyType(settings["type"]) for name, settings in metadata},
            # Image fields are excluded from the Elasticsearch source; every other type is searchable text.
            text_fields=[name for name, settings in fields if settings.get("type") != "image"],
        )


@dataclasses.dataclass
class Conditions:
    """An AND of conditions on `records`. `pending_for_user` is kept apart from `clauses` because its count can be
    computed from the user's own responses instead of by probing every record (see `engine._count`)."""

    clauses: list[ColumnElement] = dataclasses.field(default_factory=list)
    pending_for_user: UUID | None = None

    def all(self) -> list[ColumnElement]:
        if self.pending_for_user is None:
            return list(self.clauses)
        return [*self.clauses, not_(_user_response_exists(self.pending_for_user))]


class FilterTranslator:
    def __init__(self, schema: DatasetSchema, json: JsonSql):
        self.schema = schema
        self.json = json

    # -- filters ---------------------------------------------------------------------------------------------

    def conditions(self, filter: Filter | None, text: TextQuery | str | None = None) -> Conditions:
        result = Conditions()
        if text is not None:
            result.clauses.append(self.text_query(text))
        for leaf in _flatten(filter):
            if _is_pending_only_for_user(leaf) and result.pending_for_user is None:
                result.pending_for_user = leaf.scope.user.id
            else:
                result.clauses.append(self.clause(leaf))
        return result

    def clause(self, filter: Filter) -> ColumnElement:
        if isinstance(filter, AndFilter):
            return and_(true(), *[self.clause(f) for f in filter.filters])
        scope = filter.scope
        if isinstance(scope, ResponseFilterScope):
            if scope.question:
                return self._response_question(filter, scope)
            if scope.property == "status" and isinstance(filter, TermsFilter):
                return self._response_status(filter.values, scope.user.id if scope.user else None)
            raise ValueError(f"Cannot process filter scope {scope}")
        if isinstance(scope, MetadataFilterScope):
            return self._metadata(filter, scope.metadata_property)
        if isinstance(scope, SuggestionFilterScope):
            return self._suggestion(filter, scope)
        if isinstance(scope, RecordFilterScope):
            return self._record(filter, scope.property)
        raise ValueError(f"Cannot process request for search scope {scope}")

    def _response_status(self, values: list[str], user_id: UUID | None) -> ColumnElement:
        # Elasticsearch: "pending" is must_not(responses.user_id == user) with a user, must_not(exists responses)
        # without; the other statuses are a nested terms query, ORed with pending when both are asked for.
        statuses = [v for v in values if v != ResponseStatusFilter.pending]
        answered = _user_response_exists(user_id, statuses) if (statuses or user_id) else true()
        if ResponseStatusFilter.pending not in values:
            return answered
        unanswered = not_(_user_response_exists(user_id))
        return or_(unanswered, answered) if statuses else unanswered

    def _response_question(self, filter: Filter, scope: ResponseFilterScope) -> ColumnElement:
        question = self.schema.questions.get(scope.question)
        if question is None or question[1] not in _NUMERIC_QUESTIONS | _KEYWORD_QUESTIONS:
            return false()
        value_matches = self._typed_json_match(filter, Response.values, [scope.question, "value"], question[1])
        conditions = [Response.record_id == Record.id, value_matches]
        if scope.user:
            conditions.append(Response.user_id == scope.user.id)
        return exists(select(1).where(*conditions))

    def _metadata(self, filter: Filter, name: str) -> ColumnElement:
        kind = self.schema.metadata_types.get(name)
        if kind is None:
            return false()
        column, keys = Record.metadata_, [name]
        if isinstance(filter, TermsFilter):
            return self.json.any_in(column, keys, _coerce_terms(filter.values, kind))
        return self.json.any_in_range(column, keys, _number(filter.ge), _number(filter.le))

    def _suggestion(self, filter: Filter, scope: SuggestionFilterScope) -> ColumnElement:
        question = self.schema.questions.get(scope.question)
        if question is None:
            return false()
        question_id, question_type = question
        prop = scope.property or "value"
        if prop == "value":
            if question_type not in _NUMERIC_QUESTIONS | _KEYWORD_QUESTIONS:
                return false()
            match = self._typed_json_match(filter, Suggestion.value, [], question_type)
        elif prop == "score":
            # The score is a float, or a list of floats for multi-label suggestions.
            if isinstance(filter, TermsFilter):
                match = self.json.any_in(Suggestion.score, [], [_number(v) for v in filter.values])
            else:
                match = self.json.any_in_range(Suggestion.score, [], _number(filter.ge), _number(filter.le))
        elif prop in ("agent", "type"):
            column = Suggestion.agent if prop == "agent" else Suggestion.type
            if not isinstance(filter, TermsFilter):
                match = _string_range(column, filter)
            else:
                match = column.in_(filter.values) if prop == "agent" else column.in_(_known_types(filter.values))
        else:
            raise ValueError(f"Cannot process suggestion property {prop}")
        return exists(select(1).where(Suggestion.record_id == Record.id, Suggestion.question_id == question_id, match))

    def _record(self, filter: Filter, prop: str) -> ColumnElement:
        column = getattr(Record, prop)
        if isinstance(filter, TermsFilter):
            if prop == "id":
                return column.in_([_uuid(v) for v in filter.values if _uuid(v) is not None])
            return column.in_(filter.values)
        if prop in ("inserted_at", "updated_at"):
            conditions = []
            if filter.ge is not None:
                conditions.append(column >= _datetime(filter.ge))
            if filter.le is not None:
                conditions.append(column <= _datetime(filter.le))
            return and_(true(), *conditions)
        return _string_range(column, filter)

    def _typed_json_match(self, filter: Filter, column, keys: list[str], question_type: QuestionType):
        if isinstance(filter, TermsFilter):
            if question_type in _NUMERIC_QUESTIONS:
                return self.json.any_in(
                    column, keys, [v for v in (_integer(x) for x in filter.values) if v is not None]
                )
            return self.json.any_in(column, keys, [str(v) for v in filter.values])
        if question_type in _NUMERIC_QUESTIONS:
            return self.json.any_in_range(column, keys, _number(filter.ge), _number(filter.le))
        return false()

    # -- text query ------------------------------------------------------------------------------------------

    def text_query(self, text: TextQuery | str) -> ColumnElement:
        """Elasticsearch's simple_query_string with default_operator AND, as substring tests: every term must
        occur in one of the searched fields; `-term` must occur in none; a quoted phrase is one term."""
        if isinstance(text, str):
            text = TextQuery(q=text)
        fields = [text.field] if text.field else self.schema.text_fields
        if not fields:
            return false()
        clauses = []
        for negated, term in _query_terms(text.q):
            anywhere = or_(*[self.json.contains_text(Record.fields, [name], term) for name in fields])
            clauses.append(not_(func.coalesce(anywhere, False)) if negated else anywhere)
        return and_(true(), *clauses)

    # -- sorting ---------------------------------------------------------------------------------------------

    def order_by(self, sort: list[Order]) -> list[ColumnElement]:
        clauses = []
        for order in sort:
            value = self._sort_value(order.scope)
            descending = order.order == SortOrder.desc
            # Elasticsearch puts documents without the value last in both directions.
            clauses.append(value.is_(None))
            clauses.append(value.desc() if descending else value.asc())
        return clauses

    def _sort_value(self, scope) -> ColumnElement:
        if isinstance(scope, RecordFilterScope):
            return getattr(Record, scope.property)
        if isinstance(scope, MetadataFilterScope):
            kind = self.schema.metadata_types.get(scope.metadata_property)
            numeric = kind in (MetadataPropertyType.integer, MetadataPropertyType.float)
            return self.json.sortable(Record.metadata_, [scope.metadata_property], numeric)
        if isinstance(scope, SuggestionFilterScope):
            question_id, question_type = self.schema.questions[scope.question]
            prop = scope.property or "value"
            if prop == "value":
                value = self.json.sortable(Suggestion.value, [], question_type in _NUMERIC_QUESTIONS)
            elif prop == "score":
                value = self.json.sortable(Suggestion.score, [], True)
            else:
                value = getattr(Suggestion, prop)
            where = and_(Suggestion.record_id == Record.id, Suggestion.question_id == question_id)
            return select(value).where(where).limit(1).scalar_subquery()
        if isinstance(scope, ResponseFilterScope):
            # Elasticsearch: a nested sort with mode "avg" over the responses (of one user when a user is given).
            conditions = [Response.record_id == Record.id]
            if scope.user:
                conditions.append(Response.user_id == scope.user.id)
            if scope.question:
                question_type = self.schema.questions[scope.question][1]
                numeric = question_type in _NUMERIC_QUESTIONS
                value = self.json.sortable(Response.values, [scope.question, "value"], numeric)
                aggregate = func.avg(value) if numeric else func.min(value)
            else:
                aggregate = func.min(Response.status)
            return select(aggregate).where(*conditions).scalar_subquery()
        raise ValueError(f"Cannot sort by scope {scope}")


def _user_response_exists(user_id: UUID | None, statuses: list[str] | None = None) -> ColumnElement:
    conditions = [Response.record_id == Record.id]
    if user_id is not None:
        conditions.append(Response.user_id == user_id)
    if statuses:
        conditions.append(Response.status.in_(statuses))
    return exists(select(1).where(*conditions))


def _flatten(filter: Filter | None) -> list[Filter]:
    if filter is None:
        return []
    if isinstance(filter, AndFilter):
        return [leaf for inner in filter.filters for leaf in _flatten(inner)]
    return [filter]


def _is_pending_only_for_user(filter: Filter) -> bool:
    scope = filter.scope
    return (
        isinstance(filter, TermsFilter)
        and isinstance(scope, ResponseFilterScope)
        and scope.question is None
        and scope.property == "status"
        and scope.user is not None
        and set(filter.values) == {ResponseStatusFilter.pending.value}
    )


def _query_terms(q: str) -> list[tuple[bool, str]]:
    terms = []
    for match in re.finditer(r'(-?)"([^"]*)"|(\S+)', q):
        if match.group(3) is not None:
            raw = match.group(3)
            negated = raw.startswith("-")
            word = raw.lstrip("+-").strip("*()|~")
        else:
            negated, word = match.group(1) == "-", match.group(2)
        if word and word not in ("|", "+", "AND", "OR"):
            terms.append((negated, word))
    return terms


def _coerce_terms(values: list[str], kind: MetadataPropertyType) -> list[Any]:
    if kind == MetadataPropertyType.integer:
        return [v for v in (_integer(x) for x in values) if v is not None]
    if kind == MetadataPropertyType.float:
        return [v for v in (_number(x) for x in values) if v is not None]
    return [str(v) for v in values]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _uuid(value: str) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _datetime(value: Any) -> datetime:
    if isinstance(value, (int, float)):
        return datetime.utcfromtimestamp(value)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).replace(tzinfo=None)


def _known_types(values: list[str]) -> list[str]:
    from argilla_server.enums import SuggestionType

    return [SuggestionType(v) for v in values if v in SuggestionType.__members__.values()]


def _string_range(column, filter: RangeFilter) -> ColumnElement:
    conditions = []
    if filter.ge is not None:
        conditions.append(column >= str(filter.ge))
    if filter.le is not None:
        conditions.append(column <= str(filter.le))
    return and_(true(), *conditions)
