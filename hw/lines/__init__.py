"""Analog line-interface board: serial control protocol, per-port ALSA audio, and its simulator."""
from hw.lines.audio import LineAudio, LineAudioError
from hw.lines.board import LineBoard, LineBoardError
from hw.lines.port import LinePort

__all__ = ["LineAudio", "LineAudioError", "LineBoard", "LineBoardError", "LinePort"]
