"""A/B updates of the appliance image: RAUC bundles, systemd-boot boot counting (decision 021).

RAUC writes a signed bundle's root.ext4 into the slot that is not running (rootA/rootB) and calls
this module as its `custom` bootloader backend (`python -m services.update boot-backend ...`):

- the boot entries live on the ESP (mounted on /efi) as loader/entries/pbx-a.conf and pbx-b.conf,
  each with `sort-key pbx` and a `version` number; systemd-boot boots the first entry in its order
  (entries with no tries left last, then the highest version), so the primary slot is the one with
  the highest version that is not bad;
- set-primary copies the new slot's kernel and initrd to /efi/<a|b>/ and writes its entry as
  pbx-b+3-0.conf (boot counting: 3 tries) with a version above the other's; systemd-boot counts a
  try down at each boot (pbx-b+2-1.conf ...), systemd-bless-boot renames it to pbx-b.conf once
  boot-complete.target is reached, which needs pbx-update-check.service (`health` below) to pass;
- an entry with no tries left (pbx-b+0-3.conf) sorts last, so the old slot boots again.

Also: `rauc status` parsing for the System page and `pbx update status`, the checks an uploaded
bundle passes, the copy of config.json and cdr.sqlite taken before an install (/data/backup), and
the install itself (`rauc install`; the web UI hands uploads to the root-owned pbx-update.service
through a spool directory).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ESP = Path(os.environ.get("PBX_ESP", "/efi"))
BOOTNAMES = {"A": "a", "B": "b"}
SLOT_LABELS = {"A": "rootA", "B": "rootB"}
TRIES = 3
ENTRY_RE = re.compile(r"^pbx-(?P<slot>[ab])(?:\+(?P<left>\d+)(?:-(?P<done>\d+))?)?\.conf$")
# a bundle is a squashfs image (plain or verity format) followed by its CMS signature
BUNDLE_MAGIC = b"hsqs"
MAX_BUNDLE_BYTES = 1536 * 1024 * 1024
SPOOL_NAME = "bundle.raucb"
BACKUP_KEEP = 3


class UpdateError(Exception):
    """An update step failed; the message names the thing and the fix."""


# ---- boot entries (systemd-boot, boot counting) ------------------------------------------------

@dataclass
class Entry:
    slot: str                 # "A" or "B"
    name: str                 # file name in loader/entries
    tries_left: int | None    # None: no counter (blessed or never counted)
    tries_done: int
    version: int

    @property
    def bad(self) -> bool:
        return self.tries_left == 0


def entry_name(slot: str, tries_left: int | None = None, tries_done: int = 0) -> str:
    """pbx-a.conf (blessed) or pbx-b+3-0.conf (3 tries left, none done)."""
    letter = _letter(slot)
    if tries_left is None:
        return f"pbx-{letter}.conf"
    return f"pbx-{letter}+{tries_left}-{tries_done}.conf"


def parse_entry_name(name: str) -> tuple[str, int | None, int] | None:
    """(slot, tries_left, tries_done) of an entry file name, None if it is not one of ours."""
    m = ENTRY_RE.match(name)
    if not m:
        return None
    left = None if m["left"] is None else int(m["left"])
    return m["slot"].upper(), left, int(m["done"] or 0)


def _letter(slot: str) -> str:
    try:
        return BOOTNAMES[slot]
    except KeyError:
        raise UpdateError(f"unknown boot name {slot!r}: the slots are A and B (/etc/rauc/system.conf)") from None


def read_entries(esp: Path = ESP) -> list[Entry]:
    out = []
    d = esp / "loader" / "entries"
    for p in sorted(d.glob("pbx-*.conf")) if d.is_dir() else ():
        parsed = parse_entry_name(p.name)
        if parsed is None:
            continue
        version = 0
        for line in p.read_text(errors="replace").splitlines():
            key, _, value = line.strip().partition(" ")
            if key == "version" and value.strip().isdigit():
                version = int(value.strip())
        out.append(Entry(parsed[0], p.name, parsed[1], parsed[2], version))
    return out


def boot_order(entries: list[Entry]) -> list[Entry]:
    """systemd-boot's order for our entries (all have sort-key pbx): no tries left last, then the
    highest version first, then the name (newest first)."""
    return sorted(entries, key=lambda e: (e.bad, -e.version, [-ord(c) for c in e.name]))


class SystemdBoot:
    """RAUC's custom bootloader backend over the ESP's loader entries."""

    def __init__(self, esp: Path = ESP, tries: int = TRIES) -> None:
        self.esp, self.tries = esp, tries
        self.entries_dir = esp / "loader" / "entries"

    def _entry(self, slot: str) -> Entry | None:
        found = [e for e in read_entries(self.esp) if e.slot == slot]
        return boot_order(found)[0] if found else None

    def get_primary(self) -> str:
        order = boot_order(read_entries(self.esp))
        if not order:
            raise UpdateError(f"no pbx-*.conf boot entry in {self.entries_dir}: is the ESP mounted on {self.esp}?")
        return order[0].slot

    def get_state(self, slot: str) -> str:
        e = self._entry(slot)
        return "good" if e is not None and not e.bad else "bad"

    def set_state(self, slot: str, state: str) -> None:
        e = self._entry(slot)
        if state == "good":
            if e is not None and e.tries_left is not None:
                self._rename(e.name, entry_name(slot))
        elif state == "bad":
            if e is not None and not e.bad:
                self._rename(e.name, entry_name(slot, 0, e.tries_done))
        else:
            raise UpdateError(f"unknown slot state {state!r} (good or bad)")

    def set_primary(self, slot: str, kernel: Path | None = None, initrd: Path | None = None,
                    options: str | None = None) -> str:
        """Make `slot` boot next, with boot counting. Copies kernel/initrd when given; `options`
        defaults to the other entry's with root=PARTUUID and rauc.slot for this slot."""
        letter = _letter(slot)
        entries = read_entries(self.esp)
        others = [e for e in entries if e.slot != slot]
        mine = [e for e in entries if e.slot == slot]
        if options is None:
            options = self._options_from(others[0].name if others else mine[0].name if mine else None, slot)
        if kernel is not None:
            kdir = self.esp / letter
            kdir.mkdir(parents=True, exist_ok=True)
            for src, dst in ((kernel, "vmlinuz"), (initrd, "initrd.img")):
                if src is not None:
                    _copy_synced(src, kdir / dst)
        version = max([e.version for e in entries] + [0]) + 1
        name = entry_name(slot, self.tries, 0)
        title = f"Office PBX (slot {slot})"
        text = (f"title {title}\nsort-key pbx\nversion {version}\nlinux /{letter}/vmlinuz\n"
                f"initrd /{letter}/initrd.img\noptions {options}\n")
        self.entries_dir.mkdir(parents=True, exist_ok=True)
        _write_synced(self.entries_dir / name, text)
        for e in mine:
            if e.name != name:
                (self.entries_dir / e.name).unlink(missing_ok=True)
        return name

    def _options_from(self, name: str | None, slot: str) -> str:
        if name is None:
            raise UpdateError(f"no boot entry in {self.entries_dir} to take the kernel options from")
        opts = ""
        for line in (self.entries_dir / name).read_text().splitlines():
            if line.startswith("options "):
                opts = line[len("options "):].strip()
        return slot_options(opts, slot, partuuid_of(SLOT_LABELS[slot]))

    def _rename(self, old: str, new: str) -> None:
        os.rename(self.entries_dir / old, self.entries_dir / new)
        _sync_dir(self.entries_dir)


def slot_options(options: str, slot: str, partuuid: str) -> str:
    """The kernel command line of another slot's entry, pointed at `slot`."""
    words = [w for w in options.split() if not w.startswith(("root=", "rauc.slot="))]
    return " ".join([f"root=PARTUUID={partuuid}", *words, f"rauc.slot={slot}"])


def partuuid_of(partlabel: str) -> str:
    dev = Path("/dev/disk/by-partlabel") / partlabel
    target = dev.resolve()
    by_uuid = Path("/dev/disk/by-partuuid")
    for link in by_uuid.iterdir() if by_uuid.is_dir() else ():
        if link.resolve() == target:
            return link.name
    raise UpdateError(f"no PARTUUID for partition {partlabel} ({dev}): is this the appliance image?")


def _write_synced(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_dir(path.parent)


def _copy_synced(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        shutil.copyfileobj(fi, fo, 1 << 20)
        fo.flush()
        os.fsync(fo.fileno())
    os.replace(tmp, dst)
    _sync_dir(dst.parent)


def _sync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def slot_kernel(slot: str) -> tuple[Path, Path, Path]:
    """Mount the slot's root read-only; (mount point, vmlinuz, initrd) of its newest kernel."""
    dev = Path("/dev/disk/by-partlabel") / SLOT_LABELS[slot]
    mnt = Path(tempfile.mkdtemp(prefix=f"pbx-slot-{slot}-", dir="/run"))
    r = subprocess.run(["mount", "-o", "ro", "-t", "ext4", str(dev), str(mnt)], capture_output=True, text=True)
    if r.returncode:
        mnt.rmdir()
        raise UpdateError(f"cannot mount slot {slot} ({dev}): {r.stderr.strip()}")
    kernels = sorted((mnt / "boot").glob("vmlinuz-*"), key=lambda p: _verkey(p.name))
    if not kernels:
        _umount(mnt)
        raise UpdateError(f"slot {slot} has no /boot/vmlinuz-*: the bundle's root.ext4 is not a PBX image root")
    kver = kernels[-1].name[len("vmlinuz-"):]
    initrd = mnt / "boot" / f"initrd.img-{kver}"
    if not initrd.exists():
        _umount(mnt)
        raise UpdateError(f"slot {slot} has vmlinuz-{kver} but no initrd.img-{kver}")
    return mnt, kernels[-1], initrd


def _verkey(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _umount(mnt: Path) -> None:
    subprocess.run(["umount", str(mnt)], check=False)
    try:
        mnt.rmdir()
    except OSError:
        pass


def boot_backend(argv: list[str], esp: Path = ESP) -> int:
    """RAUC's `bootloader-custom-backend`: get-primary | set-primary SLOT | get-state SLOT |
    set-state SLOT good|bad."""
    _ensure_mounted(esp)
    boot = SystemdBoot(esp)
    cmd, rest = (argv[0] if argv else ""), argv[1:]
    if cmd == "get-primary":
        print(boot.get_primary())
    elif cmd == "get-current" and not rest:
        current = _booted_slot()
        if current is None:
            raise UpdateError("no rauc.slot= on the kernel command line: which slot is running is unknown")
        print(current)
    elif cmd == "get-state" and len(rest) == 1:
        print(boot.get_state(rest[0]))
    elif cmd == "set-state" and len(rest) == 2:
        boot.set_state(rest[0], rest[1])
    elif cmd == "set-primary" and len(rest) == 1:
        slot = rest[0]
        _letter(slot)
        if _booted_slot() == slot:
            # marking the running slot primary (rauc status mark-active booted): no new kernel
            boot.set_primary(slot)
        else:
            mnt, kernel, initrd = slot_kernel(slot)
            try:
                name = boot.set_primary(slot, kernel, initrd)
            finally:
                _umount(mnt)
            print(f"pbx-update: slot {slot} boots next ({name}, kernel {kernel.name})", file=sys.stderr)
    else:
        raise UpdateError(f"boot-backend: unknown call {' '.join(argv)!r}")
    return 0


def _ensure_mounted(esp: Path) -> None:
    """The ESP mounted on esp (efi.mount) before the entries are read or written: if its device
    went away for a moment, systemd unmounted it."""
    if esp != Path("/efi") or os.path.ismount(esp):
        return
    r = subprocess.run(["systemctl", "start", "efi.mount"], capture_output=True, text=True, timeout=60)
    if r.returncode or not os.path.ismount(esp):
        raise UpdateError(f"the boot partition is not mounted on {esp} (systemctl start efi.mount: "
                          f"{(r.stderr or r.stdout).strip() or r.returncode})")


def _booted_slot(cmdline: str | None = None) -> str | None:
    if cmdline is None:
        try:
            cmdline = Path("/proc/cmdline").read_text()
        except OSError:
            return None
    for word in cmdline.split():
        if word.startswith("rauc.slot="):
            return word.split("=", 1)[1]
    return None


# ---- rauc status -------------------------------------------------------------------------------

@dataclass
class Slot:
    name: str          # rootfs.0
    bootname: str      # A
    device: str
    state: str         # booted | inactive | active
    boot_status: str   # good | bad | ""
    version: str       # bundle version written into it, "" if none
    installed: str     # timestamp of the install, "" if none
    primary: bool


def parse_rauc_status(text: str) -> dict:
    """`rauc status --output-format=json` (RAUC 1.8) -> {compatible, booted, primary, slots}."""
    doc = json.loads(text)
    primary = doc.get("boot_primary") or ""
    slots = []
    for item in doc.get("slots") or []:
        for name, s in item.items():
            if s.get("class") not in (None, "rootfs"):
                continue
            status = s.get("slot_status") or {}
            bundle = status.get("bundle") or {}
            installed = status.get("installed") or {}
            slots.append(Slot(name=name, bootname=s.get("bootname") or "", device=s.get("device") or "",
                              state=s.get("state") or "", boot_status=s.get("boot_status") or "",
                              version=bundle.get("version") or "", installed=installed.get("timestamp") or "",
                              primary=name == primary))
    slots.sort(key=lambda s: s.name)
    return {"compatible": doc.get("compatible") or "", "booted": doc.get("booted") or "",
            "primary": primary, "slots": slots}


def rauc_status() -> dict:
    if shutil.which("rauc") is None:
        raise UpdateError("rauc is not installed: A/B updates run on the appliance image only (make image)")
    r = subprocess.run(["rauc", "status", "--output-format=json"], capture_output=True, text=True, timeout=30)
    if r.returncode:
        raise UpdateError(f"rauc status failed: {((r.stderr or r.stdout).strip().splitlines() or ['no output'])[-1]}"
                          " (is rauc.service running? systemctl status rauc)")
    return parse_rauc_status(r.stdout)


def running_version(root: Path = Path("/opt/pbx")) -> str:
    try:
        return (root / "VERSION").read_text().strip()
    except OSError:
        return "development (not an image)"


# ---- uploads, backup, install ------------------------------------------------------------------

BACKUP_ROOT = "/data/backup"   # the pre-update copies of config.json and cdr.sqlite (the data partition)


def check_bundle_head(filename: str, head: bytes, size: int) -> None:
    """The checks an uploaded or downloaded bundle passes before RAUC sees it (RAUC then checks
    the signature against /etc/rauc/keyring.pem and the compatible string)."""
    if not filename.lower().endswith(".raucb"):
        raise UpdateError(f"{filename or 'the file'} is not an update bundle: choose a .raucb file (make bundle)")
    if size > MAX_BUNDLE_BYTES:
        raise UpdateError(f"{filename} is {size // (1 << 20)} MB, larger than {MAX_BUNDLE_BYTES >> 20} MB: "
                          "not a bundle of this PBX")
    if size < 4096 or not head.startswith(BUNDLE_MAGIC):
        raise UpdateError(f"{filename} is not a RAUC bundle (no squashfs header): build one with make bundle")


def backup_data(var: Path, backup_root: Path, version: str, now: float | None = None) -> Path:
    """Copy config.json and cdr.sqlite (SQLite's online backup) to backup_root/<time>-<version>
    before an install, keeping the newest BACKUP_KEEP copies."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    dest = backup_root / f"{stamp}-{re.sub(r'[^A-Za-z0-9._-]', '_', version)}"
    dest.mkdir(parents=True, exist_ok=True)
    cfg = var / "config.json"
    if cfg.exists():
        shutil.copy2(cfg, dest / "config.json")
    cdr = var / "cdr.sqlite"
    if cdr.exists():
        src = sqlite3.connect(f"file:{cdr}?mode=ro", uri=True)
        dst = sqlite3.connect(dest / "cdr.sqlite")
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    os.sync()
    old = sorted(p for p in backup_root.iterdir() if p.is_dir())
    for p in old[:-BACKUP_KEEP]:
        shutil.rmtree(p, ignore_errors=True)
    return dest


def newer_than_this_build(var: Path) -> list[str]:
    """The data files this build would refuse: config.json or cdr.sqlite with a schema version
    above the one it knows (written by a newer version, e.g. before a rollback)."""
    from firmware import cdr
    from firmware.config import migrations
    newer = []
    try:
        tables = json.loads((var / "config.json").read_text())
        if isinstance(tables, dict) and migrations.schema_version(tables) > migrations.SCHEMA_VERSION:
            newer.append("config.json")
    except (OSError, ValueError, RuntimeError):  # missing or unreadable: the PBX says why itself
        pass
    db_path = var / "cdr.sqlite"
    if db_path.exists():
        try:
            db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            try:
                if db.execute("PRAGMA user_version").fetchone()[0] > cdr.SCHEMA_VERSION:
                    newer.append("cdr.sqlite")
            finally:
                db.close()
        except sqlite3.Error:
            pass
    return newer


def restore_newer(var: Path, backup_root: Path, now: float | None = None) -> list[str]:
    """Before the PBX starts (pbx-data-rollback.service): if this build would refuse config.json
    or cdr.sqlite because a newer version migrated them (an update that was rolled back), put the
    copy taken before that update back; the newer file is kept beside it as NAME.newer-TIME.
    Returns what was restored."""
    newer = newer_than_this_build(var)
    if not newer:
        return []
    copies = sorted((p for p in backup_root.iterdir() if p.is_dir()), reverse=True) if backup_root.is_dir() else []
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    restored = []
    for name in newer:
        src = next((c / name for c in copies if (c / name).exists()), None)
        if src is None:
            print(f"pbx-update: {var / name} is from a newer version and there is no copy in {backup_root}: "
                  "restore a backup on the System page", file=sys.stderr)
            continue
        cur = var / name
        st = cur.stat()
        for suffix in ("", "-wal", "-shm"):
            side = var / f"{name}{suffix}"
            if side.exists():
                os.replace(side, var / f"{name}{suffix}.newer-{stamp}")
        tmp = var / f".{name}.restore"
        shutil.copy2(src, tmp)
        os.chown(tmp, st.st_uid, st.st_gid)
        os.chmod(tmp, st.st_mode & 0o777)
        os.replace(tmp, cur)
        _sync_dir(var)
        restored.append(name)
        print(f"pbx-update: {name} was written by a newer version: restored the copy from {src.parent.name} "
              f"(the newer file is {name}.newer-{stamp})", file=sys.stderr)
    return restored


def fetch(url: str, dest: Path) -> Path:
    """Download a bundle (http/https) into dest, checking it as an upload would be."""
    if not url.startswith(("http://", "https://")):
        raise UpdateError(f"{url} is neither a file nor an http(s) URL")
    name = url.rsplit("/", 1)[-1].split("?", 1)[0] or "bundle.raucb"
    with urllib.request.urlopen(url, timeout=60) as r, open(dest, "wb") as f:
        size = int(r.headers.get("Content-Length") or 0)
        head = r.read(4096)
        check_bundle_head(name, head, max(size, len(head)))
        f.write(head)
        total = len(head)
        while chunk := r.read(1 << 20):
            total += len(chunk)
            if total > MAX_BUNDLE_BYTES:
                raise UpdateError(f"{url} is larger than {MAX_BUNDLE_BYTES >> 20} MB: not a bundle of this PBX")
            f.write(chunk)
    return dest


def install(source: str, var: Path, backup_root: Path, reboot: bool = False) -> str:
    """Check, back up, `rauc install`; returns RAUC's last line. Needs root (rauc.service)."""
    if shutil.which("rauc") is None:
        raise UpdateError("rauc is not installed: A/B updates run on the appliance image only (make image)")
    tmp = None
    path = Path(source)
    if not path.exists():
        if "://" not in source:
            raise UpdateError(f"{source}: no such file (give a .raucb file or an http(s) URL)")
        tmp = Path(tempfile.mkdtemp(prefix="pbx-update-", dir=str(var.parent if var.parent.is_dir() else "/tmp")))
        path = fetch(source, tmp / "bundle.raucb")
        source_name = source
    else:
        source_name = path.name
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        check_bundle_head(source_name if source_name.endswith(".raucb") else path.name, head, path.stat().st_size)
        dest = backup_data(var, backup_root, running_version())
        print(f"pbx-update: config.json and cdr.sqlite copied to {dest}", file=sys.stderr)
        r = subprocess.run(["rauc", "install", str(path)], capture_output=True, text=True)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        if r.returncode:
            raise UpdateError(f"rauc install failed: {lines[-1] if lines else r.returncode}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if reboot:
        subprocess.run(["systemctl", "reboot"], check=False)
    return lines[-1] if lines else "installed"


def install_spool(spool: Path, work: Path, var: Path, backup_root: Path) -> int:
    """pbx-update.service: take the bundle the web UI left in the spool directory (moved to a
    root-only directory first), install it, leave result.json for the web UI, reboot on success."""
    src = spool / SPOOL_NAME
    if not src.exists():
        return 0
    work.mkdir(mode=0o700, parents=True, exist_ok=True)
    bundle = work / "upload.raucb"
    shutil.move(str(src), bundle)
    result = {"time": int(time.time()), "ok": False, "message": ""}
    try:
        result["message"] = install(str(bundle), var, backup_root)
        result["ok"] = True
    except (UpdateError, OSError, sqlite3.Error) as exc:
        result["message"] = str(exc)
    finally:
        bundle.unlink(missing_ok=True)
    _write_synced(spool / "result.json", json.dumps(result))
    print(f"pbx-update: {'installed' if result['ok'] else 'failed'}: {result['message']}", file=sys.stderr)
    if result["ok"]:
        subprocess.run(["systemctl", "reboot"], check=False)
    return 0 if result["ok"] else 1


# ---- health check before the boot is blessed ---------------------------------------------------

def pbx_units() -> list[str]:
    r = subprocess.run(["systemctl", "show", "-p", "Wants", "--value", "pbx.target"],
                       capture_output=True, text=True)
    return sorted(u for u in r.stdout.split() if u.startswith("pbx-") and u.endswith((".service", ".socket")))


def unit_states(units: list[str]) -> dict[str, str]:
    if not units:
        return {}
    r = subprocess.run(["systemctl", "show", "-p", "Id,ActiveState,SubState,ConditionResult,Result,TriggeredBy",
                        *units], capture_output=True, text=True)
    states, cur = {}, {}
    for line in r.stdout.splitlines() + [""]:
        if not line.strip():
            if cur.get("Id"):
                state = f"{cur.get('ActiveState', '')}/{cur.get('SubState', '')}"
                if cur.get("ConditionResult") == "no" and state == "inactive/dead":
                    state = "skipped"  # a condition says it does not run on this box
                elif state == "inactive/dead" and cur.get("TriggeredBy") and cur.get("Result") == "success":
                    state = "on demand"   # stopped idle, its socket starts it again (the web UI)
                states[cur["Id"]] = state
            cur = {}
            continue
        k, _, v = line.partition("=")
        cur[k] = v
    return states


def sip_options(host: str, port: int, timeout: float = 5.0) -> str:
    """One SIP OPTIONS to the edge over UDP; its status line."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        lhost, lport = s.getsockname()[:2]
        tag, callid = os.urandom(4).hex(), os.urandom(8).hex()
        msg = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK{os.urandom(6).hex()};rport\r\n"
               "Max-Forwards: 70\r\n"
               f"From: <sip:selftest@{lhost}>;tag={tag}\r\nTo: <sip:{host}:{port}>\r\n"
               f"Call-ID: {callid}@pbx-update\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
        s.send(msg.encode())
        data = s.recv(65535)
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    if not line.startswith("SIP/2.0 "):
        raise UpdateError(f"the edge at {host}:{port} answered OPTIONS with {line!r}, not SIP")
    return line


def _env(path: Path = Path("/etc/pbx/pbx.env")) -> dict[str, str]:
    out = {}
    try:
        for line in path.read_text().splitlines():
            k, sep, v = line.strip().partition("=")
            if sep and not k.startswith("#"):
                out[k] = v.strip().strip('"')
    except OSError:
        pass
    return out


def health(timeout: float, data: Path = Path("/var/lib/pbx")) -> int:
    """Every pbx-*.service of pbx.target active (Type=notify: READY=1), the edge answering SIP and
    a self-test call carrying audio (services/selftest.py); exit 1 naming what is not. Run by
    pbx-update-check.service before boot-complete.target."""
    deadline = time.monotonic() + timeout
    unit_ok = ("active/running", "active/exited", "active/listening", "skipped", "on demand")
    units = pbx_units()
    if not units:
        print("pbx-update-check: pbx.target wants no pbx-* unit", file=sys.stderr)
        return 1
    while True:
        states = unit_states(units)
        bad = {u: s for u, s in states.items() if s not in unit_ok}
        # failed, or crashed and waiting to be restarted: the new root cannot run it
        failed = {u: s for u, s in bad.items() if s.startswith("failed") or s.endswith("auto-restart")}
        if not bad:
            break
        if failed or time.monotonic() > deadline:
            what = ", ".join(f"{u} {s}" for u, s in sorted(bad.items()))
            print(f"pbx-update-check: slot {_booted_slot() or '?'} failed: not ready: {what}", file=sys.stderr)
            return 1
        time.sleep(2)
    env = _env()
    host, port = env.get("PBX_SIP_ADDR") or "127.0.0.1", int(env.get("PBX_SIP_PORT") or 5060)
    while True:
        try:
            line = sip_options(host, port)
            break
        except (OSError, UpdateError) as exc:
            if time.monotonic() > deadline:
                print(f"pbx-update-check: the edge at {host}:{port} does not answer SIP OPTIONS: {exc}",
                      file=sys.stderr)
                return 1
            time.sleep(2)
    call = selftest_call(host, port, data, deadline)
    if call is None:
        return 1
    print(f"pbx-update-check: slot {_booted_slot() or '?'} passed: {', '.join(units)} READY; edge {host}:{port} "
          f"answered {line}; {call}", file=sys.stderr)
    return 0


def selftest_call(host: str, port: int, data: Path, deadline: float) -> str | None:
    """The self-test call, retried until `deadline` (monotonic) while it fails: what passed, or None
    (the failure printed). A box with no extension yet has nobody to call as: said, and passed."""
    from . import selftest
    try:
        who = selftest.pick_extension(data)
    except selftest.SelfTestError as exc:     # a configuration the new slot cannot read fails the boot
        print(f"pbx-update-check: self-test call: {exc}", file=sys.stderr)
        return None
    if who is None:
        return "no self-test call: the box has no extension yet (SIP OPTIONS only)"
    while True:
        try:
            return selftest.echo_call(host, port, *who).summary()
        except (OSError, selftest.SelfTestError) as exc:
            if time.monotonic() > deadline:
                print(f"pbx-update-check: slot {_booted_slot() or '?'} failed: self-test call: {exc}",
                      file=sys.stderr)
                return None
            time.sleep(3)


# ---- `pbx update` --------------------------------------------------------------------------------

def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not (sep and host and port.isdigit() and 1 <= int(port) <= 65535 and len(value) <= 255):
        raise argparse.ArgumentTypeError(f"{value[:60]!r} is not HOST:PORT (e.g. 127.0.0.1:5060)")
    return value


def add_parser(sub, common) -> None:
    u = sub.add_parser("update", help="A/B software updates of the appliance image (RAUC bundles)")
    usub = u.add_subparsers(dest="update_cmd", required=True)
    # --data like every subcommand (the house rule; the PBX data itself is found by the units)
    i = usub.add_parser("install", parents=[common], help="install a bundle (file or http(s) URL) into the other slot")
    i.add_argument("bundle", metavar="FILE|URL")
    i.add_argument("--reboot", action="store_true", help="restart into it when installed")
    st = usub.add_parser("status", parents=[common], help="the running version and both slots")
    st.add_argument("--json", action="store_true")
    t = usub.add_parser("selftest", parents=[common],
                        help="place the self-test call (echo test as the lowest extension), as after an update")
    t.add_argument("--sip", default=None, type=_host_port, metavar="HOST:PORT",
                   help="the edge (default: pbx.env, else 127.0.0.1:5060)")


def cmd_update(args) -> int:
    try:
        if args.update_cmd == "selftest":
            return cmd_selftest(args)
        if args.update_cmd == "install":
            if os.geteuid() != 0:
                raise UpdateError("pbx update install needs root (sudo pbx update install ...): "
                                  "rauc writes a disk slot")
            # the PBX data is --data (on the image /var/lib/pbx); the copies go to /data/backup
            line = install(args.bundle, Path(args.data), Path(BACKUP_ROOT), reboot=args.reboot)
            then = "restarting into the new slot" if args.reboot else "reboot to start it (systemctl reboot)"
            print(f"{line}\n{then}: it is kept only if the PBX comes up healthy")
            return 0
        status = rauc_status()
        if args.json:
            print(json.dumps({**status, "version": running_version(),
                              "slots": [s.__dict__ for s in status["slots"]]}, indent=1))
            return 0
        print(f"running {running_version()} from slot {status['booted'] or '?'}")
        for s in status["slots"]:
            print(f"  {s.bootname} {s.name:10} {s.state:9} boot={s.boot_status or '-':5} "
                  f"{'(boots next) ' if s.primary else ''}{s.version or '-'}")
        return 0
    except UpdateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def cmd_selftest(args) -> int:
    from . import selftest
    env = _env()
    host, _, port = (args.sip or f"{env.get('PBX_SIP_ADDR') or '127.0.0.1'}:{env.get('PBX_SIP_PORT') or 5060}"
                     ).rpartition(":")
    try:
        who = selftest.pick_extension(Path(args.data))
    except selftest.SelfTestError as exc:
        raise UpdateError(str(exc)) from exc
    if who is None:
        raise UpdateError(f"no extension in {args.data} to place the self-test call as: add one (pbx ext add)")
    try:
        print(selftest.echo_call(host, int(port), *who).summary())
    except (OSError, selftest.SelfTestError) as exc:
        raise UpdateError(f"self-test call failed: {exc}") from exc
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m services.update")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("boot-backend")
    b.add_argument("call", nargs="+")
    h = sub.add_parser("health")
    h.add_argument("--timeout", type=float, default=180)
    h.add_argument("--data", default="/var/lib/pbx")
    s = sub.add_parser("install-spool")
    s.add_argument("--spool", default="/var/lib/pbx/update")
    s.add_argument("--work", default="/var/lib/pbx-update")
    s.add_argument("--var", default="/var/lib/pbx")
    s.add_argument("--backup", default="/data/backup")
    r = sub.add_parser("restore-newer")
    r.add_argument("--var", default="/var/lib/pbx")
    r.add_argument("--backup", default="/data/backup")
    args = p.parse_args(argv)
    try:
        if args.cmd == "restore-newer":
            restore_newer(Path(args.var), Path(args.backup))
            return 0
        if args.cmd == "boot-backend":
            return boot_backend(args.call)
        if args.cmd == "health":
            return health(args.timeout, Path(args.data))
        return install_spool(Path(args.spool), Path(args.work), Path(args.var), Path(args.backup))
    except UpdateError as exc:
        print(f"pbx-update: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
