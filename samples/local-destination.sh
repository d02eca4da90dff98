#!/usr/bin/env bash
# A local destination for trying the relay: an ffmpeg listener that records what the relay pushes.
#   samples/local-destination.sh rtmp [PORT]   -> add restream uri rtmp://127.0.0.1:PORT/live/test
#   samples/local-destination.sh srt  [PORT]   -> add restream uri srt://127.0.0.1:PORT?mode=caller
# Recordings land in samples/received/. Ctrl-C stops it. It listens on 127.0.0.1 only.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kind=${1:-rtmp}
mkdir -p "$here/received"
ffmpeg_bin=$(command -v ffmpeg || "$here/../.venv/bin/python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')
while true; do
  out="$here/received/$(date +%Y%m%d-%H%M%S)"
  case "$kind" in
    rtmp)
      port=${2:-1940}
      echo "waiting for the relay on rtmp://127.0.0.1:$port/live/test -> $out.flv"
      "$ffmpeg_bin" -hide_banner -loglevel warning -listen 1 -i "rtmp://127.0.0.1:$port/live/test" -c copy -f flv "$out.flv" || true ;;
    srt)
      port=${2:-9000}
      echo "waiting for the relay on srt://127.0.0.1:$port?mode=caller -> $out.ts"
      "$ffmpeg_bin" -hide_banner -loglevel warning -i "srt://127.0.0.1:$port?mode=listener" -c copy -f mpegts "$out.ts" || true ;;
    *) echo "usage: $0 rtmp|srt [port]" >&2; exit 2 ;;
  esac
  sleep 1
done
