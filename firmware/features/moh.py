"""Music on hold: classes of audio files, who hears which, and what an upload must be (no I/O).

A class is a named list of files (8 kHz mono 16-bit WAVs the web UI made from an upload) played
in order or shuffled. One stream per class is shared by every listener (the call service's
services/callsvc/moh.py); this module only decides:

- which class a held party hears: the class naming the inbound route (DID) the call came in on,
  else the class naming the extension that holds (or parks, queues, transfers) it, else
  "default" (class_for);
- the order of a class's files for one pass (playlist: in order, or shuffled by a given RNG);
- whether an upload may be converted at all (upload_error: its name, its size).

The "default" class always exists: with no files of its own it plays the box's generated tune
(firmware.dsp.tones.hold_music, made at run time, no third-party audio).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

from firmware.config.destination import EXTENSION_NUMBER_RE, EXTERNAL_NUMBER_RE
from firmware.config.errors import ValidationError, ValidationErrors
from firmware.config.collection import Collection
from firmware.config.records import RecordKind, Ref, register_records

TABLE = "moh_classes"
DEFAULT = "default"
ORDERS = ("order", "shuffle")
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}\.wav")

# What an upload may be: the formats people have (converted with ffmpeg), and limits that keep a
# 2-core box responsive: 20 MB in, 15 minutes of audio out (8 kHz 16-bit: 14.4 MB on disk).
UPLOAD_TYPES = ("wav", "mp3", "ogg", "oga", "flac", "m4a")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_SECONDS = 15 * 60
MAX_FILES = 50


@dataclass(frozen=True)
class MohClass:
    """A music-on-hold class. `files` are WAV names in DATA/moh/<name>/, played in that order
    ("order") or shuffled anew on every pass ("shuffle"). `extensions`: the held parties of these
    extensions hear this class; `routes`: callers who came in on these inbound DIDs hear it."""
    name: str
    order: str = "order"
    files: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        # TinyDB gives lists back; the record stays a value (hashable, comparable)
        for name in ("files", "extensions", "routes"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))

    def validate(self) -> None:
        errors: list[ValidationError] = []
        if not isinstance(self.name, str) or not NAME_RE.fullmatch(self.name):
            errors.append(ValidationError("name", f"{self.name!r} is not a class name: 1-32 lower-case "
                                                  "letters, digits, '-' or '_', e.g. 'sales'"))
        if self.order not in ORDERS:
            errors.append(ValidationError("order", f"{self.order!r} is not one of {', '.join(ORDERS)}"))
        for fname, items, check, what in (
                ("files", self.files, FILE_RE, "a file name like 'tune.wav'"),
                ("extensions", self.extensions, EXTENSION_NUMBER_RE, "an extension number like 1000"),
                ("routes", self.routes, EXTERNAL_NUMBER_RE, "an inbound route's DID like 01632960000")):
            if not isinstance(items, tuple) or not all(isinstance(i, str) for i in items):
                errors.append(ValidationError(fname, f"must be a list of text, got {items!r}"))
                continue
            for item in items:
                if not check.fullmatch(item):
                    errors.append(ValidationError(fname, f"{item!r} is not {what}"))
            if len(set(items)) != len(items):
                errors.append(ValidationError(fname, "names an entry twice: keep one"))
        if isinstance(self.files, tuple) and len(self.files) > MAX_FILES:
            errors.append(ValidationError("files", f"has {len(self.files)} files; at most {MAX_FILES}"))
        if not isinstance(self.description, str) or len(self.description) > 80:
            errors.append(ValidationError("description", "must be text of at most 80 characters"))
        if errors:
            raise ValidationErrors(errors)


MOH_CLASSES = register_records(RecordKind(
    Collection(TABLE, MohClass, key="name", noun="music on hold class"),
    references=lambda c: [Ref("extensions", "extensions", n) for n in c.extensions]))


def default_class() -> MohClass:
    return MohClass(DEFAULT, description="The box's own tune until you upload music.")


def classes(table: Mapping[str, MohClass]) -> list[MohClass]:
    """Every class, "default" first (it exists even before anything was stored for it)."""
    found = dict(table)
    found.setdefault(DEFAULT, default_class())
    return [found[DEFAULT]] + [found[n] for n in sorted(found) if n != DEFAULT]


def class_for(table: Mapping[str, MohClass], *, route: str = "", extension: str = "") -> str:
    """The class a held party hears: the class of the inbound route (DID) its call came in on,
    else the class of the extension that put it on hold / parked / queued it, else default."""
    if route:
        for cls in table.values():
            if route in cls.routes:
                return cls.name
    if extension:
        for cls in table.values():
            if extension in cls.extensions:
                return cls.name
    return DEFAULT


def conflicts(new: MohClass, table: Mapping[str, MohClass]) -> list[ValidationError]:
    """An extension or a route may belong to one class only (else which would it hear?)."""
    errors = []
    for other in table.values():
        if other.name == new.name:
            continue
        for fname in ("extensions", "routes"):
            both = sorted(set(getattr(new, fname)) & set(getattr(other, fname)))
            if both:
                errors.append(ValidationError(fname, f"{', '.join(both)} already in class '{other.name}': "
                                                     "remove it there first"))
    return errors


def playlist(cls: MohClass, rng: random.Random | None = None) -> list[str]:
    """The files of one pass through the class, in order or shuffled (by rng, for tests)."""
    files = list(cls.files)
    if cls.order == "shuffle" and len(files) > 1:
        (rng or random.Random()).shuffle(files)
    return files


def file_name_for(upload_name: str, taken: Iterable[str]) -> str:
    """The stored WAV's name for an uploaded file: its stem made safe, unique in the class."""
    stem = upload_name.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:60] or "music"
    taken = set(taken)
    name, n = f"{stem}.wav", 2
    while name in taken:
        name, n = f"{stem}-{n}.wav", n + 1
    return name


def upload_error(filename: str, size: int) -> str | None:
    """Why an upload is refused before conversion (None: try converting it)."""
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext not in UPLOAD_TYPES:
        return (f"'{filename}' is not an audio file this box converts: upload "
                f"{', '.join(t.upper() for t in UPLOAD_TYPES if t != 'oga')}")
    if size <= 0:
        return f"'{filename}' is empty"
    if size > MAX_UPLOAD_BYTES:
        return (f"'{filename}' is {size / 1048576:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 1048576} MB: "
                f"shorten it or export it at a lower bit rate")
    return None
