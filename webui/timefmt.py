"""Durations as people read them: "42 s", "12 min 5 s", "3 h 12 min", "2 d 5 h".

webui/static/dashboard.js has the same rules for the numbers it advances itself.
"""
from __future__ import annotations


def duration(seconds) -> str:
    if seconds is None or seconds == "":
        return "—"
    s = max(0, int(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
