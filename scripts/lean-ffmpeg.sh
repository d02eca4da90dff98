#!/usr/bin/env bash
# `make lean-ffmpeg`: an ffmpeg with only what a push can ask for (relay/push/command.py), for RELAY_PUSH_FFMPEG.
# Half the memory of a push (bench/relay_bench.py, RTMP N=16: 10.7 -> 5.0 MB PSS per push, the whole tree
# 14.1 -> 8.3-8.5 MB per destination): the full build's 4 MB of relocated codec tables are not there. With
# scripts/ffmpeg-patches (an RTMP message in one write, not one per chunk: 1/5 of the sends), 15-20 % less
# CPU per destination at N=16; and the FLV demuxer's 2 MiB resync buffer only when a resync needs it:
# 5.5 -> 3.4 MB PSS per push. The same bytes at the destinations (bit-identical video in the bench,
# tests/push, tests/supervisor and tests/e2e through it: `make test-lean-ffmpeg`). Pulls keep the full build.
#
# Debian's orig tarball of ffmpeg $LEAN_FFMPEG_VERSION (7.1.3, the default, or 5.1.8; sha256 as in Debian's
# .dsc), built under $LEAN_FFMPEG_DIR (build/lean-ffmpeg) and installed to
# $LEAN_FFMPEG_DIR/<version>/bin/ffmpeg, whose path it prints. 5.1.8 (bookworm's) reads and muxes in one
# thread where 7.1 hands each packet between threads, but measured only 11-21 % less CPU per push (the whole
# tree per destination: 13 % at N=16, nothing at N=4) and has no enhanced FLV: no HEVC, AV1 or VP9 to an
# RTMP destination (docs/benchmarks.md). Same configure flags; scripts/ffmpeg-patches/5.1.8 adds one.
# Build dependencies: build-essential pkg-config nasm libssl-dev libsrt-openssl-dev (scripts/system-deps.sh lean).
# 2-4 minutes on 2 cores (2:18 idle); run again, it only checks. With FULL_FFMPEG=<a full ffmpeg> it also writes
# bin/ffmpeg-pushes-only, which runs pushes (`-i pipe:0`) on the lean build and anything else on FULL_FFMPEG:
# the test suite's one ffmpeg (IMAGEIO_FFMPEG_EXE) in `make test-lean-ffmpeg`.
set -euo pipefail

# Each release with its tarball's sha256 from Debian's .dsc.
version=${LEAN_FFMPEG_VERSION:-7.1.3}
case "$version" in
7.1.3) # Debian trixie, ffmpeg_7.1.3-0+deb13u1.dsc
    sha256=f0bf043299db9e3caacb435a712fc541fbb07df613c4b893e8b77e67baf3adbe ;;
5.1.8) # Debian bookworm, ffmpeg_5.1.8-0+deb12u1.dsc
    sha256=56d4daf10c17330a45c8fe11bc260997677ca2432d3d5951dbeb5515c26028cb ;;
*)
    echo "lean-ffmpeg: no sha256 for ffmpeg $version (known: 7.1.3, 5.1.8)" >&2
    exit 2 ;;
esac
here=$(dirname "$(realpath "$0")")
root=$(realpath -m "${LEAN_FFMPEG_DIR:-build/lean-ffmpeg}")
tarball=$root/ffmpeg_$version.orig.tar.xz
src=$root/src/ffmpeg-$version
obj=$root/obj/$version
prefix=$root/$version
mkdir -p "$root/src" "$obj"

if ! echo "$sha256  $tarball" | sha256sum -c --status 2>/dev/null; then
    curl -fsS -o "$tarball.part" "http://deb.debian.org/debian/pool/main/f/ffmpeg/ffmpeg_$version.orig.tar.xz"
    echo "$sha256  $tarball.part" | sha256sum -c --quiet
    mv "$tarball.part" "$tarball"
fi
if [ ! -x "$src/configure" ]; then
    rm -rf "$src.part" && mkdir -p "$src.part"
    tar -xJf "$tarball" -C "$src.part" --strip-components=1
    mv "$src.part" "$src"
fi
# Our patches (scripts/ffmpeg-patches: each says what and why), each applied once: a source tree that
# already has one (it reverses cleanly) is left as it is, so that make recompiles only what changed.
# Those directly in scripts/ffmpeg-patches apply to every version; scripts/ffmpeg-patches/<version> holds
# the ones for one version only.
shopt -s nullglob
for patch_file in "$here"/ffmpeg-patches/*.patch "$here/ffmpeg-patches/$version"/*.patch; do
    if ! patch -d "$src" -p1 -R --dry-run -s -f <"$patch_file" >/dev/null 2>&1; then
        patch -d "$src" -p1 -N -s <"$patch_file"
    fi
done

# In: FLV or MPEG-TS on pipe:0, lavfi's anullsrc (no_audio="silence", encoded with aac). Out: FLV over
# rtmp/rtmps, MPEG-TS on a pipe (the relay's SRT caller) or over ffmpeg's srt (RELAY_SRT_PUSH=ffmpeg).
# Decoders: the probe's whitelist for FLV (every audio decoder an FLV stream can need) and h264/hevc, which
# the probe opens on MPEG-TS input.
decoders=aac,aac_fixed,aac_latm,mp3float,mp3,mp2float,mp2,ac3,ac3_fixed,eac3,opus,flac,vorbis,speex
decoders=$decoders,nellymoser,adpcm_swf,pcm_s16le,pcm_s16be,pcm_u8,pcm_alaw,pcm_mulaw,h264,hevc
parsers=h264,hevc,aac,aac_latm,mpegaudio,ac3,opus,flac,vorbis,av1,vp9
# The muxers insert these themselves: flv <- mpegts needs aac_adtstoasc, mpegts <- flv h264/hevc_mp4toannexb.
bsfs=h264_mp4toannexb,hevc_mp4toannexb,aac_adtstoasc,extract_extradata,null
# The MPEG-TS demuxer tells a PES's AAC from MPEG audio with these demuxers' probes: without them a TS
# source's audio stays unknown until 2500 packets, and the push writes nothing until then.
probe_demuxers=aac,loas,mp3,ac3,eac3,h264,hevc
protocols=pipe,tcp,rtmp,rtmps,tls,file,libsrt # file: tests write a push's output to a file
filters=anullsrc,aformat,anull,aresample,format,null # anullsrc, and what the ffmpeg tool puts around it
flags=(
    --prefix="$prefix"
    --disable-everything --disable-autodetect --disable-doc --disable-debug
    --disable-ffprobe --disable-ffplay --disable-swscale --disable-postproc
    --enable-pthreads --enable-openssl --enable-libsrt
    --enable-demuxer=flv,live_flv,mpegts,$probe_demuxers --enable-indev=lavfi --enable-muxer=flv,mpegts
    --enable-decoder=$decoders --enable-encoder=aac --enable-parser=$parsers --enable-bsf=$bsfs
    --enable-protocol=$protocols --enable-filter=$filters
)

cd "$obj"
if [ ! -f config.h ] || [ "$(cat configure-line 2>/dev/null)" != "${flags[*]}" ]; then
    "$src/configure" "${flags[@]}" >configure.log 2>&1 || {
        tail -20 configure.log >&2
        exit 1
    }
    echo "${flags[*]}" >configure-line
fi
nice -n 10 make -j"$(nproc)" >make.log 2>&1 || {
    tail -30 make.log >&2
    exit 1
}
make install-progs >>make.log 2>&1
if [ -n "${FULL_FFMPEG:-}" ]; then
    # Paths baked in: a push's environment is minimal (relay/push/process.py).
    cat >"$prefix/bin/ffmpeg-pushes-only" <<WRAPPER
#!/bin/bash
prev=
for a in "\$@"; do
    if [ "\$prev" = -i ] && [ "\$a" = pipe:0 ]; then exec $prefix/bin/ffmpeg "\$@"; fi
    prev=\$a
done
exec $FULL_FFMPEG "\$@"
WRAPPER
    chmod +x "$prefix/bin/ffmpeg-pushes-only"
fi
echo "$prefix/bin/ffmpeg"
