"""On-demand recording and the recordings' retention limit, in the call service.

`*1` pressed during a bridged call starts recording it (one mono WAV per party, as "record every
answered call" makes: DATA/recordings/YYYYMMDD/<time>-<src>-<dst>-<call>-caller.wav / -callee.wav);
`*1` again stops it. Each file is in the call's event log (a "recording" event), so the call record
names it and the Recordings page shows it with its call. Both parties hear a short prompt
("Recording." / "Recording stopped.") so nobody is recorded without knowing.

Every RETENTION_EVERY_S the service deletes what firmware.features.recording.to_delete says is past
the Settings limits (days, disk percent).
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

from firmware.features.recording import RecordingFile, to_delete
from services.media.wavfile import WavWriter

from .. import hooks
from ..channel import Channel
from ..media import Player
from .speech import prompt

log = logging.getLogger(__name__)

RETENTION_EVERY_S = float(os.environ.get("PBX_RECORDING_RETENTION_EVERY") or 600)
_RETENTION: dict = {}       # id(svc) -> TimerHandle


def recording_now(ch: Channel) -> bool:
    bridge = ch.bridge
    return bridge is not None and any(m.rtp is not None and m.rtp.recorder is not None for m in bridge.members)


def toggle(svc, ch: Channel) -> None:
    """`*1` from a bridged party: start or stop recording its call."""
    bridge = ch.bridge
    members = [m for m in bridge.members if m.rtp is not None and not m.is_gone] if bridge is not None else []
    if len(members) < 2:
        return
    session = ch.session
    if recording_now(ch):
        for m in members:
            writer = m.rtp.recorder
            m.rtp.record_to(None)
            if writer is not None:
                writer.close()
        log.info("call %d: recording stopped by %s (*1)", session.n, ch.number)
        ch.log("recording_stopped", by=ch.number)
        _announce(svc, members, "recording_off")
        return
    if svc.recordings_dir is None:
        log.warning("call %d: *1 pressed but the call service has no recordings folder", session.n)
        return
    owner = next((m.session for m in members if m.session.caller is m), session)
    caller = owner.caller if owner.caller in members else members[0]
    others = [m for m in members if m is not caller]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    day = Path(svc.recordings_dir) / stamp[:8]
    day.mkdir(parents=True, exist_ok=True)
    os.chmod(day, 0o700)
    base = f"{stamp}-{owner.src}-{owner.dst}-{owner.n}"
    n = 1
    while any(day.glob(f"{base}{'' if n == 1 else f'-{n}'}-*.wav")):
        n += 1
    base += "" if n == 1 else f"-{n}"
    paths = []
    for m, side in ((caller, "caller"), *((o, "callee") for o in others[:1])):
        path = day / f"{base}-{side}.wav"
        m.rtp.record_to(WavWriter(path))
        m.log("recording", path=str(path))
        paths.append(str(path))
        if path not in owner.recordings:
            owner.recordings.append(str(path))
    log.info("call %d: recording started by %s (*1) to %s", session.n, ch.number, ", ".join(paths))
    _announce(svc, members, "recording_on")


def _announce(svc, members, prompt_id: str) -> None:
    """A short prompt to each party, over the call's audio (the bridge resumes after it)."""
    pcm = prompt(svc, prompt_id)
    if not pcm:
        return
    for m in members:
        if m.rtp is not None and not m.is_gone:
            svc.media.play(m.rtp, Player(pcm=pcm))


# --- retention -------------------------------------------------------------------------------------
def _recording_files(base: Path) -> list[RecordingFile]:
    found = []
    if not base.is_dir():
        return found
    for day in base.iterdir():
        if not day.is_dir():
            continue
        for f in day.iterdir():
            if f.suffix == ".wav" and not f.name.startswith("."):
                st = f.stat()
                found.append(RecordingFile(str(f), st.st_mtime, st.st_size))
    return found


def enforce_retention(recordings_dir, days: int, max_percent: int, now: float | None = None) -> list[str]:
    """Delete the recordings past the limits (I/O; the decision is firmware's); what was deleted."""
    base = Path(recordings_dir)
    if (days <= 0 and max_percent <= 0) or not base.is_dir():
        return []
    usage = shutil.disk_usage(base)
    doomed = to_delete(_recording_files(base), time.time() if now is None else now, days, max_percent,
                       usage.total, usage.used)
    for path in doomed:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    for day in {Path(p).parent for p in doomed}:
        try:
            day.rmdir()          # only when empty
        except OSError:
            pass
    if doomed:
        log.info("recording retention (%d days, %d%% of the disk): deleted %d file(s)", days, max_percent,
                 len(doomed))
    return doomed


def _retention_tick(svc) -> None:
    settings = svc.settings
    days = getattr(settings, "recording_retention_days", 0)
    percent = getattr(settings, "recording_max_disk_percent", 0)

    def run():
        try:
            enforce_retention(svc.recordings_dir, days, percent)
        except Exception:          # a disk error: try again next time, never stop the service
            log.exception("recording retention failed")

    if svc.recordings_dir is not None:
        svc.loop.run_in_executor(None, run)
    _RETENTION[id(svc)] = svc.loop.call_later(RETENTION_EVERY_S, _retention_tick, svc)


def _on_start(svc) -> None:
    old = _RETENTION.pop(id(svc), None)
    if old is not None:
        old.cancel()
    _RETENTION[id(svc)] = svc.loop.call_later(min(5.0, RETENTION_EVERY_S), _retention_tick, svc)


hooks.ON_START.append(_on_start)
