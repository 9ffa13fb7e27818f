"""Pages of a long list (call records, recordings): which slice of N rows page n shows."""
from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 50


@dataclass(frozen=True)
class Page:
    number: int      # 1-based, clamped to the pages there are
    size: int
    total: int       # rows in the whole list

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def first(self) -> int:
        return self.offset + 1 if self.total else 0

    @property
    def last(self) -> int:
        return min(self.offset + self.size, self.total)


def page_number(value: str | None) -> int:
    """?page= as a number >= 1; anything else is page 1 (a bad page number is not worth an error)."""
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


def make_page(requested: int, total: int, size: int = PAGE_SIZE) -> Page:
    pages = max(1, -(-total // size))
    return Page(min(requested, pages), size, total)
