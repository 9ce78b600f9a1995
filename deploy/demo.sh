#!/usr/bin/env bash
# The README's main job: start skiffd in the background, import the demo image,
# run a container that prints a greeting, show `skiff ps -a`.
#   deploy/demo.sh        start (if needed) and run the demo
#   deploy/demo.sh stop   stop the skiffd that the demo started
set -euo pipefail
cd "$(dirname "$0")/.."
SKIFF=.venv/bin/skiff
SKIFFD=.venv/bin/skiffd
LOG=build/skiffd.log
PIDFILE=/run/skiff/skiffd.pid

if [ "${1:-}" = stop ]; then
  if [ -f "$PIDFILE" ]; then kill -TERM "$(cat "$PIDFILE")" && echo "skiffd stopping"; else echo "skiffd is not running"; fi
  exit 0
fi

if ! $SKIFF version >/dev/null 2>&1; then
  echo "starting skiffd (log: $LOG)"
  mkdir -p build
  setsid $SKIFFD >"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 100); do $SKIFF version >/dev/null 2>&1 && break; sleep 0.2; done
  $SKIFF version >/dev/null || { echo "skiffd did not come up; see $LOG" >&2; tail -20 "$LOG" >&2; exit 1; }
fi
$SKIFF version
if ! $SKIFF inspect --type image busybox >/dev/null 2>&1; then
  $SKIFF import build/busybox.tar busybox:latest
fi
$SKIFF rm -f hello-skiff >/dev/null 2>&1 || true
$SKIFF run --name hello-skiff --hostname skiff-demo --network none --memory 64m busybox \
  sh -c 'echo "Hello from skiff! I am PID $$ on $(hostname), running $(uname -sr)."'
$SKIFF ps -a
echo
echo "skiffd keeps running in the background; stop it with: make stop"
