"""Records of one kind in one TinyDB table, addressed by their natural id (an extension's number).

Extensions use it now; trunks, routes, ring groups and queues become one more Collection each.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Generic, TypeVar

from tinydb import TinyDB, where

from .errors import ValidationError

R = TypeVar("R")


class Collection(Generic[R]):
    def __init__(self, table: str, record_type: type[R], key: str, noun: str,
                 sort_key: Callable[[Any], Any] = str):
        self.table = table
        self.record_type = record_type
        self.key = key
        self.noun = noun               # used in messages: "extension 1000 already exists"
        self.sort_key = sort_key
        self._fields = {f.name for f in dataclasses.fields(record_type)}

    def all(self, db: TinyDB) -> list[R]:
        records = [self._from_doc(doc) for doc in db.table(self.table).all()]
        return sorted(records, key=lambda r: self.sort_key(getattr(r, self.key)))

    def get(self, db: TinyDB, key_value: Any) -> R | None:
        doc = db.table(self.table).get(where(self.key) == key_value)
        return self._from_doc(doc) if doc is not None else None

    def require(self, db: TinyDB, key_value: Any) -> R:
        record = self.get(db, key_value)
        if record is None:
            raise ValidationError(self.key, f"no {self.noun} {key_value}")
        return record

    def insert(self, db: TinyDB, record: R) -> None:
        key_value = getattr(record, self.key)
        if self.get(db, key_value) is not None:
            raise ValidationError(self.key, f"{self.noun} {key_value} already exists")
        db.table(self.table).insert(dataclasses.asdict(record))

    def replace(self, db: TinyDB, record: R) -> None:
        key_value = getattr(record, self.key)
        self.require(db, key_value)
        doc = dataclasses.asdict(record)
        db.table(self.table).update(doc, where(self.key) == key_value)

    def remove(self, db: TinyDB, key_value: Any) -> None:
        self.require(db, key_value)
        db.table(self.table).remove(where(self.key) == key_value)

    def _from_doc(self, doc: dict) -> R:
        # Ignore keys this firmware does not know, so a hand-added field cannot stop the box.
        return self.record_type(**{k: v for k, v in doc.items() if k in self._fields})
