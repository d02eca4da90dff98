"""What the suites share: ports and proxies, the programs they drive, test media made once per run,
publishers and receivers as real processes, the relay as a subprocess, polling, and the subprocess guard.

    net             free_port, wait_listening, tcp_proxy, self_signed_context
    binaries        FFMPEG (the relay's own), SYSTEM_FFMPEG, FFPROBE, GST_LAUNCH, SRT_LIVE_TRANSMIT
    media           Clip, MediaCache (the session's is the `media_cache` fixture), framemd5, video_frames
    publishers      Publisher, ReconnectingPublisher, ffmpeg_publish_argv, looped_publish_argv, pattern_publish_argv
    receivers       Receiver, listener_argv
    processes       run_process, Finished, background, reap, children_of, threads_named, pid_alive
    relay_process   RelayProcess, http, ADMIN_KEY, ROOT
    polling         wait_for (async), wait_until (blocking)
    guard           refuse_subprocesses: what keeps unmarked tests free of processes
    netns           namespace, Netns: peers behind a real veth link (tbf, link down/up); tests/network
    impair          tcp_impair, udp_impair: delay, loss, reordering, stalls, zero window, resets
    postgres        PostgresServer: a PostgreSQL of the test's own (fixtures postgres_server, postgres_dsn)
    balancers       HAProxy (TCP: RTMP, RTMPS) and nginx stream (UDP: SRT) in front of nodes; samples/cluster
    cluster         Cluster: PostgreSQL, N relay nodes and the balancers, kill/freeze/restart; tests/cluster
    rtmp_sink       RtmpSink: an RTMP destination that tells connections apart (two pushers at once?)

Fakes (a fake clock, a fake ffmpeg) live in tests/fakes.
"""

from tests.support.binaries import FFMPEG, FFPROBE, GST_LAUNCH, SRT_LIVE_TRANSMIT, SYSTEM_FFMPEG
from tests.support.media import (
    Clip,
    MediaCache,
    VideoFrame,
    encode,
    framemd5,
    is_contiguous_run,
    md5s,
    remux,
    stream_kinds,
    video_frames,
)
from tests.support.net import free_port, self_signed_context, tcp_proxy, wait_listening
from tests.support.polling import wait_for, wait_until
from tests.support.processes import Finished, background, children_of, pid_alive, reap, run_process, threads_named
from tests.support.publishers import (
    Publisher,
    ffmpeg_publish_argv,
    gst_publish_argv,
    pattern_publish_argv,
    pattern_publisher,
)
from tests.support.receivers import Receiver, listener_argv
from tests.support.relay_process import ADMIN_KEY, ROOT, HttpResult, RelayProcess, http

__all__ = [
    "ADMIN_KEY",
    "FFMPEG",
    "FFPROBE",
    "GST_LAUNCH",
    "ROOT",
    "SRT_LIVE_TRANSMIT",
    "SYSTEM_FFMPEG",
    "Clip",
    "Finished",
    "HttpResult",
    "MediaCache",
    "Publisher",
    "Receiver",
    "RelayProcess",
    "VideoFrame",
    "background",
    "children_of",
    "encode",
    "ffmpeg_publish_argv",
    "framemd5",
    "free_port",
    "gst_publish_argv",
    "http",
    "is_contiguous_run",
    "listener_argv",
    "md5s",
    "pattern_publish_argv",
    "pattern_publisher",
    "pid_alive",
    "reap",
    "remux",
    "run_process",
    "self_signed_context",
    "stream_kinds",
    "tcp_proxy",
    "threads_named",
    "video_frames",
    "wait_for",
    "wait_listening",
    "wait_until",
]
