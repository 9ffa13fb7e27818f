"""One pjsua2 test phone in its own process, driven by JSON lines on stdin.

Run as `python -m tests.phones.pj_agent '<json options>'`. Commands arrive one JSON object per line
({"id": n, "cmd": "call", ...}); replies ({"id": n, "ok": true, "result": ...}) and unsolicited
events ({"event": "state", ...}) leave one per line on the original stdout. Everything pjsua2 prints
goes to stderr, so the JSON channel stays clean.

A separate process per phone because pjsua2-python caps calls per process (PJSUA_MAX_CALLS=4) and
aborts the whole process on misuse; a crash here must not take pytest down.
"""

import gc
import json
import os
import select
import sys
import threading
import time

import pjsua2 as pj

# pjsua2 state names without the PJSIP_INV_STATE_ prefix.
_STATES = {
    pj.PJSIP_INV_STATE_NULL: "NULL",
    pj.PJSIP_INV_STATE_CALLING: "CALLING",
    pj.PJSIP_INV_STATE_INCOMING: "INCOMING",
    pj.PJSIP_INV_STATE_EARLY: "EARLY",
    pj.PJSIP_INV_STATE_CONNECTING: "CONNECTING",
    pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
}
_MEDIA_STATUS = {
    pj.PJSUA_CALL_MEDIA_NONE: "NONE",
    pj.PJSUA_CALL_MEDIA_ACTIVE: "ACTIVE",
    pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "LOCAL_HOLD",
    pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "REMOTE_HOLD",
    pj.PJSUA_CALL_MEDIA_ERROR: "ERROR",
}


class Channel:
    """The JSON line channel back to the parent; media-thread callbacks write here too."""

    def __init__(self, fd):
        self._out = os.fdopen(fd, "w", buffering=1)
        self._lock = threading.Lock()

    def send(self, obj):
        with self._lock:
            self._out.write(json.dumps(obj) + "\n")
            self._out.flush()


class PhoneCall(pj.Call):
    """One call leg of this phone: tone out, recorder in, events to the parent."""

    def __init__(self, agent, number, acc, call_id=pj.PJSUA_INVALID_ID):
        super().__init__(acc, call_id)
        self.agent = agent
        self.number = number
        self.recorder = None
        self.record_path = os.path.join(agent.record_dir, f"{agent.user}-call{number}.wav")

    def onCallState(self, prm):
        ci = self.getInfo()
        state = _STATES.get(ci.state, str(ci.state))
        if ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.agent.drop_call(self)  # first, so the WAV is complete when the parent hears of it
        self.agent.emit({"event": "state", "call": self.number, "state": state,
                         "code": ci.lastStatusCode, "reason": ci.lastReason})

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for i, mi in enumerate(ci.media):
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            status = _MEDIA_STATUS.get(mi.status, str(mi.status))
            self.agent.emit({"event": "media", "call": self.number, "status": status})
            if mi.status in (pj.PJSUA_CALL_MEDIA_ACTIVE, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                # Conference slots change after hold/unhold: connect again every time.
                aud = self.getAudioMedia(i)
                self.agent.tone_source().startTransmit(aud)
                if self.recorder is None:
                    self.recorder = pj.AudioMediaRecorder()
                    self.recorder.createRecorder(self.record_path)
                aud.startTransmit(self.recorder)

    def onCallTransferStatus(self, prm):
        # NOTIFY sipfrag progress of a REFER this phone sent
        self.agent.emit({"event": "xfer", "call": self.number, "code": prm.statusCode,
                         "final": bool(prm.finalNotify)})

    def onDtmfDigit(self, prm):
        # Arrives on the media thread; Channel.send is locked.
        self.agent.dtmf_digit(self.number, prm.digit)


class PhoneAccount(pj.Account):
    def __init__(self, agent):
        super().__init__()
        self.agent = agent

    def onRegState(self, prm):
        self.agent.emit({"event": "reg", "code": prm.code, "reason": prm.reason,
                         "expiration": prm.expiration})

    def onIncomingCall(self, prm):
        self.agent.incoming(prm.callId, prm.rdata.wholeMsg)


class Agent:
    def __init__(self, opts, channel):
        self.ch = channel
        self.user = opts["user"]
        self.secret = opts.get("secret") or ""
        self.registrar = opts.get("registrar")
        self.transport = opts.get("transport", "udp")
        self.local_addr = opts.get("local_addr", "127.0.0.1")
        self.tone_hz = opts.get("tone_hz")
        self.record_dir = opts["record_dir"]
        self.auto = None  # (code, after_ms, intercom_only) for incoming calls
        self.calls = {}  # call number -> PhoneCall
        self.next_number = 1
        self.timers = []  # (deadline, fn)
        self.running = True
        self._tone = None
        self._silence = None

        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0  # we poll libHandleEvents from the main loop
        cfg.uaConfig.maxCalls = 4
        cfg.uaConfig.userAgent = f"pjsua2-testphone/{self.user}"
        cfg.logConfig.level = int(opts.get("log_level", 3))
        cfg.logConfig.consoleLevel = int(opts.get("log_level", 3))
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        self.ep.libInit(cfg)

        tcfg = pj.TransportConfig()
        tcfg.boundAddress = self.local_addr
        tcfg.publicAddress = self.local_addr
        tcfg.port = int(opts.get("port", 0))
        ttype = pj.PJSIP_TRANSPORT_TCP if self.transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
        self.tid = self.ep.transportCreate(ttype, tcfg)
        self.ep.libStart()
        # No sound card on test machines: the null device still clocks the conference bridge.
        self.ep.audDevManager().setNullDev()
        self._set_codecs(opts.get("codecs") or ["PCMA/8000", "PCMU/8000"])

        info = self.ep.transportGetInfo(self.tid)
        self.host, self.port = info.localName.rsplit(":", 1)
        self.acc = PhoneAccount(self)
        self.acc.create(self._account_config())

    def _set_codecs(self, wanted):
        # G.711 only, in the order asked: what the PBX speaks, and what tone tests can analyse.
        for c in self.ep.codecEnum2():
            self.ep.codecSetPriority(c.codecId, 0)
        prio = 250
        for name in wanted:
            for c in self.ep.codecEnum2():
                if c.codecId.upper().startswith(name.upper()):
                    self.ep.codecSetPriority(c.codecId, prio)
                    prio -= 1

    def _tparam(self):
        return ";transport=tcp" if self.transport == "tcp" else ""

    def _account_config(self):
        acfg = pj.AccountConfig()
        acfg.sipConfig.transportId = self.tid
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acfg.natConfig.sdpNatRewriteUse = 0
        acfg.mediaConfig.transportConfig.boundAddress = self.local_addr
        acfg.mediaConfig.transportConfig.publicAddress = self.local_addr
        acfg.mediaConfig.transportConfig.port = 0  # any free RTP port: tests run in parallel
        if self.registrar:
            host, port = self.registrar
            acfg.idUri = f"sip:{self.user}@{host}:{port}"
            acfg.regConfig.registrarUri = f"sip:{host}:{port}{self._tparam()}"
            acfg.regConfig.registerOnAdd = False
            acfg.regConfig.timeoutSec = 300
            acfg.regConfig.retryIntervalSec = 0  # a failed REGISTER is a test result, not retried
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", self.user, 0, self.secret))
        else:
            acfg.idUri = f"sip:{self.user}@{self.host}:{self.port}"
        return acfg

    # --- events ---------------------------------------------------------------
    def emit(self, obj):
        self.ch.send(obj)

    def incoming(self, call_id, invite=""):
        number = self.next_number
        self.next_number += 1
        call = PhoneCall(self, number, self.acc, call_id)
        self.calls[number] = call
        ci = call.getInfo()
        # auto-answer headers, as Yealink/Grandstream/Snom read them (paging, intercom)
        alert = [line.split(":", 1)[1].strip() for line in invite.splitlines()
                 if line.lower().startswith(("call-info:", "alert-info:"))]
        intercom = any("answer-after=0" in a or "info=alert-autoanswer" in a for a in alert)
        self.emit({"event": "incoming", "call": number, "from": ci.remoteUri, "to": ci.localUri,
                   "call_id": ci.callIdString, "auto_answer_headers": alert})
        auto = self.auto if self.auto and (intercom or not self.auto[2]) else None
        if auto and auto[1] == 0:
            self._answer(call, auto[0])
            return
        self._answer(call, 180)  # a real phone rings
        if auto:
            code = auto[0]
            self.timers.append((time.monotonic() + self.auto[1] / 1000,
                                lambda: number in self.calls and self._answer(call, code)))

    def dtmf_digit(self, number, digit):
        self.emit({"event": "dtmf", "call": number, "digit": digit})

    def drop_call(self, call):
        # Call ids are reused: a stale object's destructor would hang up the next call in the slot.
        self.calls.pop(call.number, None)
        call.recorder = None  # pjsua2 closes the WAV (writes its header) when the object dies

    def tone_source(self):
        if self.tone_hz:
            if self._tone is None:
                self._tone = pj.ToneGenerator()
                self._tone.createToneGenerator(8000, 1)
                tone = pj.ToneDesc()
                tone.freq1 = int(self.tone_hz)
                tone.freq2 = 0
                tone.on_msec = 30000
                tone.off_msec = 0
                tones = pj.ToneDescVector()
                tones.append(tone)
                self._tone.play(tones, True)
            return self._tone
        if self._silence is None:
            # Nothing to play: the bridge's own null port (slot 0) sends silence.
            self._silence = self.ep.audDevManager().getCaptureDevMedia()
        return self._silence

    # --- commands -------------------------------------------------------------
    def _call(self, number):
        if number is None:
            if not self.calls:
                raise RuntimeError("no active call")
            number = max(self.calls)
        call = self.calls.get(int(number))
        if call is None:
            raise RuntimeError(f"call {number} is not active (active: {sorted(self.calls)})")
        return call

    def _answer(self, call, code):
        prm = pj.CallOpParam()
        prm.statusCode = code
        call.answer(prm)

    def cmd_info(self, msg):
        return {"host": self.host, "port": int(self.port), "transport": self.transport,
                "uri": f"sip:{self.user}@{self.host}:{self.port}{self._tparam()}"}

    def cmd_register(self, msg):
        if not self.registrar:
            raise RuntimeError("phone has no registrar: pass registrar=(host, port)")
        self.acc.setRegistration(bool(msg.get("on", True)))

    def cmd_call(self, msg):
        number = self.next_number
        self.next_number += 1
        call = PhoneCall(self, number, self.acc)
        prm = pj.CallOpParam(True)
        for name, value in (msg.get("headers") or {}).items():
            h = pj.SipHeader()
            h.hName = name
            h.hValue = value
            prm.txOption.headers.append(h)
        self.calls[number] = call
        try:
            call.makeCall(msg["uri"], prm)
        except pj.Error:
            self.calls.pop(number, None)
            raise
        return {"call": number, "record_path": call.record_path}

    def cmd_answer(self, msg):
        call = self._call(msg.get("call"))
        self._answer(call, int(msg.get("code", 200)))
        return {"call": call.number, "record_path": call.record_path}

    def cmd_hangup(self, msg):
        call = self._call(msg.get("call"))
        prm = pj.CallOpParam()
        prm.statusCode = int(msg.get("code", 0))
        call.hangup(prm)

    def cmd_hold(self, msg):
        self._call(msg.get("call")).setHold(pj.CallOpParam(True))

    def cmd_unhold(self, msg):
        prm = pj.CallOpParam(True)
        prm.opt.flag = pj.PJSUA_CALL_UNHOLD
        self._call(msg.get("call")).reinvite(prm)

    def cmd_xfer(self, msg):
        """Blind transfer: REFER the far end of this call to msg['uri']."""
        self._call(msg.get("call")).xfer(msg["uri"], pj.CallOpParam(True))

    def cmd_xfer_replaces(self, msg):
        """Attended transfer: REFER with Replaces naming this phone's other call."""
        self._call(msg.get("call")).xferReplaces(self._call(msg["other"]), pj.CallOpParam(True))

    def cmd_dtmf(self, msg):
        # RFC 2833/4733 telephone-event is pjsua2's default DTMF method.
        self._call(msg.get("call")).dialDtmf(msg["digits"])

    def cmd_auto_answer(self, msg):
        code = msg.get("code")
        self.auto = None if code is None else (int(code), int(msg.get("after_ms", 0)),
                                               bool(msg.get("intercom_only")))

    def cmd_hangup_all(self, msg):
        self.ep.hangupAllCalls()

    def cmd_quit(self, msg):
        self.running = False

    def handle(self, line):
        try:
            msg = json.loads(line)
        except ValueError as exc:
            self.emit({"event": "error", "error": f"bad command line {line!r}: {exc}"})
            return
        fn = getattr(self, "cmd_" + str(msg.get("cmd")), None)
        try:
            if fn is None:
                raise RuntimeError(f"unknown command {msg.get('cmd')!r}")
            result = fn(msg)
            self.emit({"id": msg.get("id"), "ok": True, "result": result})
        except Exception as exc:  # pj.Error included: report it, keep the phone alive
            text = getattr(exc, "info", None)
            text = text() if callable(text) else str(exc)
            self.emit({"id": msg.get("id"), "ok": False, "error": text})

    # --- loop -----------------------------------------------------------------
    def _run_timers(self):
        # A method of its own so no local keeps a Call alive past libDestroy.
        now = time.monotonic()
        due = [t for t in self.timers if t[0] <= now]
        self.timers = [t for t in self.timers if t[0] > now]
        for _, fn in due:
            fn()

    def run(self, in_fd):
        buf = b""
        self.emit({"event": "ready", **self.cmd_info({})})
        while self.running:
            self.ep.libHandleEvents(10)
            self._run_timers()
            ready, _, _ = select.select([in_fd], [], [], 0)
            if not ready:
                continue
            data = os.read(in_fd, 65536)
            if not data:
                break  # parent gone: shut down
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    self.handle(line.decode())
        self.shutdown()

    def shutdown(self):
        if self.calls:
            self.ep.hangupAllCalls()
            deadline = time.monotonic() + 2
            while self.calls and time.monotonic() < deadline:
                self.ep.libHandleEvents(10)
        self.calls.clear()
        self.timers.clear()
        self._tone = None
        self._silence = None
        self.acc.shutdown()
        self.acc = None
        gc.collect()  # pjsua2 objects must die before libDestroy or it asserts
        self.ep.libDestroy()


def main():
    opts = json.loads(sys.argv[1])
    # Keep the JSON channel on a private fd; pjsua2 logs go to stderr via fd 1 -> 2.
    json_fd = os.dup(1)
    os.dup2(2, 1)
    agent = Agent(opts, Channel(json_fd))
    agent.run(sys.stdin.fileno())
    gc.collect()
    os._exit(0)  # skip interpreter teardown: pjsua2 finalizers after libDestroy can abort


if __name__ == "__main__":
    main()
