"""libsrt (the reference SRT library) through ctypes: loading, prototypes, errors and statistics.

Only what the relay uses is bound, and every bound function has its `argtypes`/`restype` declared,
so a wrong call fails in Python instead of corrupting memory. Failures become `SrtError` carrying
libsrt's own message and code. libsrt's error state is thread-local, which is why each wrapper reads
it immediately after the failing call, in the same thread.

`srt_startup()`/`srt_cleanup()` are process-wide in libsrt; the only global state here is the
reference count that pairs them, guarded by a lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

# The C prototype of a listener callback (srt.h, `srt_listen_callback_fn`):
# int fn(void* opaq, SRTSOCKET ns, int hsversion, const struct sockaddr* peeraddr, const char* streamid)
ListenCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
)

SRT_INVALID_SOCK = -1
SRT_ERROR = -1
SRT_LIVE_MAX_PAYLOAD_BYTES = 1456
"""MTU 1500 - UDP/IP 28 - SRT header 16: the largest message a live-mode peer can send."""
SRT_STREAMID_MAX_BYTES = 512


class SockOpt(IntEnum):
    """The `SRT_SOCKOPT` values used here (srt.h, unchanged since 1.4)."""

    SNDSYN = 1
    RCVSYN = 2
    SNDBUF = 5
    RCVBUF = 6
    LINGER = 7
    UDP_SNDBUF = 8
    UDP_RCVBUF = 9
    SNDTIMEO = 13
    MAXBW = 16
    STATE = 17
    SENDER = 21
    TSBPDMODE = 22
    LATENCY = 23
    INPUTBW = 24
    OHEADBW = 25
    PASSPHRASE = 26
    PBKEYLEN = 27
    KMSTATE = 28
    IPTTL = 29
    IPTOS = 30
    TLPKTDROP = 31
    SNDDROPDELAY = 32
    NAKREPORT = 33
    CONNTIMEO = 36
    SNDKMSTATE = 40
    RCVKMSTATE = 41
    LOSSMAXTTL = 42
    RCVLATENCY = 43
    PEERLATENCY = 44
    MINVERSION = 45
    STREAMID = 46
    CONGESTION = 47
    MESSAGEAPI = 48
    PAYLOADSIZE = 49
    TRANSTYPE = 50
    KMREFRESHRATE = 51
    KMPREANNOUNCE = 52
    ENFORCEDENCRYPTION = 53
    PEERIDLETIMEO = 55


class TransType(IntEnum):
    """`SRT_TRANSTYPE`."""

    LIVE = 0
    FILE = 1


class SockStatus(IntEnum):
    """`SRT_SOCKSTATUS`, as returned by `srt_getsockstate`."""

    INIT = 1
    OPENED = 2
    LISTENING = 3
    CONNECTING = 4
    CONNECTED = 5
    BROKEN = 6
    CLOSING = 7
    CLOSED = 8
    NONEXIST = 9


class SrtErrno(IntEnum):
    """The `SRT_ERRNO` codes the relay reacts to (1000 * major + minor)."""

    SUCCESS = 0
    ECONNSETUP = 1000
    ENOSERVER = 1001
    ECONNREJ = 1002
    ESECFAIL = 1004
    ECONNFAIL = 2000
    ECONNLOST = 2001
    ENOCONN = 2002
    EINVPARAM = 5003
    EINVSOCK = 5004
    EPOLLEMPTY = 5014
    EASYNCFAIL = 6000
    EASYNCSND = 6001
    EASYNCRCV = 6002
    ETIMEOUT = 6003


class EpollFlag(IntEnum):
    """`SRT_EPOLL_OPT` event bits."""

    IN = 0x1
    OUT = 0x4
    ERR = 0x8


class RejectCode(IntEnum):
    """Rejection codes a listener callback may set (srt's access_control.h, HTTP-like, 1000 + status).

    Callers see the number (ffmpeg and srt-live-transmit print it); codes below 1000 are libsrt's own
    `SRT_REJECT_REASON` values such as BADSECRET (10) and UNSECURE (11).
    """

    FALLBACK = 1000
    BAD_REQUEST = 1400
    UNAUTHORIZED = 1401
    OVERLOAD = 1402
    FORBIDDEN = 1403
    NOTFOUND = 1404
    BAD_MODE = 1405
    CONFLICT = 1409
    ISE = 1500
    DOWN = 1503


class SrtUnavailable(RuntimeError):
    """libsrt cannot be loaded (not installed, or too old): SRT ingest is off, everything else runs."""


class SrtError(OSError):
    """A libsrt call failed; `code` is libsrt's SRT_ERRNO and the message is libsrt's own text."""

    def __init__(self, call: str, code: int, message: str, sys_errno: int = 0) -> None:
        super().__init__(f"{call}: {message} (srt error {code})")
        self.call = call
        self.code = code
        self.srt_message = message
        self.sys_errno = sys_errno


class SrtEpollEvent(ctypes.Structure):
    """`SRT_EPOLL_EVENT`: one ready socket and its event bits."""

    _fields_ = [("fd", ctypes.c_int32), ("events", ctypes.c_int)]


class EpollReady:
    """The arrays `srt_epoll_wait` fills (SRT sockets ready to read, with an error, system descriptors), reused
    across waits so that a wake-up allocates nothing."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.read_array = (ctypes.c_int32 * capacity)()
        self.write_array = (ctypes.c_int32 * capacity)()
        self.system_array = (ctypes.c_int * capacity)()
        self.read_count = ctypes.c_int(capacity)
        self.write_count = ctypes.c_int(capacity)
        self.system_count = ctypes.c_int(capacity)
        # made once: a busy worker waits hundreds of times a second
        self.read_count_ptr = ctypes.pointer(self.read_count)
        self.write_count_ptr = ctypes.pointer(self.write_count)
        self.system_count_ptr = ctypes.pointer(self.system_count)

    def reset(self) -> None:
        """Before a wait: each count is the room in its array (libsrt writes back how many it filled)."""
        self.read_count.value = self.write_count.value = self.system_count.value = self.capacity

    def clear(self) -> None:
        """Nothing ready (a timeout leaves the counts as they were)."""
        self.read_count.value = self.write_count.value = self.system_count.value = 0

    @property
    def read(self) -> list[int]:
        """SRT sockets readable, or with an error."""
        return list(self.read_array[: self.read_count.value])

    @property
    def write(self) -> set[int]:
        """SRT sockets listed as writable: for sockets watched for IN|ERR only, those with an error."""
        return set(self.write_array[: self.write_count.value])

    @property
    def system(self) -> list[int]:
        """System descriptors readable."""
        return list(self.system_array[: self.system_count.value])


_i64 = ctypes.c_int64
_u64 = ctypes.c_uint64
_int = ctypes.c_int
_dbl = ctypes.c_double


class TraceBStats(ctypes.Structure):
    """`SRT_TRACEBSTATS` (struct CBytePerfMon) exactly as in libsrt 1.5's srt.h.

    libsrt only ever appends fields, so this is a prefix of any later version's struct; `StatsBuffer`
    adds room after it so that a newer library writing a longer struct cannot overrun our memory.
    """

    _fields_ = [
        # global measurements
        ("msTimeStamp", _i64),
        ("pktSentTotal", _i64),
        ("pktRecvTotal", _i64),
        ("pktSndLossTotal", _int),
        ("pktRcvLossTotal", _int),
        ("pktRetransTotal", _int),
        ("pktSentACKTotal", _int),
        ("pktRecvACKTotal", _int),
        ("pktSentNAKTotal", _int),
        ("pktRecvNAKTotal", _int),
        ("usSndDurationTotal", _i64),
        ("pktSndDropTotal", _int),
        ("pktRcvDropTotal", _int),
        ("pktRcvUndecryptTotal", _int),
        ("byteSentTotal", _u64),
        ("byteRecvTotal", _u64),
        ("byteRcvLossTotal", _u64),
        ("byteRetransTotal", _u64),
        ("byteSndDropTotal", _u64),
        ("byteRcvDropTotal", _u64),
        ("byteRcvUndecryptTotal", _u64),
        # local measurements (since the last clear; we never clear, so cumulative)
        ("pktSent", _i64),
        ("pktRecv", _i64),
        ("pktSndLoss", _int),
        ("pktRcvLoss", _int),
        ("pktRetrans", _int),
        ("pktRcvRetrans", _int),
        ("pktSentACK", _int),
        ("pktRecvACK", _int),
        ("pktSentNAK", _int),
        ("pktRecvNAK", _int),
        ("mbpsSendRate", _dbl),
        ("mbpsRecvRate", _dbl),
        ("usSndDuration", _i64),
        ("pktReorderDistance", _int),
        ("pktRcvAvgBelatedTime", _dbl),
        ("pktRcvBelated", _i64),
        ("pktSndDrop", _int),
        ("pktRcvDrop", _int),
        ("pktRcvUndecrypt", _int),
        ("byteSent", _u64),
        ("byteRecv", _u64),
        ("byteRcvLoss", _u64),
        ("byteRetrans", _u64),
        ("byteSndDrop", _u64),
        ("byteRcvDrop", _u64),
        ("byteRcvUndecrypt", _u64),
        # instant measurements
        ("usPktSndPeriod", _dbl),
        ("pktFlowWindow", _int),
        ("pktCongestionWindow", _int),
        ("pktFlightSize", _int),
        ("msRTT", _dbl),
        ("mbpsBandwidth", _dbl),
        ("byteAvailSndBuf", _int),
        ("byteAvailRcvBuf", _int),
        ("mbpsMaxBW", _dbl),
        ("byteMSS", _int),
        ("pktSndBuf", _int),
        ("byteSndBuf", _int),
        ("msSndBuf", _int),
        ("msSndTsbPdDelay", _int),
        ("pktRcvBuf", _int),
        ("byteRcvBuf", _int),
        ("msRcvBuf", _int),
        ("msRcvTsbPdDelay", _int),
        ("pktSndFilterExtraTotal", _int),
        ("pktRcvFilterExtraTotal", _int),
        ("pktRcvFilterSupplyTotal", _int),
        ("pktRcvFilterLossTotal", _int),
        ("pktSndFilterExtra", _int),
        ("pktRcvFilterExtra", _int),
        ("pktRcvFilterSupply", _int),
        ("pktRcvFilterLoss", _int),
        ("pktReorderTolerance", _int),
        # new in 1.5.0
        ("pktSentUniqueTotal", _i64),
        ("pktRecvUniqueTotal", _i64),
        ("byteSentUniqueTotal", _u64),
        ("byteRecvUniqueTotal", _u64),
        ("pktSentUnique", _i64),
        ("pktRecvUnique", _i64),
        ("byteSentUnique", _u64),
        ("byteRecvUnique", _u64),
    ]


class StatsBuffer(ctypes.Structure):
    """`TraceBStats` followed by spare room for fields a newer libsrt may append."""

    _fields_ = [("stats", TraceBStats), ("_spare", ctypes.c_ubyte * 1024)]


@dataclass(frozen=True, slots=True)
class LinkStats:
    """Receiver-side health of one SRT connection, as the API shows it."""

    uptime_ms: int
    """Time since the connection started (libsrt's msTimeStamp)."""
    rtt_ms: float
    bandwidth_mbps: float
    """libsrt's estimate of the link capacity."""
    recv_rate_mbps: float
    pkt_received_total: int
    pkt_recv_unique_total: int
    """Data packets handed to the application (received minus duplicates and drops)."""
    pkt_recv_loss_total: int
    """Packets detected missing (later recovered or not)."""
    pkt_recv_drop_total: int
    """Packets given up on: lost for good, they left a hole in the stream."""
    pkt_recv_retrans_total: int
    """Retransmitted packets received."""
    pkt_recv_undecrypt_total: int
    bytes_received_total: int
    bytes_recv_unique_total: int
    latency_ms: int
    """Negotiated receiver latency (TSBPD delay)."""
    recv_buffer_ms: int
    """Media held in the receive buffer, in milliseconds."""

    @classmethod
    def from_struct(cls, s: TraceBStats) -> LinkStats:
        """Pick the receiver-side fields of a filled `TraceBStats`."""
        return cls(
            uptime_ms=int(s.msTimeStamp),
            rtt_ms=float(s.msRTT),
            bandwidth_mbps=float(s.mbpsBandwidth),
            recv_rate_mbps=float(s.mbpsRecvRate),
            pkt_received_total=int(s.pktRecvTotal),
            pkt_recv_unique_total=int(s.pktRecvUniqueTotal),
            pkt_recv_loss_total=int(s.pktRcvLossTotal),
            pkt_recv_drop_total=int(s.pktRcvDropTotal),
            pkt_recv_retrans_total=int(s.pktRcvRetrans),
            pkt_recv_undecrypt_total=int(s.pktRcvUndecryptTotal),
            bytes_received_total=int(s.byteRecvTotal),
            bytes_recv_unique_total=int(s.byteRecvUniqueTotal),
            latency_ms=int(s.msRcvTsbPdDelay),
            recv_buffer_ms=int(s.msRcvBuf),
        )


# --- library loading and startup refcount -------------------------------------------------------

_LIBRARY_NAMES = ("srt", "srt-gnutls", "srt-openssl")
_SONAMES = ("libsrt.so.1.5", "libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1")
_MIN_VERSION = 0x010500  # the statistics layout above and srt_bistats need 1.5

# srt_startup()/srt_cleanup() are process-wide: pair them with a count shared by every LibSrt.
_startup_lock = threading.Lock()
_startup_count = 0


def _candidates() -> list[str]:
    names: list[str] = []
    for short in _LIBRARY_NAMES:
        found = ctypes.util.find_library(short)
        if found and found not in names:
            names.append(found)
    names.extend(n for n in _SONAMES if n not in names)
    return names


_PROTOTYPES: dict[str, tuple[Any, list[Any]]] = {
    "srt_startup": (_int, []),
    "srt_cleanup": (_int, []),
    "srt_getversion": (ctypes.c_uint32, []),
    "srt_create_socket": (ctypes.c_int32, []),
    "srt_bind": (_int, [ctypes.c_int32, ctypes.c_void_p, _int]),
    "srt_bind_acquire": (_int, [ctypes.c_int32, _int]),
    "srt_listen": (_int, [ctypes.c_int32, _int]),
    "srt_accept": (ctypes.c_int32, [ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(_int)]),
    "srt_connect": (_int, [ctypes.c_int32, ctypes.c_void_p, _int]),
    "srt_sendmsg": (_int, [ctypes.c_int32, ctypes.c_void_p, _int, _int, _int]),
    "srt_listen_callback": (_int, [ctypes.c_int32, ListenCallback, ctypes.c_void_p]),
    "srt_close": (_int, [ctypes.c_int32]),
    "srt_getsockname": (_int, [ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(_int)]),
    "srt_getpeername": (_int, [ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(_int)]),
    "srt_setsockflag": (_int, [ctypes.c_int32, _int, ctypes.c_void_p, _int]),
    "srt_getsockflag": (_int, [ctypes.c_int32, _int, ctypes.c_void_p, ctypes.POINTER(_int)]),
    "srt_getsockstate": (_int, [ctypes.c_int32]),
    "srt_recvmsg": (_int, [ctypes.c_int32, ctypes.c_void_p, _int]),
    "srt_getlasterror": (_int, [ctypes.POINTER(_int)]),
    "srt_getlasterror_str": (ctypes.c_char_p, []),
    "srt_clearlasterror": (None, []),
    "srt_bistats": (_int, [ctypes.c_int32, ctypes.POINTER(StatsBuffer), _int, _int]),
    "srt_epoll_create": (_int, []),
    "srt_epoll_add_usock": (_int, [_int, ctypes.c_int32, ctypes.POINTER(_int)]),
    "srt_epoll_remove_usock": (_int, [_int, ctypes.c_int32]),
    "srt_epoll_uwait": (_int, [_int, ctypes.POINTER(SrtEpollEvent), _int, ctypes.c_int64]),
    "srt_epoll_add_ssock": (_int, [_int, _int, ctypes.POINTER(_int)]),
    "srt_epoll_remove_ssock": (_int, [_int, _int]),
    "srt_epoll_wait": (
        _int,
        [
            _int,
            ctypes.POINTER(ctypes.c_int32),
            ctypes.POINTER(_int),
            ctypes.POINTER(ctypes.c_int32),
            ctypes.POINTER(_int),
            ctypes.c_int64,
            ctypes.POINTER(_int),
            ctypes.POINTER(_int),
            ctypes.POINTER(_int),
            ctypes.POINTER(_int),
        ],
    ),
    "srt_epoll_set": (ctypes.c_int32, [_int, ctypes.c_int32]),
    "srt_epoll_release": (_int, [_int]),
    "srt_setrejectreason": (_int, [ctypes.c_int32, _int]),
    "srt_getrejectreason": (_int, [ctypes.c_int32]),
    "srt_rejectreason_str": (ctypes.c_char_p, [_int]),
}

_SRT_EPOLL_ENABLE_EMPTY = 1


def version_string(version: int) -> str:
    """`0x010501` -> `"1.5.1"`."""
    return f"{(version >> 16) & 0xFF}.{(version >> 8) & 0xFF}.{version & 0xFF}"


def sockaddr_bytes(host: str, port: int) -> bytes:
    """A `struct sockaddr_in` or `sockaddr_in6` (Linux layout) for a literal IP address."""
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
    except OSError:
        packed6 = socket.inet_pton(socket.AF_INET6, host)  # raises OSError for a non-literal
        return struct.pack("=H", socket.AF_INET6) + struct.pack(">HI16sI", port, 0, packed6, 0)
    return struct.pack("=H", socket.AF_INET) + struct.pack(">H4s8x", port, packed)


def parse_sockaddr(raw: bytes) -> tuple[str, int] | None:
    """`(host, port)` from a `struct sockaddr_in`/`sockaddr_in6`, or None for anything else."""
    if len(raw) < 2:
        return None
    (family,) = struct.unpack_from("=H", raw)
    if family == socket.AF_INET and len(raw) >= 8:
        port, addr = struct.unpack_from(">H4s", raw, 2)
        return socket.inet_ntop(socket.AF_INET, addr), int(port)
    if family == socket.AF_INET6 and len(raw) >= 24:
        port, _flow, addr = struct.unpack_from(">HI16s", raw, 2)
        return socket.inet_ntop(socket.AF_INET6, addr), int(port)
    return None


def format_peer(addr: tuple[str, int] | None) -> str:
    """`host:port` (IPv6 in brackets) for logs; `?` when unknown."""
    if addr is None:
        return "?"
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


_SOCKADDR_STORAGE_BYTES = 128


class LibSrt:
    """A loaded libsrt with typed wrappers for the calls the relay makes.

    `startup()` / `cleanup()` must bracket any use; they are reference counted process-wide. All
    wrappers may be called from any thread (libsrt is thread-safe; its error state is per thread).
    """

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self._lib = cdll
        self.path = path
        self.version = int(cdll.srt_getversion())
        self._started = False

    def another(self) -> LibSrt:
        """A new handle on the same loaded library, with its own `startup`/`cleanup` pairing."""
        return LibSrt(self._lib, self.path)

    @classmethod
    def load(cls, names: list[str] | None = None) -> LibSrt:
        """Find and load libsrt; raise `SrtUnavailable` saying what was tried and why it failed."""
        tried: list[str] = []
        for name in names if names is not None else _candidates():
            try:
                cdll = ctypes.CDLL(name)
            except OSError as exc:
                tried.append(f"{name} ({exc})")
                continue
            missing = [fn for fn in _PROTOTYPES if not hasattr(cdll, fn)]
            if missing:
                tried.append(f"{name} (missing {', '.join(missing)})")
                continue
            for fn, (restype, argtypes) in _PROTOTYPES.items():
                func = getattr(cdll, fn)
                func.restype = restype
                func.argtypes = argtypes
            lib = cls(cdll, name)
            if lib.version < _MIN_VERSION:
                tried.append(f"{name} (version {version_string(lib.version)} < 1.5.0)")
                continue
            return lib
        raise SrtUnavailable("libsrt not found: tried " + "; ".join(tried or ["nothing"]))

    # --- lifecycle ------------------------------------------------------------------------------

    def startup(self) -> None:
        """`srt_startup()` for the first user in the process; idempotent per instance."""
        global _startup_count
        if self._started:
            return
        with _startup_lock:
            if _startup_count == 0 and self._lib.srt_startup() < 0:
                self._raise("srt_startup")
            _startup_count += 1
        self._started = True

    def cleanup(self) -> None:
        """`srt_cleanup()` when the last user in the process is done; idempotent per instance."""
        global _startup_count
        if not self._started:
            return
        self._started = False
        with _startup_lock:
            _startup_count -= 1
            if _startup_count == 0:
                self._lib.srt_cleanup()

    # --- errors ---------------------------------------------------------------------------------

    def last_error(self) -> tuple[int, str, int]:
        """libsrt's (code, message, system errno) for the last failure in this thread."""
        sys_errno = _int(0)
        code = int(self._lib.srt_getlasterror(ctypes.byref(sys_errno)))
        raw = self._lib.srt_getlasterror_str()
        message = raw.decode("utf-8", "replace") if raw else "unknown error"
        return code, message, int(sys_errno.value)

    def _raise(self, call: str) -> None:
        code, message, sys_errno = self.last_error()
        self._lib.srt_clearlasterror()
        raise SrtError(call, code, message, sys_errno)

    def _check(self, call: str, result: int) -> int:
        if result == SRT_ERROR:
            self._raise(call)
        return result

    def reject_reason_text(self, code: int) -> str:
        """libsrt's text for a rejection code (its own reasons; "Application-defined..." otherwise)."""
        raw = self._lib.srt_rejectreason_str(code)
        return raw.decode("utf-8", "replace") if raw else str(code)

    # --- sockets --------------------------------------------------------------------------------

    def create_socket(self) -> int:
        """A new SRT socket id."""
        sock = int(self._lib.srt_create_socket())
        if sock == SRT_INVALID_SOCK:
            self._raise("srt_create_socket")
        return sock

    def close(self, sock: int) -> None:
        """`srt_close`; errors (already closed) are ignored because closing is best effort."""
        if self._lib.srt_close(sock) == SRT_ERROR:
            self._lib.srt_clearlasterror()

    def set_int(self, sock: int, opt: SockOpt, value: int) -> None:
        """Set an int-valued option (bool options are ints too)."""
        val = _int(value)
        self._check(
            f"srt_setsockflag({opt.name})",
            self._lib.srt_setsockflag(sock, int(opt), ctypes.byref(val), ctypes.sizeof(val)),
        )

    def set_str(self, sock: int, opt: SockOpt, value: str) -> None:
        """Set a string option (the message never contains the value: it may be a passphrase)."""
        raw = value.encode("utf-8")
        buf = ctypes.create_string_buffer(raw, len(raw))
        self._check(f"srt_setsockflag({opt.name})", self._lib.srt_setsockflag(sock, int(opt), buf, len(raw)))

    def set_i64(self, sock: int, opt: SockOpt, value: int) -> None:
        """Set an int64-valued option (SRTO_MAXBW, SRTO_INPUTBW)."""
        val = _i64(value)
        self._check(
            f"srt_setsockflag({opt.name})",
            self._lib.srt_setsockflag(sock, int(opt), ctypes.byref(val), ctypes.sizeof(val)),
        )

    def set_linger(self, sock: int, seconds: int) -> None:
        """SRTO_LINGER (a `struct linger`): how long `srt_close` of a blocking socket waits for unacknowledged data."""
        val = (_int * 2)(1 if seconds > 0 else 0, seconds)
        self._check(
            "srt_setsockflag(LINGER)", self._lib.srt_setsockflag(sock, int(SockOpt.LINGER), val, ctypes.sizeof(val))
        )

    def get_int(self, sock: int, opt: SockOpt) -> int:
        """Read an int-valued option."""
        val = _int(0)
        size = _int(ctypes.sizeof(val))
        self._check(
            f"srt_getsockflag({opt.name})",
            self._lib.srt_getsockflag(sock, int(opt), ctypes.byref(val), ctypes.byref(size)),
        )
        return int(val.value)

    def get_str(self, sock: int, opt: SockOpt, max_bytes: int = SRT_STREAMID_MAX_BYTES) -> str:
        """Read a string option such as SRTO_STREAMID."""
        buf = ctypes.create_string_buffer(max_bytes + 1)
        size = _int(max_bytes)
        self._check(
            f"srt_getsockflag({opt.name})",
            self._lib.srt_getsockflag(sock, int(opt), buf, ctypes.byref(size)),
        )
        return buf.raw[: max(0, min(size.value, max_bytes))].decode("utf-8", "replace")

    def state(self, sock: int) -> int:
        """`srt_getsockstate` (a `SockStatus` value)."""
        return int(self._lib.srt_getsockstate(sock))

    def bind(self, sock: int, host: str, port: int) -> None:
        """Bind to a literal IP address and port (0 = any free port)."""
        addr = sockaddr_bytes(host, port)
        buf = ctypes.create_string_buffer(addr, len(addr))
        self._check("srt_bind", self._lib.srt_bind(sock, buf, len(addr)))

    def bind_acquire(self, sock: int, udp_fd: int) -> None:
        """Bind to a UDP socket of ours, already bound (`srt_bind_acquire`): libsrt owns `udp_fd` from then
        on and closes it when the socket's multiplexer goes."""
        self._check("srt_bind_acquire", self._lib.srt_bind_acquire(sock, udp_fd))

    def sockname(self, sock: int) -> tuple[str, int] | None:
        """The local address of a bound socket."""
        buf = ctypes.create_string_buffer(_SOCKADDR_STORAGE_BYTES)
        size = _int(_SOCKADDR_STORAGE_BYTES)
        self._check("srt_getsockname", self._lib.srt_getsockname(sock, buf, ctypes.byref(size)))
        return parse_sockaddr(buf.raw[: size.value])

    def listen(self, sock: int, backlog: int) -> None:
        """`srt_listen`."""
        self._check("srt_listen", self._lib.srt_listen(sock, backlog))

    def set_listen_callback(self, sock: int, callback: Any) -> None:
        """Install a `ListenCallback` object; the caller must keep it alive while the socket is open."""
        self._check("srt_listen_callback", self._lib.srt_listen_callback(sock, callback, None))

    def set_reject_reason(self, sock: int, code: int) -> None:
        """`srt_setrejectreason`, best effort (it is only called while already rejecting)."""
        if self._lib.srt_setrejectreason(sock, code) == SRT_ERROR:
            self._lib.srt_clearlasterror()

    def connect(self, sock: int, host: str, port: int) -> None:
        """Blocking caller-mode connect (SRTO_CONNTIMEO bounds it); `SrtError` if refused."""
        addr = sockaddr_bytes(host, port)
        buf = ctypes.create_string_buffer(addr, len(addr))
        self._check("srt_connect", self._lib.srt_connect(sock, buf, len(addr)))

    def reject_reason(self, sock: int) -> int:
        """Why a connect failed: a libsrt SRT_REJ_* value (< 1000) or the listener's code (>= 1000)."""
        return int(self._lib.srt_getrejectreason(sock))

    def send(self, sock: int, data: bytes) -> int:
        """Send one message (live mode: at most the payload size); returns the bytes sent."""
        return self._check("srt_sendmsg", self._lib.srt_sendmsg(sock, data, len(data), -1, 0))

    def accept(self, sock: int) -> tuple[int, tuple[str, int] | None] | None:
        """Accept one pending connection on a non-blocking listener; None when there is none."""
        buf = ctypes.create_string_buffer(_SOCKADDR_STORAGE_BYTES)
        size = _int(_SOCKADDR_STORAGE_BYTES)
        new = int(self._lib.srt_accept(sock, buf, ctypes.byref(size)))
        if new == SRT_INVALID_SOCK:
            code, message, sys_errno = self.last_error()
            self._lib.srt_clearlasterror()
            if code == SrtErrno.EASYNCRCV:
                return None
            raise SrtError("srt_accept", code, message, sys_errno)
        return new, parse_sockaddr(buf.raw[: size.value])

    def recv(self, sock: int, buf: ctypes.Array[ctypes.c_char]) -> int | None:
        """One message into `buf` from a non-blocking socket: its size, or None if nothing is ready.

        Raises `SrtError` when the connection is broken or closed.
        """
        n = int(self._lib.srt_recvmsg(sock, buf, len(buf)))
        if n == SRT_ERROR:
            code, message, sys_errno = self.last_error()
            self._lib.srt_clearlasterror()
            if code == SrtErrno.EASYNCRCV:
                return None
            raise SrtError("srt_recvmsg", code, message, sys_errno)
        return n

    def bistats(self, sock: int) -> LinkStats:
        """Link statistics without clearing them (instantaneous buffer sizes)."""
        return LinkStats.from_struct(self.raw_stats(sock))

    def raw_stats(self, sock: int) -> TraceBStats:
        """libsrt's whole statistics struct, not cleared, buffer sizes instantaneous (`srt_bistats`)."""
        out = StatsBuffer()
        self._check("srt_bistats", self._lib.srt_bistats(sock, ctypes.byref(out), 0, 1))
        stats: TraceBStats = out.stats
        return stats

    # --- epoll ----------------------------------------------------------------------------------

    def epoll_create(self) -> int:
        """A new epoll id that may be waited on while empty (sockets come and go)."""
        eid = self._check("srt_epoll_create", int(self._lib.srt_epoll_create()))
        self._lib.srt_epoll_set(eid, _SRT_EPOLL_ENABLE_EMPTY)
        return eid

    def epoll_add(self, eid: int, sock: int, events: int) -> None:
        """Watch `sock` for `events` (EpollFlag bits)."""
        ev = _int(events)
        self._check("srt_epoll_add_usock", self._lib.srt_epoll_add_usock(eid, sock, ctypes.byref(ev)))

    def epoll_remove(self, eid: int, sock: int) -> None:
        """Stop watching `sock`; errors (socket already gone) are ignored."""
        if self._lib.srt_epoll_remove_usock(eid, sock) == SRT_ERROR:
            self._lib.srt_clearlasterror()

    def epoll_wait(self, eid: int, events: ctypes.Array[SrtEpollEvent], timeout_ms: int) -> int:
        """`srt_epoll_uwait`: the number of ready entries written to `events` (0 on timeout)."""
        n = int(self._lib.srt_epoll_uwait(eid, events, len(events), timeout_ms))
        if n == SRT_ERROR:
            code, message, sys_errno = self.last_error()
            self._lib.srt_clearlasterror()
            if code == SrtErrno.ETIMEOUT:
                return 0
            raise SrtError("srt_epoll_uwait", code, message, sys_errno)
        return n

    def epoll_add_system(self, eid: int, fd: int) -> None:
        """Watch a system file descriptor (a socket, an eventfd) for reading: `epoll_wait_with_system` reports it."""
        ev = _int(EpollFlag.IN)
        self._check("srt_epoll_add_ssock", self._lib.srt_epoll_add_ssock(eid, fd, ctypes.byref(ev)))

    def epoll_remove_system(self, eid: int, fd: int) -> None:
        """Stop watching a system file descriptor; errors are ignored."""
        if self._lib.srt_epoll_remove_ssock(eid, fd) == SRT_ERROR:
            self._lib.srt_clearlasterror()

    def epoll_wait_with_system(self, eid: int, ready: EpollReady, timeout_ms: int) -> bool:
        """`srt_epoll_wait`: fill `ready` with what is ready; False on timeout. `timeout_ms` < 0: no timeout.

        Unlike `srt_epoll_uwait` (which refuses an epoll holding a system descriptor), this reports system
        descriptors too. It tells no event bits: a socket watched for IN|ERR that has an error is listed in
        both `read` and `write`, so `write` is where broken connections show.
        """
        ready.reset()
        n = int(
            self._lib.srt_epoll_wait(
                eid,
                ready.read_array,
                ready.read_count_ptr,
                ready.write_array,
                ready.write_count_ptr,
                timeout_ms,
                ready.system_array,
                ready.system_count_ptr,
                None,
                None,
            )
        )
        if n == SRT_ERROR:
            code, message, sys_errno = self.last_error()
            self._lib.srt_clearlasterror()
            if code == SrtErrno.ETIMEOUT:
                ready.clear()
                return False
            raise SrtError("srt_epoll_wait", code, message, sys_errno)
        return True

    def epoll_release(self, eid: int) -> None:
        """Free an epoll id; errors are ignored (closing is best effort)."""
        if self._lib.srt_epoll_release(eid) == SRT_ERROR:
            self._lib.srt_clearlasterror()


def make_listen_callback(fn: Callable[[int, int, int, int | None, bytes | None], int]) -> Any:
    """Wrap `fn(opaque, ns, hsversion, peeraddr_ptr, streamid)` as a C listener callback object.

    The wrapper itself never lets an exception reach C: ctypes would only print it and return 0,
    which would ACCEPT the connection. Any error becomes -1 (reject).
    """

    def trampoline(opaque: int | None, ns: int, hsversion: int, peer: int | None, sid: bytes | None) -> int:
        try:
            return int(fn(opaque or 0, ns, hsversion, peer, sid))
        except BaseException:  # nothing may propagate into libsrt's thread
            return -1

    return ListenCallback(trampoline)


def read_sockaddr_at(address: int | None) -> tuple[str, int] | None:
    """Decode the `const struct sockaddr*` a listener callback receives."""
    if not address:
        return None
    family = ctypes.c_uint16.from_address(address).value
    size = 28 if family == socket.AF_INET6 else 16
    return parse_sockaddr(ctypes.string_at(address, size))
