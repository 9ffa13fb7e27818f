"""Specs for firmware/dsp: G.711, call-progress tones, tone and DTMF detection, RFC 4733."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from firmware.dsp import g711, rfc4733
from firmware.dsp.detect import (DtmfDetector, detect_dtmf, dominant_frequency, dtmf_samples,
                                 goertzel_power, on_off_segments, tone_present)
from firmware.dsp.levels import dbm0_to_peak, dbm0_to_power, power_to_dbm0
from firmware.dsp.tones import TONES, ToneGenerator, ToneSpec, tone

RATE = 8000
ALL_SAMPLES = np.arange(-32768, 32768).astype("<i2").tobytes()


def pcm(x: np.ndarray) -> bytes:
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float64)


def sine(freq: float, seconds: float, dbm0: float = -13.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return dbm0_to_peak(dbm0) * np.sin(2 * math.pi * freq * t)


def white_noise(n: int, dbm0: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, math.sqrt(dbm0_to_power(dbm0)), n)


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """Voiced sounds (glottal pulses at a gliding 90-250 Hz pitch through two moving formant
    resonators) alternating with fricative noise, at a 4 Hz syllable rate and about -18 dBm0:
    rich harmonics that wander across the DTMF frequencies, which is what talk-off is made of."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = 170 + 80 * np.sin(2 * math.pi * 0.7 * t) * np.sin(2 * math.pi * 0.23 * t + 1)
    phase = np.cumsum(f0 / RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    out = pulses.copy()
    for centre, spread, bw in ((650, 300, 90), (1500, 600, 120)):
        formant = centre + spread * np.sin(2 * math.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 6))
        r = math.exp(-math.pi * bw / RATE)
        y = np.zeros(n)
        for i in range(2, n):  # time-varying two-pole resonator
            c = 2 * r * math.cos(2 * math.pi * formant[i] / RATE)
            y[i] = out[i] + c * y[i - 1] - r * r * y[i - 2]
        out = y
    syllable = np.maximum(0.0, np.sin(2 * math.pi * 4 * t)) ** 0.5
    voiced = out * syllable
    fricative = rng.normal(0, 1, n) * np.maximum(0.0, -np.sin(2 * math.pi * 4 * t)) * 0.3 * voiced.std()
    x = voiced + fricative
    return x / x.std() * math.sqrt(dbm0_to_power(-18.0))


# --- G.711 -------------------------------------------------------------------------------

def test_g711_is_bit_exact_with_audioop_for_every_sample_and_code():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # stdlib up to 3.12; the audioop-lts package in the test extra after that

    assert g711.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert g711.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes) == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes) == audioop.alaw2lin(codes, 2)


def test_zero_encodes_to_the_g711_silence_codes():
    assert g711.ulaw_encode(b"\x00\x00") == b"\xff"
    assert g711.alaw_encode(b"\x00\x00") == b"\xd5"
    assert g711.SILENCE == {"PCMU": b"\xff" * 160, "PCMA": b"\xd5" * 160}
    assert not samples(g711.ulaw_decode(g711.SILENCE["PCMU"])).any()
    assert samples(g711.alaw_decode(g711.SILENCE["PCMA"])).max() <= 8  # A-law has no exact zero


def test_known_code_points_decode_to_the_g711_table_values():
    assert samples(g711.ulaw_decode(b"\x80\x00\x7f")).tolist() == [32124, -32124, 0]
    assert samples(g711.alaw_decode(b"\xaa\x2a\xd5")).tolist() == [32256, -32256, 8]


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_round_trip_error_stays_within_one_quantisation_step(codec):
    x = samples(ALL_SAMPLES)
    y = samples(g711.decoder(codec)(g711.encoder(codec)(ALL_SAMPLES)))
    err = np.abs(y - x)
    small = np.abs(x) <= 1024
    assert err[small].max() <= 36
    assert (err[~small] / np.abs(x[~small])).max() <= 0.036


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_a_speech_level_sine_survives_g711_with_over_35_db_snr(codec):
    x = np.round(sine(1004, 1.0, dbm0=-13.0))
    y = samples(g711.decoder(codec)(g711.encoder(codec)(pcm(x))))
    snr = 10 * math.log10(np.sum(x * x) / np.sum((y - x) ** 2))
    assert snr > 35


def test_codec_lookup_is_by_sdp_name_and_unknown_names_list_the_choices():
    assert g711.encoder("PCMU") is g711.ulaw_encode and g711.decoder("pcma") is g711.alaw_decode
    with pytest.raises(ValueError, match="G722.*PCMA.*PCMU"):
        g711.encoder("G722")
    with pytest.raises(ValueError, match="odd length"):
        g711.ulaw_encode(b"\x00\x00\x00")


# --- call-progress tones -------------------------------------------------------------------

def play(spec: ToneSpec, seconds: float, frame: int = 160) -> bytes:
    gen = ToneGenerator(spec)
    return b"".join(gen.frame(frame) for _ in range(round(seconds * RATE / frame)))


def assert_cadence(segments, cadence, tolerance=0.020):
    """Every complete segment (not the last, cut by the end of the buffer) matches the cadence."""
    expected = [(i % 2 == 0, s) for i, s in enumerate(cadence)]
    complete = segments[:-1]
    assert len(complete) >= len(cadence)
    for i, (on, seconds) in enumerate(complete):
        want_on, want_s = expected[i % len(expected)]
        assert on == want_on, segments
        assert abs(seconds - want_s) <= tolerance, (i, segments)


def test_uk_busy_is_400_hz_on_and_off_every_375_ms():
    audio = play(tone("uk", "busy"), 3.0)
    assert dominant_frequency(audio) == pytest.approx(400, abs=1)
    assert_cadence(on_off_segments(audio, 400), (0.375, 0.375))


def test_us_busy_is_480_plus_620_hz_half_a_second_on_and_off():
    audio = play(tone("us", "busy"), 4.0)
    assert dominant_frequency(audio, lo=400, hi=550) == pytest.approx(480, abs=1)
    assert dominant_frequency(audio, lo=550, hi=700) == pytest.approx(620, abs=1)
    assert_cadence(on_off_segments(audio, (480, 620)), (0.5, 0.5))
    # Half of a two-frequency tone is not "the tone": energy at 480 Hz alone is only 50 %.
    assert not tone_present(audio[:1600], 480)
    assert tone_present(audio[:1600], (480, 620))


@pytest.mark.parametrize("key", sorted(TONES))
def test_every_tone_has_its_frequencies_and_cadence(key):
    spec = TONES[key]
    seconds = 2 * sum(spec.cadence) + 0.1 if spec.cadence else 1.0
    audio = play(spec, seconds)
    segments = on_off_segments(audio, spec.freqs)
    if spec.cadence:
        assert_cadence(segments, spec.cadence)
    else:
        assert segments == [(True, pytest.approx(seconds))]
    on = samples(audio[: round(0.2 * RATE) * 2])  # every cadence starts with >= 0.2 s of tone
    for f in spec.freqs:
        assert power_to_dbm0(goertzel_power(on, f)) == pytest.approx(-13.0, abs=0.5)


def test_tone_frames_continue_phase_and_cadence_whatever_the_frame_size():
    spec = tone("uk", "ringback")
    whole = play(spec, 3.5, frame=160)
    gen = ToneGenerator(spec)
    sizes = [37, 1000, 1, 160, 24001, 3000]
    pieces = []
    while sum(len(p) for p in pieces) < len(whole):
        pieces.append(gen.frame(sizes[len(pieces) % len(sizes)]))
    assert b"".join(pieces)[: len(whole)] == whole


def test_a_tone_frame_is_a_slice_of_one_shared_cycle():
    a, b = ToneGenerator(tone("us", "busy")), ToneGenerator(tone("us", "busy"))
    assert a._cycle is b._cycle
    assert a.frame() == b.frame() and len(a.frame(160)) == 320


def test_unknown_tone_names_the_valid_countries_and_tones():
    with pytest.raises(ValueError, match=r"\['uk', 'us'\].*\['busy', 'congestion', 'dial', 'ringback'\]"):
        tone("fr", "busy")
    with pytest.raises(ValueError, match="cadence"):
        ToneSpec((400,), (0.5,))


# --- tone detection ----------------------------------------------------------------------

def test_goertzel_power_of_a_sine_is_half_its_amplitude_squared():
    x = 1000 * np.sin(2 * math.pi * 1000 * np.arange(160) / RATE)
    assert goertzel_power(x, 1000) == pytest.approx(500_000, rel=1e-6)
    assert goertzel_power(x, 2000) < 1.0


def test_tone_present_needs_the_tone_clear_of_noise_and_of_silence():
    noise = white_noise(1600, -40, seed=1)
    assert tone_present(pcm(sine(425, 0.2) + noise), 425)
    assert not tone_present(pcm(sine(425, 0.2) + noise), 1000)
    assert not tone_present(pcm(sine(425, 0.2) + white_noise(1600, -10, seed=2)), 425)
    assert not tone_present(bytes(3200), 425)
    assert not tone_present(pcm(sine(425, 0.2, dbm0=-60)), 425)


def test_cadence_survives_line_noise():
    audio = samples(play(tone("uk", "congestion"), 3.2)) + white_noise(round(3.2 * RATE), -35, seed=3)
    assert_cadence(on_off_segments(pcm(audio), 400), (0.4, 0.35, 0.225, 0.525))


# --- DTMF --------------------------------------------------------------------------------

ALL_DIGITS = "123A456B789C*0#D"


def test_all_sixteen_digits_are_detected_in_order():
    assert detect_dtmf(dtmf_samples(ALL_DIGITS)) == ALL_DIGITS


def test_digits_are_detected_through_white_noise():
    clean = samples(dtmf_samples(ALL_DIGITS))
    noisy = clean + white_noise(clean.size, -25, seed=4)  # ~17 dB below the DTMF pair
    assert detect_dtmf(pcm(noisy)) == ALL_DIGITS


@pytest.mark.parametrize("row_dbm0,col_dbm0", [(-4.0, -10.0), (-12.0, -6.0)])
def test_digits_are_detected_with_6_db_twist_either_way(row_dbm0, col_dbm0):
    audio = dtmf_samples(ALL_DIGITS, row_dbm0=row_dbm0, col_dbm0=col_dbm0)
    assert detect_dtmf(audio) == ALL_DIGITS


def test_twist_beyond_8_db_is_not_a_digit():
    assert detect_dtmf(dtmf_samples("5", row_dbm0=-3.0, col_dbm0=-14.0)) == ""


def test_a_repeated_digit_is_reported_once_per_press():
    assert detect_dtmf(dtmf_samples("1111")) == "1111"
    assert detect_dtmf(dtmf_samples("7", on_ms=2000)) == "7"


@pytest.mark.parametrize("offset", range(0, 80, 9))
def test_40_ms_tones_with_40_ms_pauses_are_detected_but_20_ms_blips_are_not(offset):
    lead = bytes(2 * offset)
    assert detect_dtmf(lead + dtmf_samples("5858", on_ms=40, off_ms=40)) == "5858"
    assert detect_dtmf(lead + dtmf_samples("5858", on_ms=20, off_ms=40)) == ""


@pytest.mark.parametrize("at_ms", [60, 97, 133])
def test_a_10_ms_dropout_does_not_split_a_digit(at_ms):
    audio = samples(dtmf_samples("9", on_ms=200, off_ms=100))
    audio[at_ms * 8:at_ms * 8 + 80] = 0.0  # one lost half-packet, concealed with silence
    assert detect_dtmf(pcm(audio)) == "9"


def test_a_10_ms_gap_with_a_phase_jump_does_not_split_a_digit():
    press = samples(dtmf_samples("9", on_ms=100, off_ms=0))
    assert detect_dtmf(pcm(np.concatenate([press, np.zeros(80), press, np.zeros(800)]))) == "9"


def test_streaming_in_any_chunk_size_finds_the_same_digits_once():
    audio = dtmf_samples("*0#", on_ms=60, off_ms=60)
    det = DtmfDetector()
    found = "".join(det.feed(audio[i:i + 2 * n]) for i, n in zip(range(0, len(audio), 2 * 37), [37] * 10_000))
    assert found == "*0#"
    det = DtmfDetector()
    assert "".join(det.feed(audio[i:i + 320]) for i in range(0, len(audio), 320)) == "*0#"


def test_speech_like_sound_and_noise_raise_no_digit():
    assert detect_dtmf(pcm(speech_like(6.0, seed=5))) == ""
    assert detect_dtmf(pcm(white_noise(6 * RATE, -10, seed=6))) == ""
    assert detect_dtmf(play(tone("us", "busy"), 2.0) + play(tone("uk", "ringback"), 3.0)) == ""


def test_dtmf_generator_rejects_what_is_not_a_digit():
    assert len(dtmf_samples("1", on_ms=80, off_ms=80)) == 2 * 1280
    assert detect_dtmf(dtmf_samples("abcd")) == "ABCD"
    with pytest.raises(ValueError, match="'E' is not a DTMF digit"):
        dtmf_samples("1E")


# --- RFC 4733 ------------------------------------------------------------------------------

def test_event_payload_layout_matches_rfc_4733():
    assert rfc4733.pack_event("5", end=True, volume=10, duration=800) == bytes.fromhex("058a0320")
    assert rfc4733.pack_event("#", False, 63, 0) == bytes.fromhex("0b3f0000")
    assert rfc4733.unpack_event(bytes.fromhex("058a0320")) == ("5", True, 10, 800)


@pytest.mark.parametrize("digit", rfc4733.EVENTS)
def test_every_digit_packs_and_unpacks(digit):
    for end in (False, True):
        assert rfc4733.unpack_event(rfc4733.pack_event(digit, end, 7, 1234)) == (digit, end, 7, 1234)


def test_bad_events_are_rejected_with_the_reason():
    with pytest.raises(ValueError, match="4 bytes"):
        rfc4733.unpack_event(b"\x01\x0a")
    with pytest.raises(ValueError, match="event 16"):
        rfc4733.unpack_event(bytes([16, 10, 0, 160]))
    with pytest.raises(ValueError, match="not a DTMF event"):
        rfc4733.pack_event("X", False, duration=160)
    with pytest.raises(ValueError, match="volume"):
        rfc4733.pack_event("1", False, volume=64, duration=160)
    with pytest.raises(ValueError, match="duration"):
        rfc4733.pack_event("1", False, duration=70_000)
    with pytest.raises(TypeError, match="duration"):
        rfc4733.pack_event("1", False)


def event_packets(digit: str, ts: int, updates: int = 4):
    """What a phone sends for one key press: start, updates every 20 ms, the end packet 3 times."""
    packets = [(ts, rfc4733.pack_event(digit, False, duration=160 * (i + 1))) for i in range(updates)]
    packets += [(ts, rfc4733.pack_event(digit, True, duration=160 * (updates + 1)))] * 3
    return packets


def received(receiver, packets) -> str:
    return "".join(d for d in (receiver.feed(ts, p) for ts, p in packets) if d)


def test_receiver_reports_each_press_once_despite_the_three_end_packets():
    packets = event_packets("1", 1000) + event_packets("1", 3000) + event_packets("#", 5000)
    assert received(rfc4733.EventReceiver(), packets) == "11#"


def test_receiver_reports_a_press_whose_start_packets_were_lost():
    packets = event_packets("4", 1000)[2:] + event_packets("2", 3000)[-1:]
    assert received(rfc4733.EventReceiver(), packets) == "42"


def test_receiver_ignores_late_packets_of_an_earlier_press():
    first, second = event_packets("7", 1000), event_packets("8", 2000)
    packets = first[:2] + second[:1] + first[-1:] + second[1:]
    assert received(rfc4733.EventReceiver(), packets) == "78"


def test_receiver_handles_timestamp_wrap_and_long_event_continuation():
    r = rfc4733.EventReceiver()
    assert received(r, event_packets("3", 0xFFFFFF00)) == "3"
    assert received(r, event_packets("3", 0x00000100)) == "3"
    start = 50_000
    long_press = [(start, rfc4733.pack_event("0", False, duration=0xFFFF)),
                  (start + 0xFFFF, rfc4733.pack_event("0", False, duration=800)),
                  (start + 0xFFFF, rfc4733.pack_event("0", True, duration=1600))]
    assert received(r, long_press) == "0"


def test_receiver_survives_what_the_network_sends_besides_digits():
    r = rfc4733.EventReceiver()
    assert r.feed(100, bytes([16, 0x0a, 0, 160])) is None  # flash hook: a valid event, not a digit
    assert r.feed(200, b"\x05") is None and r.malformed == 1
    padded = rfc4733.pack_event("6", False, duration=160) + b"\x00\x00\x00\x04"  # RTP padding
    assert r.feed(300, padded) == "6"
