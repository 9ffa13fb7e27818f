"""What the kernel knows about the PBX processes: CPU time, memory, UDP socket drops, the machine.

Everything is read from /proc, so the numbers include no sampling by the PBX itself.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # comm (field 2) may hold spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if it is gone."""
    try:
        f = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(f[11]) + int(f[12])) / CLK_TCK  # fields 14, 15 of proc(5)


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def descendants(pid: int) -> list[int]:
    """All live descendants of pid (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kamailio_pids(pbx_pid: int) -> list[int]:
    """The Kamailio edge processes started by `pbx run` (the main one and its forked workers)."""
    return [p for p in descendants(pbx_pid) if comm(p) == "kamailio"]


def maps(pid: int, needle: str) -> bool:
    """Whether a process has a file whose path contains needle mapped (e.g. a compiled module)."""
    try:
        return needle in Path(f"/proc/{pid}/maps").read_text()
    except (FileNotFoundError, PermissionError):
        return False


@dataclass
class Memory:
    rss_kb: float = 0
    pss_kb: float = 0

    def __add__(self, other: "Memory") -> "Memory":
        return Memory(self.rss_kb + other.rss_kb, self.pss_kb + other.pss_kb)

    @property
    def rss_mb(self) -> float:
        return self.rss_kb / 1024

    @property
    def pss_mb(self) -> float:
        return self.pss_kb / 1024


def memory(pids) -> Memory:
    """Summed RSS and PSS of pids. PSS shares each page among the processes mapping it, so the sum
    over Kamailio's forked workers counts their shared memory once (RSS counts it per worker)."""
    total = Memory()
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = dict(re.findall(r"^(\w+):\s+(\d+) kB", text, re.M))
        total += Memory(int(fields.get("Rss", 0)), int(fields.get("Pss", 0)))
    return total


def resident_union_mb(pids) -> float | None:
    """The memory the processes hold together, each physical page once: the distinct page frames
    of every present page they map (/proc/PID/pagemap). Unlike summed RSS it does not count a
    library or interpreter page once per process, unlike summed PSS it does not hand part of a
    shared page to processes outside the set. None without the rights to read frame numbers
    (CAP_SYS_ADMIN: the kernel shows 0 otherwise)."""
    import numpy as np
    page = os.sysconf("SC_PAGE_SIZE")
    frames = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pagemap:
                for line in maps:
                    if line.rstrip().endswith("[vsyscall]"):
                        continue
                    start, end = (int(x, 16) for x in line.split()[0].split("-"))
                    pagemap.seek(start // page * 8)
                    entries = np.frombuffer(pagemap.read((end - start) // page * 8), dtype=np.uint64)
                    present = entries[(entries >> np.uint64(63)) == 1]
                    frames.append(present & np.uint64((1 << 55) - 1))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    if not frames:
        return 0.0
    unique = np.unique(np.concatenate(frames))
    if len(unique) == 1 and unique[0] == 0:
        return None
    return len(unique) * page / 2**20


def _udp_sockets() -> list[tuple[int, int, int]]:
    """(local port, inode, drops) of every IPv4 UDP socket, from /proc/net/udp."""
    out = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        cols = line.split()
        out.append((int(cols[1].split(":")[1], 16), int(cols[9]), int(cols[-1])))
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process has open (its fds that point at socket:[N])."""
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def udp_drops(ports=(), inodes=()) -> int:
    """Datagrams the kernel dropped on UDP sockets bound to one of `ports` or with one of `inodes`
    (a full receive buffer: the owner did not read fast enough). Column `drops` of /proc/net/udp."""
    ports, inodes = set(ports), set(inodes)
    return sum(drops for port, inode, drops in _udp_sockets() if port in ports or inode in inodes)


def system_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, for the machine's load during a window."""
    cols = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = cols[3] + cols[4]  # idle + iowait
    total = sum(cols[:8])     # guest time is already inside user
    return total - idle, total


class CpuWindow:
    """CPU used by groups of processes between start() and stop(), as % of one core."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups
        self.result: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        return {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.groups.items()}

    def start(self) -> "CpuWindow":
        self._cpu0 = self._sample()
        self._sys0 = system_busy()
        self._t0 = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        cpu1, sys1 = self._sample(), system_busy()
        self.seconds = time.monotonic() - self._t0
        self.result = {name: 100 * (cpu1[name] - self._cpu0[name]) / self.seconds for name in cpu1}
        busy, total = sys1[0] - self._sys0[0], sys1[1] - self._sys0[1]
        # whole machine, in % of one core, so that it compares with the per-process numbers
        self.result["machine"] = 100 * os.cpu_count() * busy / total if total else 0.0
        return self.result


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith(("model name", "Model")):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    os_name = ""
    try:
        os_name = re.search(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text()).group(1)
    except (FileNotFoundError, AttributeError):
        pass
    return {"cpu": f"{model or platform.machine()}, {os.cpu_count()} cores",
            "memory": f"{mem_kb / 1024 / 1024:.1f} GiB", "os": f"{os_name}, kernel {platform.release()}",
            "python": platform.python_version(), "sipp": _version(["sipp", "-v"], r"SIPp v?([\w.\-]+)"),
            "kamailio": _version(["kamailio", "-v"], r"version: kamailio ([\w.\-]+)"),
            "load": "%.2f %.2f %.2f" % os.getloadavg()}


def _version(cmd: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else "unknown"
