#!/usr/bin/env bash
# Installs the system packages the relay (run), its tests (test) or its benchmark (bench) need, when missing and when we
# may (root, or passwordless sudo). Never fails the build: what cannot be installed is said plainly and
# the relay or the tests that need it turn the feature off with a visible reason.
set -u
mode=${1:-run}

run_pkgs=()
if [ "$mode" = venv ]; then
  run_pkgs+=(python3-venv)
fi
have_lib() { /sbin/ldconfig -p 2>/dev/null | grep -q "$1"; }
have_lib 'libsrt\(-gnutls\|-openssl\)\?\.so\.1' || run_pkgs+=(libsrt1.5-openssl)

test_pkgs=()
if [ "$mode" = test ]; then
  command -v srt-live-transmit >/dev/null || test_pkgs+=(srt-tools)
  command -v gst-launch-1.0 >/dev/null || test_pkgs+=(gstreamer1.0-tools)
  [ -e /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstrtmp2.so ] || \
    ls /usr/lib/*/gstreamer-1.0/libgstrtmp2.so >/dev/null 2>&1 || test_pkgs+=(gstreamer1.0-plugins-bad)
  ls /usr/lib/*/gstreamer-1.0/libgstx264.so >/dev/null 2>&1 || test_pkgs+=(gstreamer1.0-plugins-ugly)
  ls /usr/lib/*/gstreamer-1.0/libgstvideotestsrc.so >/dev/null 2>&1 || test_pkgs+=(gstreamer1.0-plugins-base)
  ls /usr/lib/*/gstreamer-1.0/libgstflv.so >/dev/null 2>&1 || test_pkgs+=(gstreamer1.0-plugins-good)
  command -v ffmpeg >/dev/null || test_pkgs+=(ffmpeg)
  # The dashboard's browser test drives Debian's Chromium with Playwright (never Playwright's download).
  [ -x /usr/bin/chromium ] || test_pkgs+=(chromium)
  # The container tests (tests/containers): rootful podman on runc, netavark with aardvark-dns (compose
  # services find each other by name), debootstrap for a base image without a registry, and Debian's
  # prometheus for the monitoring profile's stand-in.
  command -v podman >/dev/null || test_pkgs+=(podman)
  [ -x /usr/sbin/runc ] || test_pkgs+=(runc)
  [ -x /usr/lib/podman/netavark ] || test_pkgs+=(netavark)
  [ -x /usr/lib/podman/aardvark-dns ] || test_pkgs+=(aardvark-dns)
  # netavark sets up a bridge network's NAT with the iptables command: without it, every podman build or
  # run on a bridge fails with "netavark: No such file or directory" (a clean Debian lacks it).
  [ -x /usr/sbin/iptables ] || test_pkgs+=(iptables)
  [ -x /usr/sbin/debootstrap ] || test_pkgs+=(debootstrap)
  [ -x /usr/bin/prometheus ] || test_pkgs+=(prometheus)
  # The cluster tests (tests/cluster): a PostgreSQL server of their own, HAProxy (RTMP/RTMPS over TCP)
  # and nginx's stream module (SRT over UDP) in front of the nodes.
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || test_pkgs+=(postgresql)
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || test_pkgs+=(haproxy)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || test_pkgs+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || test_pkgs+=(libnginx-mod-stream)
fi

lean_pkgs=()
if [ "$mode" = lean ]; then
  # make lean-ffmpeg (scripts/lean-ffmpeg.sh): a compiler, nasm, and the headers of what it links.
  command -v gcc >/dev/null && command -v make >/dev/null || lean_pkgs+=(build-essential)
  command -v pkg-config >/dev/null || lean_pkgs+=(pkg-config)
  command -v nasm >/dev/null || lean_pkgs+=(nasm)
  command -v curl >/dev/null || lean_pkgs+=(curl)
  command -v patch >/dev/null || lean_pkgs+=(patch) # scripts/ffmpeg-patches
  [ -e /usr/include/openssl/ssl.h ] || lean_pkgs+=(libssl-dev)
  [ -e /usr/include/srt/srt.h ] || lean_pkgs+=(libsrt-openssl-dev)
fi

bench_pkgs=()
if [ "$mode" = bench ]; then
  # make bench runs the same scenarios through nginx-rtmp's `push` for comparison.
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || bench_pkgs+=(nginx)
  [ -e /usr/lib/nginx/modules/ngx_rtmp_module.so ] || bench_pkgs+=(libnginx-mod-rtmp)
  command -v srt-live-transmit >/dev/null || bench_pkgs+=(srt-tools)
fi

pkgs=("${run_pkgs[@]}" "${test_pkgs[@]}" "${lean_pkgs[@]}" "${bench_pkgs[@]}")
[ ${#pkgs[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=(); elif sudo -n true 2>/dev/null; then sudo=(sudo -n); else
  echo "warning: cannot install ${pkgs[*]} (not root, no sudo): SRT ingest or some tests will be off." >&2
  exit 0
fi
echo "Installing system packages: ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/tmp/relay-apt.log 2>&1; then
  "${sudo[@]}" apt-get update -qq >/dev/null 2>&1
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/tmp/relay-apt.log 2>&1 || {
    echo "warning: apt-get could not install ${pkgs[*]} (see /tmp/relay-apt.log): SRT ingest or some tests will be off." >&2
    exit 0
  }
fi
exit 0
