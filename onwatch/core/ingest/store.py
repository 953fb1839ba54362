"""What a fast route's handler reads and writes, on the writer's connection.

Statements are generated from the models' `_meta` once per connection and model, and
values are converted by the model fields exactly as the ORM converts them (`pre_save`,
`get_db_prep_save`); new rows are model instances, inserted together at the end of the
batch — so a column added to a model needs no change here. Not through bulk_create: its
query compiler costs more than everything else a ping does (measured: 600 µs per batch
and 30 µs per row), so it is left for the rows it must take (a database default). On
SQLite the statements go straight to the driver: Django's cursor wrapper would double
their cost at thousands a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections
from django.db.models import Field, Model

PLAIN = frozenset((type(None), bool, int, str))


class Table:
    """The statements of one model on one connection."""

    def __init__(self, store: Store, model: type[Model]) -> None:
        self.store = store
        self.model = model
        self.fields: dict[str, Field[Any, Any]] = {
            f.attname: f for f in model._meta.concrete_fields
        }
        self.table = store.quote(str(model._meta.db_table))
        self.selects: dict[tuple[str, tuple[str, ...]], tuple[str, list[Any], list[str]]] = {}
        self.updates: dict[
            tuple[tuple[str, ...], tuple[str, ...]], tuple[str, list[Field[Any, Any]]]
        ] = {}
        meta = model._meta
        # Every column the ORM would insert: all but a generated one and the auto id.
        self.inserted = [
            f for f in meta.concrete_fields if not f.generated and f is not meta.auto_field
        ]
        self.how = [how_inserted(f) for f in self.inserted]
        names = ", ".join(self.column(f.attname) for f in self.inserted)
        marks = ", ".join(["%s"] * len(self.inserted))
        sql = f"INSERT INTO {self.table} ({names}) VALUES ({marks})"  # noqa: S608  (names from the model)
        self.insert_sql = store.prepared(sql)

    def column(self, name: str) -> str:
        return self.store.quote(str(self.fields[name].column))

    def select(self, by: str, names: Sequence[str]) -> tuple[str, list[Any], list[str]]:
        key = (by, tuple(names))
        if key not in self.selects:
            # Model.from_db wants the values in the order of the model's fields.
            read = [f for f in self.model._meta.concrete_fields if f.attname in names]
            cols = ", ".join(self.column(f.attname) for f in read)
            sql = f"SELECT {cols} FROM {self.table} WHERE {self.column(by)} = %s"  # noqa: S608  (names from the model)
            converters = [self.store.converters(self.model, f) for f in read]
            self.selects[key] = (self.store.prepared(sql), converters, [f.attname for f in read])
        return self.selects[key]

    def update_sql(
        self, names: tuple[str, ...], where: tuple[str, ...]
    ) -> tuple[str, list[Field[Any, Any]]]:
        """The UPDATE setting `names` where every field of `where` equals its value, and
        the fields of its parameters in order."""
        key = (names, where)
        if key not in self.updates:
            sets = ", ".join(f"{self.column(n)} = %s" for n in names)
            cond = " AND ".join(f"{self.column(n)} = %s" for n in where)
            sql = f"UPDATE {self.table} SET {sets} WHERE {cond}"  # noqa: S608  (names from the model)
            fields = [self.fields[n] for n in (*names, *where)]
            self.updates[key] = (self.store.prepared(sql), fields)
        return self.updates[key]

    def prep(self, name: str, value: Any) -> Any:
        return self.fields[name].get_db_prep_save(value, self.store.connection)

    def row(self, obj: Model) -> list[Any] | None:
        """The values to insert for `obj`, as the ORM's insert gets them; None when one
        is an expression (a database default) that only the ORM can write."""
        connection = self.store.connection
        values = []
        for f, attname, computed, db_default in self.how:
            value = f.pre_save(obj, True) if computed else getattr(obj, attname)
            if db_default and hasattr(value, "resolve_expression"):
                return None
            values.append(f.get_db_prep_save(value, connection))
        return values


def how_inserted(f: Field[Any, Any]) -> tuple[Field[Any, Any], str, bool, bool]:
    """A field, its attribute, whether its value is computed at save (auto_now and such:
    its class has a pre_save of its own) and whether it may hold a database default.
    Worked out once: a row costs only the calls it needs, thousands of times a second."""
    computed = type(f).pre_save is not Field.pre_save
    return f, f.attname, computed, f.has_db_default()


class Store:
    """Reads, conditional updates and new rows for one batch's transaction."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.connection = connections[alias]
        self.connection.ensure_connection()
        self.sqlite = self.connection.vendor == "sqlite"
        self.tables: dict[type[Model], Table] = {}
        self.added: dict[type[Model], list[Model]] = {}

    def quote(self, name: str) -> str:
        quoted: str = self.connection.ops.quote_name(name)
        return quoted

    def prepared(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.sqlite else sql

    def converters(self, model: type[Model], f: Any) -> tuple[Any, list[Any]]:
        col = f.get_col(model._meta.db_table)
        found: list[Any] = self.connection.ops.get_db_converters(col)
        return col, found + col.get_db_converters(self.connection)

    def table(self, model: type[Model]) -> Table:
        found = self.tables.get(model)
        if found is None:
            found = self.tables[model] = Table(self, model)
        return found

    def execute(self, sql: str, params: list[Any]) -> tuple[Any, ...] | int | None:
        """The first row of a SELECT, or the number of rows written."""
        if self.sqlite:
            raw = self.connection.connection.execute(sql, params)
        else:
            raw = self.connection.cursor()
            raw.execute(sql, params)
        try:
            return raw.fetchone() if sql.startswith("SELECT") else int(raw.rowcount)
        finally:
            raw.close()

    def get[M: Model](self, model: type[M], by: str, value: Any, names: Sequence[str]) -> M | None:
        """The row whose field `by` is `value`, with only the fields `names` loaded (the
        others are deferred, as with .only()); None when there is none."""
        t = self.table(model)
        sql, converters, attnames = t.select(by, names)
        row = self.execute(sql, [t.prep(by, value)])
        if not isinstance(row, tuple):
            return None
        values = []
        for value_, (col, convert) in zip(row, converters, strict=True):
            for one in convert:
                value_ = one(value_, col, self.connection)
            values.append(value_)
        return model.from_db(self.alias, attnames, values)

    def update(self, model: type[Model], values: dict[str, Any], where: dict[str, Any]) -> int:
        """UPDATE the rows matching every field of `where` (by equality); how many."""
        sql, fields = self.table(model).update_sql(tuple(values), tuple(where))
        connection = self.connection
        # Most values of one request are the same datetime or two: converted once each.
        seen: dict[tuple[int, type], Any] = {}
        params = []
        for f, value in zip(fields, (*values.values(), *where.values()), strict=True):
            if value.__class__ in PLAIN:
                params.append(f.get_db_prep_save(value, connection))
                continue
            key = (id(value), f.__class__)
            if key not in seen:
                seen[key] = f.get_db_prep_save(value, connection)
            params.append(seen[key])
        changed = self.execute(sql, params)
        return changed if isinstance(changed, int) else 0

    def add(self, row: Model) -> None:
        """A new row, inserted with the others of its model when the batch is written."""
        self.added.setdefault(type(row), []).append(row)

    def flush(self) -> None:
        """Insert the rows added: one statement per model, run for all its rows."""
        added, self.added = self.added, {}
        for model, objs in added.items():
            t = self.table(model)
            rows = [t.row(obj) for obj in objs]
            plain = [row for row in rows if row is not None]
            if self.sqlite:
                self.connection.connection.executemany(t.insert_sql, plain)
            else:
                with self.connection.cursor() as cursor:
                    cursor.executemany(t.insert_sql, plain)
            rest = [obj for obj, row in zip(objs, rows, strict=True) if row is None]
            if rest:
                model._default_manager.using(self.alias).bulk_create(rest)

    def discard(self) -> None:
        self.added = {}
