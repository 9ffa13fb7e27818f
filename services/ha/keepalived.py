"""keepalived as a child of `pbx run`: its configuration written from the HA settings, the process
supervised, and the virtual IP removed when it stops (a keepalived killed with -9 leaves the VIP on
the interface: a duplicate address on the LAN once the peer takes it, measured in
../shared/notes/appliance.md)."""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from firmware.ha import HaSettings, keepalived_conf

from ..childproc import die_with_parent
from .settings import ha_dir

log = logging.getLogger(__name__)


class HaError(RuntimeError):
    """keepalived cannot run: one line naming the cause and the fix."""


class Keepalived:
    def __init__(self, data_dir: Path, ha: HaSettings):
        self.data_dir = Path(data_dir)
        self.ha = ha
        self.proc: subprocess.Popen | None = None
        self.dir = ha_dir(data_dir)

    def config(self) -> str:
        python = shlex.quote(sys.executable)
        data = shlex.quote(str(self.data_dir.resolve()))
        # the check runs every second: a module with stdlib imports only (python -m services.cli
        # loads the whole PBX and took over a second under load, which keepalived counts as failed)
        return keepalived_conf(self.ha, check_cmd=f"{python} -m services.ha.check {data}",
                               notify_cmd=f"{python} -m services.ha.notify {data}",
                               run_dir=str(self.dir), yield_file=str((self.dir / "yield").resolve()),
                               notify_fifo=str(self.fifo_path.resolve()))

    @property
    def fifo_path(self) -> Path:
        return self.dir / "notify.fifo"

    def start(self) -> None:
        if not self.ha.vrrp:
            # no VIP to move: the remote standby decides from the main site's heartbeats
            # (services/ha/replication.py, firmware/ha.py remote_active); a single office box
            # with a remote standby is the active PBX whenever it runs
            from .notify import record_state
            record_state(self.data_dir, "BACKUP" if self.ha.site == "remote" else "MASTER")
            log.info("ha: %s without VRRP (%s), peer %s", "remote standby" if self.ha.site == "remote"
                     else "office box with a remote standby", self.ha.node_addr,
                     self.ha.peer_addr or self.ha.remote_addr)
            return
        binary = shutil.which("keepalived") or "/usr/sbin/keepalived"
        if not Path(binary).exists():
            raise HaError("keepalived is not installed: apt-get install keepalived (make run installs it)")
        conf = self.dir / "keepalived.conf"
        if not self.fifo_path.exists():
            os.mkfifo(self.fifo_path, 0o600)
        conf.write_text(self.config())
        self._drop_vip()           # a VIP left by a previous keepalived killed with -9
        # keepalived starts in BACKUP: a MASTER left in state.json by a box that lost its power
        # must not make this one act as the active box (replicate, claim calls) meanwhile
        from .notify import record_state
        record_state(self.data_dir, "BACKUP")
        log_file = open(self.dir / "keepalived.log", "ab")
        self.proc = subprocess.Popen(
            [binary, "-f", str(conf), "--dont-fork", "--log-console",
             "-p", str(self.dir / "keepalived.pid"), "-r", str(self.dir / "vrrp.pid"),
             "--no-syslog"],
            stdout=log_file, stderr=subprocess.STDOUT, preexec_fn=die_with_parent())
        log_file.close()
        log.info("ha: keepalived started (%s, VIP %s on %s, peer %s)", self.ha.role, self.ha.vip,
                 self.ha.interface, self.ha.peer_addr)

    def alive(self) -> bool:
        if not self.ha.vrrp:
            return True
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._drop_vip()

    def _drop_vip(self) -> None:
        if not self.ha.vip:
            return
        subprocess.run(["ip", "addr", "del", self.ha.vip, "dev", self.ha.interface],
                       capture_output=True, check=False)
