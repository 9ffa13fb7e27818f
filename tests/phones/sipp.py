"""Run SIPp scenarios from tests/sipp/ and read back what happened.

    r = run_sipp("uac_call_auth.xml", ("127.0.0.1", 5060), service="1001",
                 users=[("1000", "pw1000")], duration_ms=2000, workdir=tmp_path)
    assert r.ok and r.responses[180] == 1

    with Sipp("uas_answer.xml", params={"answer_delay": 300}, calls=1, workdir=tmp_path) as uas:
        ...  # uas.port is where it listens
    uas.result.successful

Users go in through an injection CSV with the whole `[authentication username=.. password=..]`
keyword in field 1: SIPp does not expand fields nested inside keywords.
"""

import csv
import logging
import signal
import socket
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

SCENARIOS = Path(__file__).resolve().parents[1] / "sipp"
G711A_PCAP = Path("/usr/share/sip-tester/g711a.pcap")

# -set variables each scenario reads, with the value used when the caller gives none.
DEFAULT_PARAMS = {
    "register_auth.xml": {"expires": 300},
    "uas_registrar_auth.xml": {"username": "1000", "password": ""},
    "uac_expect.xml": {"expect_code": 486},
    "uas_answer.xml": {"answer_delay": 0, "play_pcap": 0},
    "uas_load.xml": {"answer_delay": 0},
    "uas_challenge.xml": {"username": "1000", "password": ""},
}


def free_port(transport="udp", host="127.0.0.1"):
    """A port the kernel just handed out on host (closed again: tiny race, but never a fixed port)."""
    kind = socket.SOCK_STREAM if transport == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_rtp_port(host="127.0.0.1"):
    """An even port p with p, p+1 and p+2 free (SIPp echoes on -mp and -mp+2, RTCP sits on +1)."""
    for _ in range(50):
        p = free_port("udp", host) & ~1
        socks = []
        try:
            for q in (p, p + 1, p + 2):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, q))
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free RTP port triple found on loopback after 50 tries")


def extract_alaw(pcap_path, out_path):
    """Concatenate the PCMA payloads of an RTP pcap into a raw a-law file for rtp_stream."""
    raw = Path(pcap_path).read_bytes()
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    linktype = struct.unpack(endian + "I", raw[20:24])[0]
    link_len = {1: 14, 113: 16, 101: 0}.get(linktype)
    if link_len is None:
        raise ValueError(f"{pcap_path}: unsupported pcap link type {linktype}")
    pos, out = 24, bytearray()
    while pos + 16 <= len(raw):
        incl = struct.unpack(endian + "I", raw[pos + 8:pos + 12])[0]
        pkt = raw[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        ip = pkt[link_len:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        rtp = ip[(ip[0] & 0x0F) * 4 + 8:]
        if len(rtp) < 12 or rtp[0] >> 6 != 2 or rtp[1] & 0x7F != 8:
            continue
        hdr = 12 + 4 * (rtp[0] & 0x0F)
        if rtp[0] & 0x10:  # header extension
            hdr += 4 + 4 * struct.unpack("!H", rtp[hdr + 2:hdr + 4])[0]
        out += rtp[hdr:]
    if not out:
        raise ValueError(f"{pcap_path}: no PCMA (payload type 8) RTP packets found")
    Path(out_path).write_bytes(bytes(out))
    return len(out)


def write_users_csv(path, users):
    """SIPp injection file: field0 = user, field1 = the whole authentication keyword (or empty)."""
    lines = ["SEQUENTIAL"]
    for user, password in users:
        if any(c in f"{user}{password or ''}" for c in ";\n]"):
            raise ValueError(f"SIPp user {user!r}: ';', ']' and newlines cannot go in a CSV field")
        auth = f"[authentication username={user} password={password}]" if password else ""
        lines.append(f"{user};{auth}")
    Path(path).write_text("\n".join(lines) + "\n")


@dataclass
class SippResult:
    returncode: int
    successful: int = 0
    failed: int = 0
    responses: dict = field(default_factory=dict)  # status code -> times received
    requests: dict = field(default_factory=dict)  # method -> times received
    unexpected: int = 0
    stats: dict = field(default_factory=dict)  # last row of SIPp's -trace_stat file
    workdir: Path = None

    @property
    def ok(self):
        return self.returncode == 0 and self.failed == 0 and self.successful > 0

    def log_tail(self, lines=20):
        """SIPp's error log (unexpected messages, aborted calls), for assertion messages."""
        out = []
        for p in sorted(Path(self.workdir).glob("*_errors.log")):
            out += p.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out)


class Sipp:
    """One SIPp process running one scenario file from tests/sipp/ (or an absolute path)."""

    def __init__(self, scenario, remote=None, *, transport="udp", local_ip="127.0.0.1", port=None,
                 media_port=None, users=None, service="1001", params=None, calls=1, rate=None,
                 duration_ms=None, rtp_echo=False, timeout=30.0, workdir=None, extra_args=()):
        self.scenario = Path(scenario) if Path(scenario).is_absolute() else SCENARIOS / scenario
        if not self.scenario.is_file():
            raise FileNotFoundError(f"SIPp scenario {self.scenario} not found (files: {SCENARIOS})")
        if transport not in ("udp", "tcp"):
            raise ValueError(f"SIPp transport must be 'udp' or 'tcp', not {transport!r}")
        self.transport = transport
        self.port = port or free_port(transport, local_ip)
        self.media_port = media_port or free_rtp_port(local_ip)
        self.timeout = timeout
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="sipp-"))
        self.workdir = self.workdir / f"{self.scenario.stem}-{self.port}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.stat_file = self.workdir / "stat.csv"
        self.result = None
        self._proc = None

        params = {**DEFAULT_PARAMS.get(self.scenario.name, {}), **(params or {})}
        args = ["sipp"]
        if remote is not None:
            args.append(f"{remote[0]}:{remote[1]}")
            if self.scenario.name.startswith("uac"):
                # Digest uri must be the Request-URI (RFC 2617 3.2.2); SIPp defaults to host:port.
                args += ["-auth_uri", f"{service}@{remote[0]}:{remote[1]}"]
        args += ["-sf", str(self.scenario), "-i", local_ip, "-mi", local_ip,
                 "-p", str(self.port), "-mp", str(self.media_port),
                 "-t", "t1" if transport == "tcp" else "u1", "-s", str(service), "-m", str(calls),
                 "-nostdin", "-trace_err", "-trace_counts", "-trace_stat", "-stf", str(self.stat_file),
                 "-timeout", f"{int(timeout)}s", "-timeout_error", "-max_recv_loops", "1000"]
        if rate:
            args += ["-r", str(rate)]
        if duration_ms is not None:
            args += ["-d", str(int(duration_ms))]
        if rtp_echo:
            args.append("-rtp_echo")
        users = list(users or [])
        if users or "[field0]" in self.scenario.read_text():
            csv_path = self.workdir / "users.csv"
            write_users_csv(csv_path, users or [("sipp", None)])
            args += ["-inf", str(csv_path)]
        for name, value in params.items():
            args += ["-set", str(name), str(value)]
        if "g711a.alaw" in self.scenario.read_text():
            extract_alaw(G711A_PCAP, self.workdir / "g711a.alaw")
        self.args = args + list(extra_args)

    def start(self):
        self._out = open(self.workdir / "sipp.out", "wb")
        logger.info("sipp %s on %s:%d: %s", self.scenario.name, self.transport, self.port,
                    " ".join(self.args))
        self._proc = subprocess.Popen(self.args, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                      stdout=self._out, stderr=subprocess.STDOUT)
        time.sleep(0.1)  # let it bind before a peer sends to it
        if self._proc.poll() is not None:
            raise RuntimeError(f"sipp {self.scenario.name} exited at start "
                               f"(rc={self._proc.returncode}): {self._read_out()}")
        return self

    def wait(self, timeout=None):
        """Wait for SIPp to finish its calls (bounded by the -timeout it was given + 10 s)."""
        try:
            self._proc.wait(timeout if timeout is not None else self.timeout + 10)
        except subprocess.TimeoutExpired:
            logger.warning("sipp %s still running after its timeout; killing pid %d",
                           self.scenario.name, self._proc.pid)
            self._proc.kill()
            self._proc.wait(5)
        return self._finish()

    def stop(self, grace=3.0):
        """Ask SIPp to quit (SIGUSR1 = graceful stop), kill it if it lingers, return the result."""
        if self._proc is None:
            return self.result
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGUSR1)
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        return self._finish()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _read_out(self):
        self._out.flush()
        return (self.workdir / "sipp.out").read_text(errors="replace")[-2000:]

    def _finish(self):
        if self.result is not None:
            return self.result
        rc = self._proc.returncode
        self._out.close()
        r = SippResult(returncode=rc, workdir=self.workdir)
        if self.stat_file.exists():
            rows = list(csv.reader(self.stat_file.open(), delimiter=";"))
            if len(rows) >= 2:
                r.stats = dict(zip(rows[0], rows[-1]))
                r.successful = int(r.stats.get("SuccessfulCall(C)") or 0)
                r.failed = int(r.stats.get("FailedCall(C)") or 0)
        for counts in self.workdir.glob("*_counts.csv"):
            rows = list(csv.reader(counts.open(), delimiter=";"))
            if len(rows) < 2:
                continue
            for name, value in zip(rows[0], rows[-1]):
                parts = name.split("_")  # e.g. 4_180_Recv, 0_INVITE_Recv, 4_180_Unexp
                if len(parts) != 3 or not value.isdigit() or value == "0":
                    continue
                _, what, kind = parts
                if kind == "Recv":
                    bucket = r.responses if what.isdigit() else r.requests
                    key = int(what) if what.isdigit() else what
                    bucket[key] = bucket.get(key, 0) + int(value)
                elif kind == "Unexp":
                    r.unexpected += int(value)
        logger.info("sipp %s done: rc=%s ok=%d failed=%d responses=%s", self.scenario.name, rc,
                    r.successful, r.failed, r.responses)
        self.result = r
        return r


def run_sipp(scenario, remote, **kwargs):
    """Run a client scenario to completion and return its SippResult."""
    return Sipp(scenario, remote, **kwargs).start().wait()
