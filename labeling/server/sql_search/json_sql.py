"""JSON access in SQL for the two databases Argilla supports (SQLite here, PostgreSQL in production).

Argilla stores record metadata, response values and suggestion values as JSON columns. Elasticsearch indexes
them as typed fields (keyword, long, float); these helpers give the same comparisons in SQL. A value may be a
scalar or a list (multi-label answers, terms metadata with several values): Elasticsearch matches a document when
any element matches, and so do these helpers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Float, and_, bindparam, case, cast, exists, false, func, literal_column, or_, select
from sqlalchemy.sql.elements import ColumnElement

# Names this simple can be written into the SQL text. A literal JSON path lets SQLite match the expression
# indexes that `indexes.py` creates; a bound parameter would never match an index expression.
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


class JsonSql:
    def __init__(self, dialect_name: str, use_expression_indexes: bool = True):
        """`use_expression_indexes=False` writes paths as parameters, which hides the metadata expression indexes
        from SQLite's planner: right for a page in insertion order when matches are dense (see engine.search)."""
        self.is_postgres = dialect_name == "postgresql"
        self.use_expression_indexes = use_expression_indexes

    def _sqlite_path(self, keys: Sequence[str]) -> ColumnElement:
        path = "$" + "".join(f'."{key}"' for key in keys)
        if self.use_expression_indexes and all(_SAFE_KEY.match(key) for key in keys):
            return literal_column(f"'{path}'")
        return bindparam(None, path)

    def extract(self, column: ColumnElement, keys: Sequence[str]) -> ColumnElement:
        """The value at `keys` with its JSON type (SQLite) or as text (PostgreSQL)."""
        if self.is_postgres:
            return cast(column, _pg_jsonb()).op("#>>")(_pg_path(keys))
        return func.json_extract(column, self._sqlite_path(keys))

    def extract_number(self, column: ColumnElement, keys: Sequence[str]) -> ColumnElement:
        value = self.extract(column, keys)
        if self.is_postgres:
            return cast(func.nullif(func.substring(value, r"^-?[0-9.eE+-]+$"), ""), Float)
        return value

    def any_in(self, column: ColumnElement, keys: Sequence[str], values: list[Any]) -> ColumnElement:
        """True when the value at `keys`, or any element of it when it is a list, is one of `values`."""
        if not values:
            return false()
        if self.is_postgres:
            text_values = [str(v) for v in values]
            at_path = cast(column, _pg_jsonb()).op("#>")(_pg_path(keys))
            as_list = case(
                (func.jsonb_typeof(at_path) == "array", at_path), else_=cast(literal_column("'[]'"), _pg_jsonb())
            )
            element = func.jsonb_array_elements_text(as_list).table_valued("value")
            return or_(
                self.extract(column, keys).in_(text_values),
                exists(select(1).select_from(element).where(element.c.value.in_(text_values))),
            )
        path = self._sqlite_path(keys)
        scalar_match = func.json_extract(column, path).in_(values)
        elements = func.json_each(column, path).table_valued("value", "type")
        # json_extract returns a list as its JSON text, which starts with '['; the range test finds lists through the
        # same expression index as the scalar test, so neither branch needs a full scan.
        list_match = and_(
            func.json_extract(column, path) >= "[",
            func.json_extract(column, path) < "\\",
            exists(select(1).select_from(elements).where(elements.c.value.in_(values))),
        )
        return or_(scalar_match, list_match)

    def pg_scalar_elements(self, column: ColumnElement, keys: Sequence[str]):
        """PostgreSQL: the value at `keys` as rows of text, one per element of a list or one for a scalar (JSON
        nulls, objects and nested lists give none), for a lateral join: (table, its text column)."""
        at_path = cast(column, _pg_jsonb()).op("#>")(_pg_path(keys))
        as_list = case((func.jsonb_typeof(at_path) == "array", at_path), else_=func.jsonb_build_array(at_path))
        elements = func.jsonb_array_elements(as_list).table_valued("value").lateral()
        scalar = func.jsonb_typeof(elements.c.value).in_(["string", "number", "boolean"])
        return elements, scalar, elements.c.value.op("#>>")(_pg_path([]))

    def any_in_range(
        self, column: ColumnElement, keys: Sequence[str], ge: float | None, le: float | None
    ) -> ColumnElement:
        """True when the number at `keys` (or any number in a list there) lies in [ge, le]."""

        def bounded(value: ColumnElement) -> ColumnElement:
            conditions = [value.is_not(None)]
            if ge is not None:
                conditions.append(value >= ge)
            if le is not None:
                conditions.append(value <= le)
            return and_(*conditions)

        if self.is_postgres:
            # a scalar (a number, or text that reads as one), or any number in a list there
            elements, _, element_text = self.pg_scalar_elements(column, keys)
            numbers = func.jsonb_typeof(elements.c.value) == "number"
            in_list = select(1).select_from(elements).where(numbers, bounded(cast(element_text, Float)))
            return or_(bounded(self.extract_number(column, keys)), exists(in_list))
        path = self._sqlite_path(keys)
        value = func.json_extract(column, path)
        elements = func.json_each(column, path).table_valued("value", "type")
        # SQLite orders every number before every text, so `value < ''` keeps numbers only, and the whole scalar
        # test is a range on the expression index; lists (JSON text starting with '[') are a second range on it.
        numeric_scalar = and_(bounded(value), value < "")
        list_match = and_(
            value >= "[",
            value < "\\",
            exists(
                select(1)
                .select_from(elements)
                .where(elements.c.type.in_(["integer", "real"]), bounded(elements.c.value))
            ),
        )
        return or_(numeric_scalar, list_match)

    def sortable(self, column: ColumnElement, keys: Sequence[str], numeric: bool) -> ColumnElement:
        return self.extract_number(column, keys) if numeric else self.extract(column, keys)

    def contains_text(self, column: ColumnElement, keys: Sequence[str], needle: str) -> ColumnElement:
        """Case-insensitive substring test on the text at `keys` (a chat field is tested as its JSON text)."""
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if self.is_postgres:
            return cast(column, _pg_jsonb()).op("#>>")(_pg_path(keys)).ilike(pattern, escape="\\")
        # SQLite's LIKE is case-insensitive for ASCII; lower() on both sides extends that to the rest of Unicode
        # only partly, which is the documented limit of this backend's text search.
        return func.lower(func.json_extract(column, self._sqlite_path(keys))).like(pattern.lower(), escape="\\")


def _pg_jsonb():
    from sqlalchemy.dialects.postgresql import JSONB

    return JSONB


def _pg_text_array():
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.types import Text

    return ARRAY(Text)


def _pg_path(keys: Sequence[str]) -> ColumnElement:
    return bindparam(None, list(keys), type_=_pg_text_array())
