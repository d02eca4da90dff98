"""Pushes: the ffmpeg command, process, progress parsing and secret masking of one restream."""

from relay.push.command import CommandSettings, NoAudioMode, PushCommand, UnsupportedDestination, build_command
from relay.push.masking import mask_secrets, mask_uri, secrets_of
from relay.push.process import FfmpegProcess, PushExit
from relay.push.progress import ErrorKind, Progress, ProgressParser, classify_error

__all__ = [
    "CommandSettings",
    "ErrorKind",
    "FfmpegProcess",
    "NoAudioMode",
    "Progress",
    "ProgressParser",
    "PushCommand",
    "PushExit",
    "UnsupportedDestination",
    "build_command",
    "classify_error",
    "mask_secrets",
    "mask_uri",
    "secrets_of",
]
