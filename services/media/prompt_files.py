"""Prompt files the administrator makes: replaced system prompts, IVR menu prompts, spoken names.

    DATA/prompts/custom/<prompt>.wav           an uploaded replacement of a system prompt
                                              (services/media/prompts.py PROMPTS); the call
                                              service plays it instead of the built-in one
    DATA/prompts/ivr/<menu>/tts-<key>.wav      a menu's text spoken in its language voice
    DATA/prompts/ivr/<menu>/upload.wav         a menu's uploaded prompt
    DATA/prompts/ivr/<menu>/recorded.wav       a menu's prompt recorded by phone (*95<menu>)
    DATA/prompts/names/<ext>-<key>.wav         an extension's name for the dial-by-name directory

Every file is 8 kHz mono 16-bit WAV. Uploads (WAV, MP3, OGG, FLAC, M4A...) are converted by
ffmpeg from Debian with a wall-clock time-out and CPU, memory and output-size limits, reading only
local files in audio container formats, so a hostile upload costs at most those limits.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
from pathlib import Path

from firmware.features.ivr import LANGUAGES
from services.media.prompts import PROMPTS, SOUNDS_DIR, load_prompt, synthesize
from services.media.convert import ConversionError, Limits
from services.media.convert import convert as convert_upload
from services.media.wavfile import RATE, read_wav, write_wav

log = logging.getLogger(__name__)

UPLOAD_TYPES = ("wav", "mp3", "ogg", "oga", "flac", "m4a")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SECONDS = 300                 # a prompt longer than 5 minutes is a mistake
MIN_SECONDS = 0.2
# speech at about the level of the built-in prompts (-18 dBm0 active level is about -21 LUFS)
LIMITS = Limits("a spoken prompt", MAX_SECONDS, MIN_SECONDS, "loudnorm=I=-21:TP=-3:LRA=11")


def prompts_dir(data_dir) -> Path:
    return Path(data_dir) / "prompts"


def custom_dir(data_dir) -> Path:
    return prompts_dir(data_dir) / "custom"


def ivr_dir(data_dir, menu_number: str) -> Path:
    return prompts_dir(data_dir) / "ivr" / menu_number


def names_dir(data_dir) -> Path:
    return prompts_dir(data_dir) / "names"


def upload_error(filename: str, size: int) -> str | None:
    """Why an upload is refused before it is converted (None when it may be tried)."""
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if ext not in UPLOAD_TYPES:
        return (f"'{filename}' is not a sound file this box takes: upload "
                f"{', '.join(t.upper() for t in UPLOAD_TYPES if t != 'oga')}")
    if size > MAX_UPLOAD_BYTES:
        return f"'{filename}' is {size / 1048576:.1f} MB; the limit is {MAX_UPLOAD_BYTES // 1048576} MB"
    if size == 0:
        return f"'{filename}' is empty"
    return None


def convert(src, dst, *, label: str = "") -> float:
    """Convert an uploaded sound file to an 8 kHz mono 16-bit WAV prompt at dst (atomically);
    returns its length in seconds. ConversionError says why when it cannot."""
    label = label or Path(src).name
    problem = upload_error(label if "." in label else f"{label}.wav", Path(src).stat().st_size)
    if problem:
        raise ConversionError(problem)
    return convert_upload(src, dst, LIMITS, label=label)


# --- system prompts: one set per language; the administrator's replacement wins ---------------------
# The box's own set is British English (services/media/sounds/, made by `make prompts`); the other
# languages' sets are spoken on first use into DATA/prompts/<language>/ and kept.
DEFAULT_LANGUAGE = "en-GB"        # LANGUAGES: as IVR menus name them -> espeak-ng voice


def _check(prompt_id: str, language: str) -> None:
    if prompt_id not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt_id!r}: choose one of {sorted(PROMPTS)}")
    if language not in LANGUAGES:
        raise ValueError(f"unknown prompt language {language!r}: use {' or '.join(LANGUAGES)}")


def custom_path(data_dir, prompt_id: str, language: str = DEFAULT_LANGUAGE) -> Path:
    """Where the administrator's replacement of a prompt is kept (DATA/prompts/custom/[<language>/])."""
    _check(prompt_id, language)
    folder = custom_dir(data_dir) if language == DEFAULT_LANGUAGE else custom_dir(data_dir) / language
    return folder / f"{prompt_id}.wav"


def builtin_path(data_dir, prompt_id: str, language: str = DEFAULT_LANGUAGE) -> Path:
    """The box's own recording of a prompt in a language (it may not exist yet: ensure_builtin)."""
    _check(prompt_id, language)
    if language == DEFAULT_LANGUAGE:
        return SOUNDS_DIR / f"{prompt_id}.wav"
    key = hashlib.sha256(f"{LANGUAGES[language]}\n{PROMPTS[prompt_id]}".encode()).hexdigest()[:12]
    return prompts_dir(data_dir) / language / f"{prompt_id}-{key}.wav"


def ensure_builtin(data_dir, prompt_id: str, language: str = DEFAULT_LANGUAGE) -> Path:
    """The prompt's own recording in `language`, spoken now if it is missing or its words changed."""
    path = builtin_path(data_dir, prompt_id, language)
    if language == DEFAULT_LANGUAGE or path.is_file():
        return path
    pcm = synthesize(PROMPTS[prompt_id], voice=LANGUAGES[language])
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{prompt_id}-*.wav"):
        old.unlink(missing_ok=True)
    write_wav(path, pcm)
    log.info("prompt %s spoken in %s (%.1f s) to %s", prompt_id, language, len(pcm) / 2 / RATE, path)
    return path


def language_prompt(data_dir, prompt_id: str, language: str = DEFAULT_LANGUAGE) -> bytes:
    """What a call in `language` hears for a prompt: the replacement, else the box's own."""
    custom = custom_path(data_dir, prompt_id, language)
    if custom.is_file():
        try:
            return read_cached(custom)
        except (OSError, ValueError) as exc:
            log.warning("custom prompt %s unusable (%s): playing the box's own", custom, exc)
    if language == DEFAULT_LANGUAGE:
        return load_prompt(prompt_id)
    return read_cached(ensure_builtin(data_dir, prompt_id, language))


@functools.lru_cache(maxsize=64)
def _read(path: str, _mtime_ns: int, _size: int) -> bytes:
    return read_wav(path)


def read_cached(path) -> bytes:
    """A WAV's pcm16, read once and again only when the file changes."""
    st = os.stat(path)
    return _read(str(path), st.st_mtime_ns, st.st_size)


class PromptLoader:
    """What the call service plays for a prompt id: DATA/prompts/custom/<id>.wav when the
    administrator uploaded one (System prompts page), else the built-in prompt."""

    def __init__(self, data_dir, sounds_dir=None):
        self.data_dir = Path(data_dir)
        self.sounds_dir = sounds_dir

    def __call__(self, prompt_id: str) -> bytes:
        path = custom_dir(self.data_dir) / f"{prompt_id}.wav"
        if prompt_id in PROMPTS and path.is_file():
            try:
                return read_cached(path)
            except (OSError, ValueError) as exc:
                log.warning("custom prompt %s unusable (%s): playing the built-in one", path, exc)
        return load_prompt(prompt_id, self.sounds_dir)


# --- IVR menu prompts -------------------------------------------------------------------------------
def menu_tts_path(data_dir, menu) -> Path:
    return ivr_dir(data_dir, menu.number) / f"tts-{menu.tts_key()}.wav"


def menu_prompt_path(data_dir, menu) -> Path:
    """The file a menu's prompt is played from (it may not exist yet)."""
    if menu.prompt_kind == "tts":
        return menu_tts_path(data_dir, menu)
    return ivr_dir(data_dir, menu.number) / f"{menu.prompt_kind}.wav"


def generate_menu_tts(data_dir, menu) -> Path:
    """Speak the menu's text in its language voice into its tts file (kept until the words or the
    voice change; older tts files of the menu are removed). RuntimeError when espeak-ng fails."""
    path = menu_tts_path(data_dir, menu)
    if not path.is_file():
        pcm = synthesize(menu.prompt_text, voice=menu.voice)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_wav(path, pcm)
        log.info("IVR menu %s: prompt spoken in %s (%.1f s) to %s", menu.number, menu.language,
                 len(pcm) / 2 / RATE, path)
    for old in path.parent.glob("tts-*.wav"):
        if old != path:
            old.unlink(missing_ok=True)
    return path


def remove_menu_files(data_dir, menu_number: str) -> None:
    shutil.rmtree(ivr_dir(data_dir, menu_number), ignore_errors=True)


# --- names for the directory --------------------------------------------------------------------------
def name_tts_path(data_dir, number: str, name: str, voice: str = "en-gb") -> Path:
    key = hashlib.sha256(f"{voice}\n{name}".encode()).hexdigest()[:12]
    return names_dir(data_dir) / f"{number}-{key}.wav"


def voicemail_name_path(data_dir, number: str) -> Path:
    """The name the mailbox owner recorded (voicemail's greeting-name.wav), if any."""
    return Path(data_dir) / "voicemail" / number / "greeting-name.wav"


def spoken_name(data_dir, number: str, name: str, voice: str = "en-gb") -> bytes:
    """The extension's name as the directory says it: the recorded name when voicemail has one,
    else TTS of the configured name, made once and kept in DATA/prompts/names/."""
    recorded = voicemail_name_path(data_dir, number)
    if recorded.is_file():
        try:
            return read_cached(recorded)
        except (OSError, ValueError) as exc:
            log.warning("recorded name %s unusable (%s): speaking the name", recorded, exc)
    path = name_tts_path(data_dir, number, name, voice)
    if path.is_file():
        return read_cached(path)
    pcm = synthesize(name, voice=voice)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{number}-*.wav"):
        old.unlink(missing_ok=True)           # the name changed
    write_wav(path, pcm)
    return pcm
