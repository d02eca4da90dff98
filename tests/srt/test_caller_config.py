"""The relay's SRT caller reads a destination URI as ffmpeg's libsrt protocol does (relay/srt/caller.py),
and tells a dead destination from the statistics libsrt gives (no socket here: libsrt's structs only)."""

from __future__ import annotations

from relay.destinations import parse_destination
from relay.srt.caller import CallerConfig, _Watchdog
from relay.srt.libsrt import SockOpt, TraceBStats


def config(uri: str, **kw: object) -> CallerConfig:
    return CallerConfig.from_destination(parse_destination(uri), **kw)  # type: ignore[arg-type]


def test_options_take_ffmpeg_units_and_reach_their_socket_options() -> None:
    cfg = config(
        "srt://dest.example:9000?mode=caller&latency=250000&peerlatency=300000&snddropdelay=-1"
        "&send_buffer_size=1048576&maxbw=-1&oheadbw=25&tlpktdrop=0&pbkeylen=32&connect_timeout=1500"
    )
    ints = dict(cfg.int_options)
    assert ints[SockOpt.LATENCY] == 250 and ints[SockOpt.PEERLATENCY] == 300  # microseconds -> ms
    assert ints[SockOpt.SNDDROPDELAY] == -1  # "never drop" stays as it is
    assert ints[SockOpt.UDP_SNDBUF] == 1048576 and ints[SockOpt.OHEADBW] == 25
    assert ints[SockOpt.TLPKTDROP] == 0 and ints[SockOpt.PBKEYLEN] == 32
    assert dict(cfg.i64_options) == {SockOpt.MAXBW: -1}  # int64 in libsrt
    assert cfg.connect_timeout_ms == 1500 and SockOpt.CONNTIMEO not in ints
    assert (cfg.host, cfg.port) == ("dest.example", 9000)


def test_text_options_are_decoded_as_ffmpeg_decodes_them() -> None:
    cfg = config("srt://10.0.0.1:9000?streamid=live%2Fa%23tok&passphrase=my%20secret%20phrase")
    assert dict(cfg.text_options) == {SockOpt.STREAMID: "live/a#tok", SockOpt.PASSPHRASE: "my secret phrase"}


def test_messages_are_whole_ts_packets_of_the_payload_size() -> None:
    assert config("srt://h:1?mode=caller").chunk_bytes == 1316  # seven TS packets, the live default
    assert config("srt://h:1?payload_size=1456").chunk_bytes == 1316  # 7 x 188 fit, 8 do not
    assert config("srt://h:1?pkt_size=188").chunk_bytes == 188


def test_the_checked_address_and_the_relay_settings_win() -> None:
    cfg = config("srt://dest.example:9000?linger=5&timeout=2000000", host="192.0.2.7", peer_idle_timeout_ms=700)
    assert cfg.host == "192.0.2.7" and cfg.peer_idle_timeout_ms == 700
    assert cfg.linger_seconds == 5 and cfg.send_timeout_ms == 2000  # the URI's own, as for ffmpeg


def stats(acks: int, in_flight: int, naks: int = 0) -> TraceBStats:
    raw = TraceBStats()
    raw.pktRecvACKTotal, raw.pktRecvNAKTotal, raw.pktSndBuf = acks, naks, in_flight
    return raw


def judged_dead(watch: _Watchdog, raw: TraceBStats, now: float) -> bool:
    """The watchdog's verdict with what the send buffer holds as the packets in flight."""
    return watch.dead(raw, now, in_flight=raw.pktSndBuf > 0)


def test_a_destination_that_stops_acknowledging_is_dead_after_the_timeout() -> None:
    watch = _Watchdog(1.0)
    assert not judged_dead(watch, stats(10, 5), 0.0)
    assert not judged_dead(watch, stats(10, 5), 0.1)  # silence starts
    assert not judged_dead(watch, stats(10, 9), 1.0)
    assert judged_dead(watch, stats(10, 12), 1.1)


def test_acknowledgements_or_loss_reports_keep_it_alive() -> None:
    watch = _Watchdog(1.0)
    for step in range(30):
        assert not judged_dead(watch, stats(10 + step // 2, 5, naks=step % 2), step * 0.1)


def test_nothing_in_flight_is_never_judged() -> None:
    """The publisher is away: no media, only a keepalive a second from the destination."""
    watch = _Watchdog(1.0)
    for step in range(50):
        assert not judged_dead(watch, stats(10, 0), step * 0.1)
    assert not judged_dead(watch, stats(10, 3), 5.0)  # media again: the silence counts from now
    assert not judged_dead(watch, stats(10, 3), 5.9)
    assert judged_dead(watch, stats(10, 3), 6.1)


def test_a_send_just_made_is_in_flight_though_the_buffer_reads_empty() -> None:
    """libsrt's send buffer can read 0 right after a send (the caller then says the packets are in flight): a
    destination gone while the last packets went out is still judged."""
    watch = _Watchdog(1.0)
    assert not watch.dead(stats(10, 0), 0.0, in_flight=True)
    assert not watch.dead(stats(10, 0), 0.1, in_flight=True)  # silence starts
    assert watch.dead(stats(10, 1), 1.1, in_flight=True)
