"""LineGateway: the analog ports of the line board as SIP phones of the PBX (decision 007).

Each FXS port registers at the Kamailio edge as its configured extension and each FXO port as
its line's account, with the extension's secret from the config store - the path a Grandstream
ATA takes, so the edge's digest auth and bans apply and the call service needs no hardware code.
Board events (hook, DTMF, ring, caller ID, disconnect) arrive on the board's dispatch thread and
are posted to this gateway's asyncio loop; per-port logic is in gw_fxs.py / gw_fxo.py, the SIP
user agent in gw_sip.py, call audio in gw_media.py.

    gateway = LineGateway(ConfigStore(data), board, edge=("127.0.0.1", 5060))
    runner = GatewayRunner(gateway).start()      # its own loop thread (service, tests)
    runner.wait_registered(5)
    ...
    runner.stop()
"""
from __future__ import annotations

import asyncio
import logging
import threading

from firmware.config import ConfigStore
from firmware.config.lines import LinePortConfig
from hw.lines.board import EVENTS, LineBoard
from hw.lines.gw_fxo import FxoLine
from hw.lines.gw_fxs import FxsLine
from hw.lines.gw_line import AnalogLine
from hw.lines.gw_sip import Account, GatewayUA, SipCall

logger = logging.getLogger(__name__)

CONFIG_POLL_S = 1.0


class LineGateway:
    def __init__(self, store: ConfigStore, board: LineBoard, *, edge: tuple[str, int],
                 sip_addr: str = "127.0.0.1") -> None:
        self.store = store
        self.board = board
        self.edge = edge
        self.sip_addr = sip_addr
        self.country = board.country
        self.ua: GatewayUA | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lines: dict[int, AnalogLine] = {}          # by port number (1..N)
        self._config: dict[int, tuple] = {}
        self._watch: asyncio.Task | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> "LineGateway":
        self.loop = asyncio.get_running_loop()
        self.ua = await GatewayUA(self.edge, self.sip_addr, self.store.settings().sip_domain).start()
        self.ua.on_invite = self._on_invite
        for name in EVENTS:
            setattr(self.board, f"when_{name}", self._poster(name))
        self.board.when_connected = lambda board: self._post(self._board_connected)
        await self.apply_config()
        if self.board.connected:
            self._board_connected()
        self._watch = self.loop.create_task(self._watch_config())
        return self

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        for name in EVENTS:
            setattr(self.board, f"when_{name}", None)
        self.board.when_connected = None
        for line in self.lines.values():
            line.close()
        if self.ua is not None:
            await self.ua.close()
        self.lines.clear()

    async def wait_registered(self, timeout: float) -> bool:
        """True once every configured port's account is registered at the edge."""
        results = await asyncio.gather(*(self.ua.registrations[line.account.user].wait(timeout)
                                          for line in self.lines.values()
                                          if line.account.user in self.ua.registrations))
        return all(results)

    def status(self) -> list[dict]:
        return [line.describe() for _, line in sorted(self.lines.items())]

    # --- configuration ---------------------------------------------------------------------------
    async def apply_config(self) -> None:
        """Bring the ports in line with the config store: new, changed and removed ports; a port
        whose extension is missing or disabled is out of service with an error in the log."""
        wanted: dict[int, tuple] = {}
        for cfg in self.store.line_ports():
            ext = self.store.get_extension(cfg.extension)
            if ext is None or not ext.enabled:
                logger.error("line port %d: extension %s %s; the port is out of service until it is fixed",
                             cfg.number, cfg.extension, "does not exist" if ext is None else "is disabled")
                continue
            wanted[cfg.number] = (cfg, ext.secret)
        for number in list(self.lines):
            if number not in wanted or wanted[number] != self._config.get(number):
                line = self.lines.pop(number)
                line.close()
                await self.ua.remove_account(line.account.user)
                self._config.pop(number, None)
                logger.info("line port %d (%s as %s) taken out of service", number, line.kind, line.account.user)
        for number, (cfg, secret) in sorted(wanted.items()):
            if number in self.lines:
                continue
            self._add_line(cfg, secret)
            self._config[number] = (cfg, secret)

    def _add_line(self, cfg: LinePortConfig, secret: str) -> None:
        account = Account(cfg.extension, secret)
        line = (FxsLine if cfg.kind == "fxs" else FxoLine)(self, cfg, account)
        self.lines[cfg.number] = line
        self.ua.add_account(account)
        logger.info("line port %d in service: %s as extension %s%s", cfg.number, cfg.kind.upper(), cfg.extension,
                    f", calls ring {cfg.destination}" if cfg.destination else "")
        if self.board.connected:
            self._check_port(line)

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL_S)
            try:
                if self.store.changed():
                    await self.apply_config()
            except Exception:
                # A config file being replaced mid-read must not stop the gateway.
                logger.exception("line gateway: applying the changed configuration failed")

    # --- board ---------------------------------------------------------------------------------
    def _board_connected(self) -> None:
        for line in self.lines.values():
            self._check_port(line)
            port = line.port
            if port is None or line.state == "idle":
                continue
            # The board came back (replugged, rebooted) with fresh port states: a phone that is
            # on-hook now, or a line no longer seized, has no call any more.
            if line.kind == "fxs" and port.state == "onhook" and line.state not in ("ringing", "recall"):
                line.on_event("on_hook")
            elif line.kind == "fxo" and line.state == "talking" and port.state != "seized":
                line.on_event("disconnect", "board reset")

    def _check_port(self, line: AnalogLine) -> None:
        port = self.board.ports.get(line.number - 1)
        if port is None or port.kind != line.kind:
            found = f"its port {line.number} is {port.kind.upper()}" if port is not None else \
                f"it has {len(self.board.ports)} port(s)"
            logger.error("line port %d is configured %s but the board at %s says %s: fix the line port config",
                         line.number, line.kind.upper(), self.board.port_url, found)
            return
        if line.kind == "fxs":
            # the port's flash window (protocol rev 2; an older board NAKs it and keeps 100-700 ms)
            line.board(port.set_flash_times, line.cfg.flash_min_ms, line.cfg.flash_max_ms)
        if line.kind == "fxo":
            try:
                port.open_audio()     # caller ID and ringing are heard before any call exists
            except Exception as exc:
                logger.error("line port %d: %s", line.number, exc)

    def _poster(self, name: str):
        def post(port, *args):
            self._post(self._board_event, name, port, *args)
        return post

    def _post(self, func, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(func, *args)
        except RuntimeError:
            pass                       # the loop is closing: the gateway is shutting down

    def _board_event(self, name: str, port, *args) -> None:
        line = self.lines.get(port.number + 1)
        if line is None or line.kind != port.kind:
            return
        try:
            line.on_event(name, *args)
        except Exception:
            logger.exception("line %d: handling %s failed", line.number, name)

    # --- SIP -----------------------------------------------------------------------------------
    def _on_invite(self, account: Account, call: SipCall) -> None:
        for line in self.lines.values():
            if line.account.user == account.user:
                line.incoming(call)
                return
        call.reject(404)


class GatewayRunner:
    """Runs a LineGateway on an asyncio loop in its own thread; the caller's thread stays free
    (the service's systemd loop, a test)."""

    def __init__(self, gateway: LineGateway) -> None:
        self.gateway = gateway
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="line-gateway", daemon=True)

    def start(self, timeout: float = 5.0) -> "GatewayRunner":
        self._thread.start()
        try:
            self.call(self.gateway.start(), timeout)
        except BaseException:
            self._end_loop()
            raise
        return self

    def call(self, coro, timeout: float = 5.0):
        """Run a coroutine on the gateway's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def wait_registered(self, timeout: float) -> bool:
        return self.call(self.gateway.wait_registered(timeout), timeout + 1)

    def status(self, timeout: float = 5.0) -> list[dict]:
        """The ports' states, as the gateway's loop reports them (TimeoutError if it is hung)."""
        async def get():
            return self.gateway.status()
        return self.call(get(), timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.call(self.gateway.stop(), 10)
        except Exception as exc:
            logger.warning("line gateway did not stop cleanly: %s", exc)
        self._end_loop()

    def _end_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()
