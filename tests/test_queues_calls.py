"""Call queues end to end: three pjsua2 agents (1001-1003, answering after 0.2, 0.6 and 1.0 s),
SIPp callers, and what the queue log says happened.

Queues (configured before the PBX starts):
  510-516  one per strategy, members 1001-1003, no wrap-up, no announcements
  517      linear, the same agents, for six callers at once
  518      linear, the same agents, while 1001 is on an ordinary call
  519      only 1016, who refuses every offer: paused after 3
  520      nobody in it: callers hear their position and music; 1 leaves for 1009's voicemail
  521      nobody in it, at most 4 s of waiting, then extension 1010
  523      nobody in it, room for one caller: the next goes to extension 1010
  522      dynamic agents only (1005-1007 log in with *45522), 4 s of wrap-up
"""
import time

import numpy as np
import pytest

from firmware.dsp.tones import _HOLD_CHORDS
from firmware.features.queues import Queue, QueueMember
from firmware.queue_log import QueueLog
from services.voicemail import VoicemailStore
from tests.pbxproc import PbxProcess
from tests.phones.audio import read_wav, tone_fraction, tone_present
from tests.phones.pj import PjPhone
from tests.phones.sipp import Sipp

pytestmark = pytest.mark.e2e
AGENTS = {"1001": 200, "1002": 600, "1003": 1000}      # extension -> answers after (ms)
STRATEGY_QUEUES = {"ring_all": "510", "least_recent": "511", "fewest_calls": "512", "round_robin_memory": "513",
                   "linear": "514", "random": "515", "weighted_random": "516"}
QUIET = dict(announce_position=False, announce_wait=False, announce_to_agent=False, wrap_up=0, retry=1,
             max_no_answer=0, agent_timeout=10)


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    proc = PbxProcess(tmp_path_factory.mktemp("queues"), extensions=[str(n) for n in range(1000, 1017)],
                      env={"PBX_QUEUE_SEED": "4"})
    proc.store.update_record("mailboxes", "1009", enabled=True)     # the exit key's voicemail
    add = proc.store.add_record
    members = tuple(QueueMember(n) for n in AGENTS)
    for strategy, number in STRATEGY_QUEUES.items():
        ms = members if strategy != "weighted_random" else (QueueMember("1001"), QueueMember("1002"),
                                                            QueueMember("1003", 60))
        add("queues", Queue(number, strategy.replace("_", " ").title(), strategy, ms, **QUIET))
    add("queues", Queue("517", "Busy", "linear", members, **QUIET))
    add("queues", Queue("518", "Linear 2", "linear", members, **QUIET))
    add("queues", Queue("519", "Refused", "linear", (QueueMember("1016"),), **dict(QUIET, max_no_answer=3)))
    add("queues", Queue("520", "Sales", "ring_all", (), announce_every=5, exit_key="1",
                        exit_destination="voicemail:1009", periodic_announcement="Thank you for waiting.",
                        periodic_every=7))
    add("queues", Queue("521", "Support", "ring_all", (), max_wait=4, max_wait_destination="extension:1010",
                        announce_position=False, announce_wait=False))
    add("queues", Queue("523", "Small", "ring_all", (), max_callers=1, max_callers_destination="extension:1010",
                        announce_position=False, announce_wait=False))
    add("queues", Queue("522", "Desk", "linear", (), wrap_up=4, retry=1, announce_position=False,
                        announce_wait=False, agent_timeout=10))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def agents(pbx, tmp_path_factory):
    record = tmp_path_factory.mktemp("agents")
    phones = {n: PjPhone(user=n, secret=pbx.secrets[n], registrar=pbx.registrar, tone_hz=1100, record_dir=record)
              for n in AGENTS}
    for n, p in phones.items():
        p.start()
        assert p.register() == 200
        p.auto_answer(200, after_ms=AGENTS[n])
    yield phones
    for p in phones.values():
        p.stop()


def queue_log(pbx, queue=None, since=0.0):
    with QueueLog(pbx.data) as log:
        return log.events(since, queue=queue)


def wait_log(pbx, match, timeout=20.0, since=0.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in queue_log(pbx, since=since) if match(e)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no matching queue log event in {timeout} s; log: {queue_log(pbx)[-12:]}")


def callers(pbx, number, queue, tmp_path, calls, *, hold_ms, at_once=1):
    """SIPp places `calls` calls from `number` to `queue`, `at_once` at a time; each hangs up
    `hold_ms` after the queue answered it."""
    return Sipp("uac_queue.xml", pbx.registrar, service=queue, users=[(number, pbx.secrets[number])], calls=calls,
                rate=10, duration_ms=hold_ms, workdir=tmp_path, timeout=60,
                extra_args=("-l", str(at_once))).start()


def connects(events, queue):
    return [e for e in events if e.queue == queue and e.event == "CONNECT"]


@pytest.mark.parametrize("strategy", list(STRATEGY_QUEUES))
def test_each_strategy_distributes_calls_as_it_should(pbx, agents, strategy, tmp_path):
    number = STRATEGY_QUEUES[strategy]
    incoming = {n: p.event_count for n, p in agents.items()}
    run = callers(pbx, "1000", number, tmp_path, 3, hold_ms=3000)
    result = run.wait(60)
    assert result.ok, result.log_tail()
    wait_log(pbx, lambda e: e.queue == number and e.event.startswith("COMPLETE") and
             len([x for x in queue_log(pbx, number) if x.event.startswith("COMPLETE")]) >= 3)
    events = queue_log(pbx)
    mine = connects(events, number)
    got = [e.agent for e in mine]
    assert len(got) == 3 and set(got) <= set(AGENTS)
    assert not [e for e in events if e.queue == number and e.event == "RINGNOANSWER"]
    if strategy == "ring_all":
        # every caller rang all three phones; the quickest to answer took each call
        assert got == ["1001"] * 3
        for n, p in agents.items():
            assert sum(1 for e in p._events[incoming[n]:] if e.get("event") == "incoming") == 3, n
    elif strategy == "linear":
        assert got == ["1001"] * 3
    elif strategy == "round_robin_memory":
        assert got == ["1001", "1002", "1003"]
    elif strategy in ("least_recent", "fewest_calls"):
        # replay the whole log: at each connect the agent had the oldest last call / fewest calls
        last_end = {n: 0.0 for n in AGENTS}
        taken = {n: 0 for n in AGENTS}
        for e in events:
            if e.event == "CONNECT":
                if e.queue == number:
                    if strategy == "least_recent":
                        assert last_end[e.agent] == min(last_end.values()), (e, last_end)
                    else:
                        assert taken[e.agent] == min(taken.values()), (e, taken)
                taken[e.agent] += 1
            elif e.event.startswith("COMPLETE"):
                last_end[e.agent] = e.time
        if strategy == "least_recent":
            assert len(set(got)) == 3       # one after another, each call goes to a different agent
    elif strategy == "random":
        assert len(set(got)) >= 2
    elif strategy == "weighted_random":
        assert "1003" not in got          # penalty 60 against 0: about 1 chance in 90 per call


def test_six_callers_at_once_wait_in_line_and_no_agent_takes_two(pbx, agents, tmp_path):
    number = "517"
    since = time.time()
    first = callers(pbx, "1011", number, tmp_path, 3, hold_ms=3500, at_once=3)
    time.sleep(0.5)
    later = callers(pbx, "1014", number, tmp_path, 3, hold_ms=10000, at_once=3)
    for run in (first, later):
        result = run.wait(60)
        assert result.ok, result.log_tail()
    wait_log(pbx, lambda e: len([x for x in queue_log(pbx, number, since) if x.event.startswith("COMPLETE")]) >= 6,
             since=since)
    events = queue_log(pbx, number, since=since)
    entered = [e for e in events if e.event == "ENTERQUEUE"]
    answered = connects(events, number)
    assert len(entered) == 6 and len(answered) == 6
    # never more than one call per agent at a time, so at most three conversations at once
    talking: dict[str, float] = {}
    for e in events:
        if e.event == "CONNECT":
            assert e.agent not in talking, f"{e.agent} offered a second call while talking"
            talking[e.agent] = e.time
        elif e.event.startswith("COMPLETE"):
            talking.pop(e.agent, None)
    # the first three callers are answered by the three agents; the next three waited for them
    assert {e.agent for e in answered[:3]} == set(AGENTS)
    assert sorted(int(e.data1) for e in answered)[3:] >= [2, 2, 2]


def test_an_agent_on_an_ordinary_call_is_not_offered_a_queue_call(pbx, agents, tmp_path):
    since = time.time()
    a = phone(pbx, "1015", tmp_path)
    try:
        a.call(pbx.uri("1001"))                 # 1001 auto-answers: now on a call of its own
        a.wait_state("CONFIRMED", timeout=10)
        run = callers(pbx, "1000", "518", tmp_path, 1, hold_ms=3000)
        result = run.wait(30)
        assert result.ok, result.log_tail()
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=10)
    finally:
        a.stop()
    assert [e.agent for e in connects(queue_log(pbx, "518", since=since), "518")] == ["1002"]


def test_an_agent_who_refuses_three_offers_in_a_row_is_paused(pbx, tmp_path):
    since = time.time()
    agent = phone(pbx, "1016", tmp_path)
    try:
        agent.auto_answer(486)
        run = callers(pbx, "1000", "519", tmp_path, 1, hold_ms=9000)
        result = run.wait(40)
        assert result.ok, result.log_tail()
    finally:
        agent.stop()
    events = [(e.event, e.agent, e.data1) for e in queue_log(pbx, since=since) if e.agent == "1016"]
    assert [e[0] for e in events] == ["RINGNOANSWER"] * 3 + ["PAUSE"], events
    assert events[-1][2] == "no answer"
    assert [e.event for e in queue_log(pbx, "519", since=since)][-1] == "ABANDON"   # nobody else to offer
    from firmware.config import ConfigStore
    assert ConfigStore(pbx.data).record("queue_agents", "1016").paused


def heard(wav, text: str) -> float:
    """How closely the phone's recording contains `text` as the PBX speaks it (espeak-ng, the same
    voice): the best normalised cross-correlation of the synthesised words against the recording."""
    from services.media.prompts import synthesize
    ref = np.frombuffer(synthesize(text), "<i2").astype(np.float64)
    spoken = np.flatnonzero(np.abs(ref) > 100)
    ref = ref[spoken[0]: spoken[-1] + 1]               # the words themselves, without lead-in and tail
    rec, rate = read_wav(wav)
    if rate == 16000:
        rec = rec[::2]
    n = 1 << int(np.ceil(np.log2(len(rec) + len(ref))))
    corr = np.fft.irfft(np.fft.rfft(rec, n) * np.conj(np.fft.rfft(ref, n)), n)[: len(rec) - len(ref) + 1]
    energy = np.cumsum(np.concatenate([[0.0], rec * rec]))
    window = energy[len(ref):] - energy[: len(rec) - len(ref) + 1]
    return float(np.max(corr / (np.sqrt(np.maximum(window, 1.0)) * np.linalg.norm(ref))))


def phone(pbx, number, tmp_path, hz=700):
    p = PjPhone(user=number, secret=pbx.secrets[number], registrar=pbx.registrar, tone_hz=hz, record_dir=tmp_path)
    p.start()
    assert p.register() == 200
    return p


def test_a_waiting_caller_hears_its_position_and_music_and_1_takes_it_to_voicemail(pbx, tmp_path):
    a = phone(pbx, "1008", tmp_path)
    try:
        a.call(pbx.uri("520"))
        a.wait_state("CONFIRMED", timeout=10)
        t0 = time.monotonic()
        time.sleep(3.0)
        waiting = next(q for q in pbx.status()["queues"] if q["number"] == "520")
        assert waiting["waiting"] == 1 and waiting["callers"][0]["number"] == "1008"
        time.sleep(6.0)
        t_key = time.monotonic()
        a.send_dtmf("1")
        deadline = time.monotonic() + 30
        while "recording a message for mailbox 1009" not in pbx.log_path.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the caller never reached 1009's voicemail"
            time.sleep(0.2)
        time.sleep(3.0)                  # the caller's tone goes into the message
        a.send_dtmf("#")
        a.wait_state("DISCONNECTED", timeout=20)
        wav = a.recording_path
        waited = t_key - t0
        notes = sorted({hz for chord in _HOLD_CHORDS for hz in chord})
        # music between the first announcement (at ~1.5 s, ~2 s long) and the second (at ~6.5 s),
        # counted back from the end of the recording (the voicemail part is after t_key)
        after_key = time.monotonic() - t_key
        window = dict(start_s=-(after_key + waited - 4.5), end_s=-(after_key + waited - 6.3))
        assert max(tone_fraction(wav, hz, min_snr_db=6, **window) for hz in notes) > 0.15
        # the caller heard its position, word for word
        assert heard(wav, "You are the next caller.") > 0.9
        assert heard(wav, "You are caller number 2.") < 0.5
    finally:
        a.stop()
    log = pbx.log_path.read_text(errors="replace")
    assert "queue 520 tells 1008: You are the next caller." in log
    assert "queue 520 tells 1008: Thank you for waiting." in log        # the periodic announcement
    events = queue_log(pbx, "520")
    assert [e.event for e in events] == ["ENTERQUEUE", "EXITWITHKEY"]
    assert events[1].data1 == "1" and int(events[1].data4) >= 8
    [message] = VoicemailStore(pbx.data).messages("1009")
    assert message.caller_number == "1008"
    assert tone_fraction(VoicemailStore(pbx.data).file_of(message), 700) > 0.5


def test_a_caller_waiting_longer_than_max_wait_goes_to_the_overflow_destination(pbx, tmp_path):
    a, overflow = phone(pbx, "1012", tmp_path), phone(pbx, "1010", tmp_path, 1500)
    try:
        overflow.auto_answer(200, after_ms=200)
        a.call(pbx.uri("521"))
        a.wait_state("CONFIRMED", timeout=10)
        started = time.monotonic()
        overflow.wait_incoming(timeout=12)
        assert time.monotonic() - started >= 3.5
        overflow.wait_state("CONFIRMED", timeout=10)
        time.sleep(1.5)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=10)
        assert tone_present(a.recording_path, 1500, start_s=-1.2, end_s=-0.2)
    finally:
        a.stop()
        overflow.stop()
    assert [e.event for e in queue_log(pbx, "521")] == ["ENTERQUEUE", "EXITWITHTIMEOUT"]


def test_a_full_queue_sends_the_next_caller_to_its_overflow_destination(pbx, tmp_path):
    since = time.time()
    first = callers(pbx, "1011", "523", tmp_path, 1, hold_ms=8000)
    wait_log(pbx, lambda e: e.queue == "523" and e.event == "ENTERQUEUE", since=since)
    a, overflow = phone(pbx, "1012", tmp_path), phone(pbx, "1010", tmp_path, 1500)
    try:
        overflow.auto_answer(200, after_ms=200)
        a.call(pbx.uri("523"))
        overflow.wait_incoming(timeout=10)
        a.wait_state("CONFIRMED", timeout=10)
        time.sleep(1.5)
        a.hangup()
        a.wait_state("DISCONNECTED", timeout=10)
        assert tone_present(a.recording_path, 1500, start_s=-1.2, end_s=-0.2)
    finally:
        a.stop()
        overflow.stop()
    result = first.wait(30)
    assert result.ok, result.log_tail()
    assert [e.event for e in queue_log(pbx, "523", since=since)] == ["ENTERQUEUE", "FULL", "ABANDON"]


def dial_code(p, pbx, code):
    p.call(pbx.uri(code))
    p.wait_state("DISCONNECTED", timeout=15)


def test_logged_out_and_paused_agents_get_nothing_and_wrap_up_is_respected(pbx, tmp_path):
    a, b, c = (phone(pbx, n, tmp_path, 1100) for n in ("1005", "1006", "1007"))
    try:
        for p in (a, b, c):
            dial_code(p, pbx, "*45522")
        dial_code(b, pbx, "*472")           # paused: lunch
        dial_code(c, pbx, "*46522")         # logged out again
        for p in (a, b, c):
            p.auto_answer(200, after_ms=200)
        marks = {p.user: p.event_count for p in (b, c)}
        run = callers(pbx, "1013", "522", tmp_path, 2, hold_ms=7000)
        result = run.wait(60)
        assert result.ok, result.log_tail()
        for p in (b, c):
            assert not [e for e in p._events[marks[p.user]:] if e.get("event") == "incoming"], p.user
    finally:
        for p in (a, b, c):
            p.stop()
    events = queue_log(pbx)
    agent_events = [(e.event, e.agent, e.queue, e.data1) for e in events if e.agent in ("1005", "1006", "1007")
                    and e.event not in ("CONNECT", "COMPLETECALLER", "COMPLETEAGENT")]
    assert ("AGENTLOGIN", "1005", "522", "") in agent_events
    assert ("PAUSE", "1006", "", "lunch") in agent_events
    assert ("AGENTLOGOFF", "1007", "522", "") in agent_events
    mine = [e for e in events if e.queue == "522"]
    calls = [e for e in mine if e.event == "CONNECT"]
    assert [e.agent for e in calls] == ["1005", "1005"]
    first_end = next(e for e in mine if e.event.startswith("COMPLETE"))
    assert calls[1].time - first_end.time >= 3.8       # 4 s of wrap-up before the second call
    assert "queue 522: agent 1005 hears 'Call from Desk.'" in pbx.log_path.read_text(errors="replace")
