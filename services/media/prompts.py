"""The spoken announcements the PBX plays, synthesised at build time with espeak-ng.

`python -m services.media.prompts [--out DIR]` (run by `make prompts`) writes one 8 kHz mono
16-bit WAV per prompt into services/media/sounds/. A manifest of text hashes beside them makes a
second run skip prompts whose wording and voice have not changed, so `make run` costs nothing
after the first time. The WAVs are build output, not committed (sounds/.gitignore).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from firmware.dsp.levels import DBM0_RMS
from services.media.lazy_numpy import np
from services.media.wavfile import RATE, float_to_pcm16, parse_wav, read_wav, write_wav

logger = logging.getLogger(__name__)

SOUNDS_DIR = Path(__file__).resolve().parent / "sounds"

PROMPTS: dict[str, str] = {
    "not_found": "The number you have dialled is not recognised. Please check the number and try again.",
    "unavailable": "The person you are calling is not available. Please try again later.",
    "busy": "The person you are calling is busy. Please try again later.",
    "congestion": "All lines are busy. Please try again later.",
    "dnd_on": "Do not disturb is on.",
    "dnd_off": "Do not disturb is off.",
    "forward_on": "Call forwarding is on.",
    "forward_off": "Call forwarding is off.",
}
# ring groups, Follow Me, parking (the slot number and a group's name are spoken at run time:
# services/callsvc/flows/speech.py)
PROMPTS.update({
    "press_1_to_accept": "Press 1 to accept the call, or 2 to reject it.",
    "say_your_name": "Please say your name after the tone.",
    "followme_on": "Follow me is on.",
    "followme_off": "Follow me is off.",
    "parking_empty": "There is no call parked there.",
    "parking_full": "Every parking space is in use.",
})

# day/night toggles, call blocking (services/callsvc/flows/daynight.py, blocking.py)
PROMPTS.update({
    "night_mode_on": "Night mode on.",
    "day_mode_on": "Day mode on.",
    "enter_pin": "Please enter your PIN, then press hash.",
    "pin_wrong": "That PIN is not correct.",
    "caller_blocked": "The last caller has been blocked.",
    "nothing_to_block": "There is no caller to block.",
    "call_blocked": "Calls to this number are not allowed from this phone.",
    "number_blocked": "This number does not accept your call.",
})

# voicemail (services/callsvc/flows/voicemail.py); numbers, days and months are spoken by
# joining these (firmware/features/voicemail.py number_prompts)
PROMPTS.update({
    "vm_greeting_extension": "The person at extension",
    "vm_greeting_unavailable": "is not available. Please leave a message after the tone, then hang up or "
                               "press hash.",
    "vm_greeting_busy": "is busy. Please leave a message after the tone, then hang up or press hash.",
    "vm_greeting_mailbox": "You have reached the mailbox of",
    "vm_leave_message": "Please leave a message after the tone, then hang up or press hash.",
    "vm_mailbox_full": "Sorry, this mailbox is full and cannot take any more messages. Goodbye.",
    "vm_message_saved": "Your message has been saved. Goodbye.",
    "vm_enter_mailbox": "Please enter the mailbox number, then press hash.",
    "vm_enter_pin": "Please enter your voicemail PIN, then press hash.",
    "vm_wrong_pin": "That PIN is not correct.",
    "vm_no_mailbox": "There is no such mailbox.",
    "vm_goodbye": "Goodbye.",
    "vm_you_have": "You have",
    "vm_new_message": "new message",
    "vm_new_messages": "new messages",
    "vm_old_message": "old message",
    "vm_old_messages": "old messages",
    "vm_and": "and",
    "vm_no_messages": "You have no messages.",
    "vm_main_menu": "Press 1 to listen to your messages, 0 for mailbox options, or hash to hang up.",
    "vm_message": "Message",
    "vm_from": "from",
    "vm_unknown_caller": "an unknown caller",
    "vm_received": "received",
    "vm_at": "at",
    "vm_oh": "oh",
    "vm_oclock": "o'clock",
    "vm_message_menu": "Press 1 to replay, 2 to call back, 4 for the previous message, 5 for the envelope, "
                       "6 for the next message, 7 to delete, 9 to save, or hash for the main menu.",
    "vm_deleted": "Message deleted.",
    "vm_saved": "Message saved.",
    "vm_no_more": "There are no more messages.",
    "vm_first": "This is the first message.",
    "vm_invalid": "Sorry, that is not a valid choice.",
    "vm_options_menu": "Press 1 to record your unavailable greeting, 2 for your busy greeting, 3 to record "
                       "your name, 4 to change your PIN, or star to go back.",
    "vm_record_after_tone": "Record after the tone, then press hash.",
    "vm_greeting_saved": "Your recording has been saved.",
    "vm_new_pin": "Please enter a new PIN of 4 to 10 digits, then press hash.",
    "vm_new_pin_again": "Please enter the new PIN again, then press hash.",
    "vm_pin_changed": "Your PIN has been changed.",
    "vm_pin_not_changed": "The PINs did not match or were too easy to guess. Your PIN has not been changed.",
})


def _voicemail_words() -> dict[str, str]:
    from firmware.features.voicemail import number_prompts
    return number_prompts()


PROMPTS.update(_voicemail_words())

# IVR menus, the dial-by-name directory, on-demand recording (services/callsvc/flows/ivr.py,
# directory.py, recording.py); an IVR speaks its own phrases in its menu's language voice
PROMPTS.update({
    "ivr_invalid": "Sorry, that is not a valid option.",
    "ivr_timeout": "Sorry, I did not hear your choice.",
    "ivr_goodbye": "Thank you for calling. Goodbye.",
    "ivr_record_prompt": "Record the menu prompt after the tone, then press hash.",
    "ivr_prompt_saved": "The menu prompt has been saved.",
    "directory_intro": "Please enter the first three letters of the person's name.",
    "directory_no_match": "There is nobody with a name starting with those letters.",
    "recording_on": "Recording.",
    "recording_off": "Recording stopped.",
    "echo_test": "Echo test. Speak, and you will hear yourself.",
})

# call charging (firmware/rating/limits.py: a spend limit reached, a destination the rate sheet bars)
PROMPTS.update({
    "call_limit_reached": "Your call limit has been reached.",
    "number_barred": "Calls to this number are barred.",
})

# British English to match the wording ("dialled"); a little slower than espeak's default 175
# words per minute because narrowband telephone audio loses consonants.
VOICE = "en-gb"
WORDS_PER_MINUTE = 150
# Speech active level of about -18 dBm0 sits in the range telephone networks plan for
# (ITU-T P.56 / G.168 use -16..-20 dBm0 for speech); lead-in silence so the first syllable is
# not lost while the far end's jitter buffer fills.
ACTIVE_LEVEL_DBM0 = -18.0
LEAD_IN_S, TAIL_S = 0.25, 0.3
_MANIFEST = ".prompt-hashes.json"
# Bump when the processing below changes, so existing files are regenerated.
_GENERATOR = "espeak-ng/1"


def _hash(text: str) -> str:
    key = json.dumps([_GENERATOR, VOICE, WORDS_PER_MINUTE, ACTIVE_LEVEL_DBM0, LEAD_IN_S, TAIL_S, text])
    return hashlib.sha256(key.encode()).hexdigest()


def _check_id(prompt_id: str) -> None:
    if prompt_id not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt_id!r}: choose one of {sorted(PROMPTS)}")


def prompt_path(prompt_id: str, sounds_dir: str | os.PathLike | None = None) -> Path:
    """The WAV of a prompt; FileNotFoundError (naming the fix) when it has not been generated."""
    _check_id(prompt_id)
    path = Path(sounds_dir or SOUNDS_DIR) / f"{prompt_id}.wav"
    if not path.is_file():
        raise FileNotFoundError(f"prompt {prompt_id!r} has not been generated ({path} is missing): "
                                "run `make prompts` (or python -m services.media.prompts)")
    return path


@functools.lru_cache(maxsize=64)
def _load(path: str, _mtime_ns: int, _size: int) -> bytes:
    return read_wav(path)


def load_prompt(prompt_id: str, sounds_dir: str | os.PathLike | None = None) -> bytes:
    """A prompt's audio as 8 kHz pcm16le, read once and cached (re-read if the file changes)."""
    path = prompt_path(prompt_id, sounds_dir)
    st = path.stat()
    return _load(str(path), st.st_mtime_ns, st.st_size)


def synthesize(text: str, voice: str = VOICE) -> bytes:
    """Speak `text` with espeak-ng (`voice`: en-gb, en-us...); 8 kHz pcm16le at the prompt level,
    with lead-in and tail."""
    try:
        proc = subprocess.run(["espeak-ng", "-v", voice, "-s", str(WORDS_PER_MINUTE), "--stdout"],
                              input=text.encode(), capture_output=True, timeout=60, check=False)
    except FileNotFoundError:
        raise RuntimeError("espeak-ng is not installed: run `make deps` "
                           "(or apt-get install espeak-ng)") from None
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"espeak-ng failed (exit {proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip() or 'no audio produced'}")
    x = np.frombuffer(parse_wav(proc.stdout, "espeak-ng output", RATE), "<i2").astype(np.float64)
    blocks = x[: x.size // 160 * 160].reshape(-1, 160)
    power = np.mean(blocks * blocks, axis=1)
    active = power[power > power.max() * 1e-4]  # blocks within 40 dB of the loudest: speech
    gain = DBM0_RMS * 10 ** (ACTIVE_LEVEL_DBM0 / 20) / np.sqrt(active.mean())
    gain = min(gain, 0.89 * 32767 / max(np.abs(x).max(), 1.0))  # keep peaks below -1 dBFS
    x = np.concatenate([np.zeros(round(LEAD_IN_S * RATE)), x * gain, np.zeros(round(TAIL_S * RATE))])
    return float_to_pcm16(x / 32768.0)


def _read_manifest(out: Path) -> dict[str, str]:
    try:
        data = json.loads((out / _MANIFEST).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_manifest(out: Path, manifest: dict[str, str]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f"{_MANIFEST}.", suffix=".part", dir=out)
    os.fchmod(fd, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, out / _MANIFEST)


def generate_prompts(out_dir: str | os.PathLike | None = None,
                     progress: Callable[[str], None] = print) -> list[Path]:
    """Synthesise every prompt into out_dir (default services/media/sounds), skipping those
    whose WAV exists and whose text hash matches. Returns the WAV paths."""
    out = Path(out_dir or SOUNDS_DIR)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out)
    paths = []
    for prompt_id, text in PROMPTS.items():
        path = out / f"{prompt_id}.wav"
        digest = _hash(text)
        if path.is_file() and manifest.get(prompt_id) == digest:
            progress(f"prompt {prompt_id}: up to date ({path})")
        else:
            pcm = synthesize(text)
            write_wav(path, pcm)
            manifest[prompt_id] = digest
            _write_manifest(out, manifest)
            progress(f"prompt {prompt_id}: generated {len(pcm) / 2 / RATE:.1f} s ({path})")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.media.prompts",
                                     description="Generate the PBX's spoken prompts (8 kHz WAV).")
    parser.add_argument("--out", type=Path, default=SOUNDS_DIR,
                        help=f"folder for the WAV files (default {SOUNDS_DIR})")
    args = parser.parse_args(argv)
    try:
        generate_prompts(args.out, progress=lambda line: print(line, flush=True))
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
