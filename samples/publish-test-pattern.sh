#!/usr/bin/env bash
# Publish a generated test pattern (colour bars with a clock + a 440 Hz tone) to an RTMP/RTMPS URL
# in real time, as an encoder would.
#
#   samples/publish-test-pattern.sh rtmp://127.0.0.1:1935/live <stream_id>?<token> [seconds]
#   samples/publish-test-pattern.sh rtmp://127.0.0.1:1935/live/<stream_id>?<token>
#
# Uses ffmpeg from PATH, else the one shipped with the venv's imageio-ffmpeg.  RTMPS certificates are
# not verified (handy with the relay's self-signed certificate).  The stream key is never printed.
set -euo pipefail

if [[ $# -lt 1 ]]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
url="$1"
key="${2:-}"
seconds="${3:-0}"
if [[ -n "$key" ]]; then
    url="${url%/}/${key}"
fi

here="$(cd "$(dirname "$0")" && pwd)"
ffmpeg_bin="$(command -v ffmpeg || true)"
if [[ -z "$ffmpeg_bin" ]]; then
    python="${here}/../.venv/bin/python"
    [[ -x "$python" ]] || python="$(command -v python3)"
    ffmpeg_bin="$("$python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')"
fi

duration=()
if [[ "$seconds" != "0" ]]; then
    duration=(-t "$seconds")
fi
tls=()
if [[ "$url" == rtmps://* ]]; then
    tls=(-tls_verify 0)
fi

echo "publishing test pattern to ${url%/*}/... with ${ffmpeg_bin} (Ctrl-C to stop)" >&2
exec "$ffmpeg_bin" -hide_banner -loglevel warning -nostdin -re \
    -f lavfi -i "testsrc2=size=1280x720:rate=30" \
    -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    "${duration[@]}" \
    -c:v libx264 -preset veryfast -tune zerolatency -b:v 2500k -maxrate 2500k -bufsize 5000k \
    -g 60 -keyint_min 60 -pix_fmt yuv420p \
    -c:a aac -b:a 128k -ar 48000 \
    -f flv "${tls[@]}" "$url"
