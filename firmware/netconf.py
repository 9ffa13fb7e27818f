"""The box's wired network: DHCP (the default) or a static IPv4 address, as a systemd-networkd drop-in.

The web UI (user pbx) only writes DATA/network/network.json. On the appliance a root unit
(pbx-network.path -> pbx-network.service, image/overlay) runs `python -m firmware.netconf apply`,
which reads that file, validates it again, and writes or removes the drop-in

    /run/systemd/network/80-pbx-wired.network.d/50-pbx-static.conf

next to image/overlay/.../80-pbx-wired.network (DHCP), then `networkctl reload`. /run is rebuilt at
every boot, before networkd starts, so the data partition's file is the only copy. Root never
copies text written by the web process: it renders the drop-in itself from checked values.
Away from the appliance (`make run`, tests) nothing but DATA/network/ is written.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

MODES = ("dhcp", "static")
MAX_DNS = 3
DROPIN = Path("/run/systemd/network/80-pbx-wired.network.d/50-pbx-static.conf")
APPLIANCE_MARK = Path("/etc/systemd/system/pbx-network.path")   # installed by the image only


class NetworkError(ValueError):
    """Bad values: errors maps each form field (mode, address, gateway, dns) to what to do."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class NetworkSettings:
    mode: str = "dhcp"
    address: str = ""                  # "192.168.1.10/24"
    gateway: str = ""                  # empty: a network without a router
    dns: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        return {**asdict(self), "dns": list(self.dns)}


def _shown(value: str) -> str:
    """A typed value as an error message quotes it: cut, so a pasted novel stays out of the page."""
    return value if len(value) <= 40 else value[:37] + "..."


def parse(mode: str, address: str = "", gateway: str = "", dns: str | list | tuple = "") -> NetworkSettings:
    """Checked settings from form or file values; NetworkError names every bad field and the fix."""
    mode = (mode or "dhcp").strip().lower()
    if mode not in MODES:
        raise NetworkError({"mode": f"network mode {_shown(mode)!r}: use dhcp or static"})
    if mode == "dhcp":
        return NetworkSettings()
    errors: dict[str, str] = {}
    address = (address or "").strip()
    iface = None
    if not address:
        errors["address"] = "a static address is needed: write it with its prefix, e.g. 192.168.1.10/24"
    elif "/" not in address:
        errors["address"] = f"{_shown(address)}: add the prefix length, e.g. {_shown(address)}/24"
    else:
        try:
            iface = ipaddress.IPv4Interface(address)
        except ValueError:
            errors["address"] = f"{_shown(address)} is not an IPv4 address with a prefix: write e.g. 192.168.1.10/24"
    if iface is not None:
        net, ip = iface.network, iface.ip
        if not 8 <= net.prefixlen <= 30:
            errors["address"] = f"prefix /{net.prefixlen}: use /8 to /30 (a home or office LAN is usually /24)"
            iface = None
        elif ip.is_loopback or ip.is_multicast or ip.is_link_local or ip.is_unspecified or ip.is_reserved:
            errors["address"] = f"{ip} cannot be a box's address: use one from your LAN, e.g. 192.168.1.10/24"
            iface = None
        elif ip == net.network_address:
            errors["address"] = (f"{ip} is the network address of {net}: pick a host address, "
                                 f"e.g. {net.network_address + 10}/{net.prefixlen}")
            iface = None
        elif ip == net.broadcast_address:
            errors["address"] = (f"{ip} is the broadcast address of {net}: pick a host address, "
                                 f"e.g. {net.network_address + 10}/{net.prefixlen}")
            iface = None
    gateway = (gateway or "").strip()
    if gateway:
        try:
            gw = ipaddress.IPv4Address(gateway)
        except ValueError:
            errors["gateway"] = f"{_shown(gateway)} is not an IPv4 address: write the router's address, e.g. 192.168.1.1"
        else:
            if iface is not None:
                net = iface.network
                if gw not in net:
                    errors["gateway"] = (f"gateway {gw} is outside {net}: use the router's address in that "
                                         f"network, or correct the address's prefix")
                elif gw in (net.network_address, net.broadcast_address):
                    errors["gateway"] = f"gateway {gw} is the network or broadcast address of {net}"
                elif gw == iface.ip:
                    errors["gateway"] = f"gateway {gw} is the box's own address: use the router's address"
            gateway = str(gw)
    if isinstance(dns, str):
        dns = [d for d in re.split(r"[\s,;]+", dns) if d]
    servers: list[str] = []
    for entry in dns or ():
        try:
            servers.append(str(ipaddress.ip_address(str(entry).strip())))
        except ValueError:
            errors["dns"] = f"DNS server {_shown(str(entry))!r} is not an IP address: write addresses separated by spaces"
            break
    else:
        if len(servers) > MAX_DNS:
            errors["dns"] = f"{len(servers)} DNS servers: give at most {MAX_DNS}"
    if errors:
        raise NetworkError(errors)
    return NetworkSettings("static", str(iface), gateway, tuple(dict.fromkeys(servers)))


def render(settings: NetworkSettings) -> str | None:
    """The networkd drop-in for 80-pbx-wired.network, or None for DHCP (no drop-in)."""
    if settings.mode == "dhcp":
        return None
    lines = ["# Written by the PBX (firmware/netconf.py) from the web UI's Network settings:",
             "# a static IPv4 address instead of DHCP. Choose DHCP in the web UI to remove it.",
             "[Network]", "DHCP=no", f"Address={settings.address}"]
    if settings.gateway:
        lines.append(f"Gateway={settings.gateway}")
    lines += [f"DNS={server}" for server in settings.dns]
    return "\n".join(lines) + "\n"


def path(data_dir: str | Path) -> Path:
    return Path(data_dir) / "network" / "network.json"


def load(data_dir: str | Path) -> NetworkSettings:
    """The saved settings (DHCP when none are saved). NetworkError for a damaged or hand-broken file."""
    p = path(data_dir)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        return NetworkSettings()
    except (OSError, ValueError) as exc:
        raise NetworkError({"mode": f"{p} is unreadable ({exc}): save the network settings again"}) from exc
    if not isinstance(doc, dict):
        raise NetworkError({"mode": f"{p} is not a JSON object: save the network settings again"})
    return parse(str(doc.get("mode", "dhcp")), str(doc.get("address", "")), str(doc.get("gateway", "")),
                 [str(d) for d in doc.get("dns", [])] if isinstance(doc.get("dns"), list) else "?")


def _write_atomic(target: Path, text: str, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(data_dir: str | Path, settings: NetworkSettings) -> Path:
    """Write DATA/network/network.json atomically (fsync'd: a power cut keeps the old or the new)."""
    p = path(data_dir)
    _write_atomic(p, json.dumps(settings.to_json(), indent=1) + "\n")
    return p


def on_appliance() -> bool:
    """True on the image, where pbx-network.path applies the saved file; False under `make run`."""
    return APPLIANCE_MARK.exists()


def apply(data_dir: str | Path, dropin: Path = DROPIN) -> bool:
    """Write or remove the networkd drop-in from the saved settings; True when it changed."""
    text = render(load(data_dir))
    try:
        old = dropin.read_text()
    except FileNotFoundError:
        old = None
    if text == old:
        return False
    if text is None:
        dropin.unlink()
    else:
        _write_atomic(dropin, text)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware.netconf",
                                     description="Apply the web UI's network settings (root, on the appliance).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("apply", help="write or remove the networkd drop-in; exit 0 changed, 3 unchanged")
    a.add_argument("--data", default=os.environ.get("PBX_DATA", "/var/lib/pbx"))
    a.add_argument("--dropin", type=Path, default=DROPIN)
    args = parser.parse_args(argv)
    try:
        changed = apply(args.data, args.dropin)
    except NetworkError as exc:
        # a bad file must not take the box off the network: keep what networkd has now
        print(f"pbx-network: {path(args.data)} not applied, the network is unchanged: {exc}", file=sys.stderr)
        return 1
    settings = load(args.data)
    what = "DHCP" if settings.mode == "dhcp" else f"static {settings.address} gateway {settings.gateway or '-'}"
    print(f"pbx-network: {what}{'' if changed else ' (unchanged)'}")
    return 0 if changed else 3


if __name__ == "__main__":
    sys.exit(main())
