#!/usr/bin/env bash
# End-to-end comparison: trio-pop3 vs Dovecot (tuned), interleaved, in one sitting.
#
#   benchmarks/compare.sh [OUT_DIR]
#
# Uses the shared POP3 harness (README.md / BASELINES.md there): copies it to a
# temporary directory, builds pop3load (cargo, offline), makes the data set if
# missing, then for each round starts each server fresh, runs the harness's
# run.sh against it, stops it (by the PID started here), and finally prints
# `summarize.py --ref dovecot-tuned` over all rounds.  Odd rounds run trio-pop3
# first, even rounds Dovecot first.
#
# Skips (exit 0, with a message) when cargo (or a prebuilt POP3LOAD), Dovecot, or
# root (Dovecot's start.sh chowns the mail and needs it) is missing.
#
# Environment (defaults in brackets):
#   BENCH_SRC [/work/shared/bench]  the shared harness (read-only is fine)
#   DATA [/tmp/pop3bench/data]      data set (mkmail.py --out DATA if missing)
#   ROUNDS [3]                      interleaved rounds
#   PYTHON [/tmp/venv/bin/python if present, else python3]  runs trio-pop3
#   PYTHON_ALT                      a second interpreter: add trio-pop3-alt to SERVERS
#                                   to run the same code under it in the same rounds
#                                   (the interpreter's build moves the figures: see
#                                   benchmarks/README.md, "Which Python")
#   TRIO_PORT [22112]  DOVECOT_PORT [22110]
#   TRIO_ARGS                       extra arguments for `trio-pop3 serve`; default:
#                                   `--max-connections 20000 --max-connections-per-address
#                                   20000` when serve has these options (all load comes
#                                   from 127.0.0.1; the harness raises Dovecot's limits too)
#                                   and `--no-mark-seen` when serve has it (the harness
#                                   sets Dovecot's pop3_no_flag_updates = yes)
#   SERVERS ["trio-pop3 dovecot-tuned"]
#   RUN_TIMEOUT [480]               seconds one run.sh may take before it is killed
#   POP3LOAD                        a prebuilt pop3load binary (skips the build)
# and the harness's run.sh knobs, with shorter defaults than run.sh's own so that
# 3 rounds take ~15 minutes on 2 cores:
#   DURATION [5] seconds per session test   CONCS ["1 16 64"]
#   RETR_COUNT [10]  PIPE_COUNT [20000]  PIPE_CMDS ["stat-list noop"]
#   IDLE_CONNS [100]  IDLE_HOLD [5]  WARMUP [3]
#     IDLE_CONNS must not exceed USERS (100): trio-pop3 locks a maildrop for the
#     whole session (RFC 1939 section 4), so a user's second concurrent login gets
#     -ERR [IN-USE]; Dovecot does not lock POP3 sessions by default
#     (pop3_lock_session = no).  pop3load's idle mode logs in users round-robin.
#     Or add --no-maildrop-lock to TRIO_ARGS (trio-pop3's equivalent), and
#     --workers N to measure N worker processes.
#   SETTLE_MAX [75] (tuned Dovecot reaps idle pop3 processes after ~60 s)
# Output: OUT_DIR (default /tmp/trio-pop3-compare-<UTC time>) gets NAME-ROUND.txt,
# env.txt, server logs and summary.md.
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bench_src=${BENCH_SRC:-/work/shared/bench}
data=${DATA:-/tmp/pop3bench/data}
rounds=${ROUNDS:-3}
servers=${SERVERS:-trio-pop3 dovecot-tuned}
trio_port=${TRIO_PORT:-22112}
dovecot_port=${DOVECOT_PORT:-22110}
run_timeout=${RUN_TIMEOUT:-480}
if [ -z "${PYTHON:-}" ]; then
  if [ -x /tmp/venv/bin/python ]; then PYTHON=/tmp/venv/bin/python; else PYTHON=python3; fi
fi
export DURATION=${DURATION:-5} CONCS=${CONCS:-1 16 64} RETR_COUNT=${RETR_COUNT:-10}
export PIPE_COUNT=${PIPE_COUNT:-20000} PIPE_CMDS=${PIPE_CMDS:-stat-list noop}
export IDLE_CONNS=${IDLE_CONNS:-100} IDLE_HOLD=${IDLE_HOLD:-5} WARMUP=${WARMUP:-3}
export SETTLE_MAX=${SETTLE_MAX:-75}

skip() { echo "compare.sh: SKIPPED: $*" >&2; exit 0; }

[ -d "$bench_src" ] || skip "no benchmark harness at $bench_src (set BENCH_SRC)"
if [ -z "${POP3LOAD:-}" ] && ! command -v cargo >/dev/null; then
  skip "cargo not found (needed to build pop3load; or set POP3LOAD=/path/to/pop3load)"
fi
[ -x /usr/sbin/dovecot ] || skip "Dovecot not installed (/usr/sbin/dovecot; apt-get install dovecot-pop3d)"
[ "$(id -u)" = 0 ] || skip "not root (Dovecot's start script needs root)"
"$PYTHON" -c 'import trio' 2>/dev/null || skip "$PYTHON cannot import trio (set PYTHON)"
for p in "$trio_port" "$dovecot_port"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "compare.sh: port $p is already in use; stop that server first" >&2; exit 2
  fi
done

out=${1:-/tmp/trio-pop3-compare-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /tmp/trio-pop3-bench.XXXXXX)
running=""
trio_pid=""
start_server() {  # NAME -> sets port and running
  case $1 in
    trio-pop3|trio-pop3-alt)
      local python=$PYTHON
      [ "$1" = trio-pop3-alt ] && python=${PYTHON_ALT:?set PYTHON_ALT for trio-pop3-alt}
      PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$python" -m trio_pop3 serve \
        --host 127.0.0.1 --port "$trio_port" \
        --maildir-root "$data/mail" --users "$data/passwd" ${TRIO_ARGS:-} \
        > "$out/$1-server-$2.log" 2>&1 &
      trio_pid=$!
      running=$1
      port=$trio_port
      for _ in $(seq 150); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        kill -0 "$trio_pid" 2>/dev/null || break
        sleep 0.1
      done
      echo "trio-pop3 did not come up; its log:" >&2
      tail -20 "$out/$1-server-$2.log" >&2
      return 1 ;;
    dovecot-*)
      PORT=$dovecot_port "$bench/dovecot/start.sh" "${1#dovecot-}" "$data" > /dev/null || return 1
      running=$1
      port=$dovecot_port ;;
    *) echo "unknown server $1" >&2; return 1 ;;
  esac
}
stop_server() {
  local what=$running
  running=""
  case $what in
    trio-pop3|trio-pop3-alt)
      if kill -0 "$trio_pid" 2>/dev/null; then
        kill -TERM "$trio_pid"
        for _ in $(seq 100); do kill -0 "$trio_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$trio_pid" 2>/dev/null && { echo "trio-pop3 pid $trio_pid ignored SIGTERM; SIGKILL" >&2; kill -KILL "$trio_pid"; }
      fi
      wait "$trio_pid" 2>/dev/null ;;
    dovecot-*) "$bench/dovecot/stop.sh" "${what#dovecot-}" > /dev/null ;;
  esac
}
run_pid=""
cleanup() {
  if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then kill -TERM "$run_pid"; wait "$run_pid" 2>/dev/null; fi
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cp -r "$bench_src/." "$work/"
chmod -R u+w "$work"
bench=$work

if [ -n "${POP3LOAD:-}" ]; then
  [ -x "$POP3LOAD" ] || { echo "POP3LOAD=$POP3LOAD is not executable" >&2; exit 2; }
else
  echo "== building pop3load in $bench/pop3load"
  (cd "$bench/pop3load" && cargo build --release --offline -q) || { echo "cannot build pop3load" >&2; exit 2; }
  export POP3LOAD=$bench/pop3load/target/release/pop3load
fi
if [ ! -d "$data/mail" ] || [ ! -f "$data/passwd" ]; then
  echo "== making the data set in $data"
  python3 "$bench/mkmail.py" --out "$data" --users 100 --messages 20 --size 4096 || exit 2
fi
ulimit -n 20000 2>/dev/null || true
if [ -z "${TRIO_ARGS+set}" ]; then
  TRIO_ARGS=""
  if PYTHONPATH="$repo" "$PYTHON" -m trio_pop3 serve --help 2>/dev/null | grep -q -- --max-connections-per-address; then
    TRIO_ARGS="--max-connections 20000 --max-connections-per-address 20000"
  fi
  if PYTHONPATH="$repo" "$PYTHON" -m trio_pop3 serve --help 2>/dev/null | grep -q -- --no-mark-seen; then
    TRIO_ARGS="$TRIO_ARGS --no-mark-seen"
  fi
fi


{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "repo: $repo ($(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), uncommitted changes: $(git -C "$repo" status --porcelain 2>/dev/null | wc -l) paths)"
  echo "kernel: $(uname -r); CPUs: $(nproc); $(grep -m1 'model name' /proc/cpuinfo)"
  echo "memory: $(free -m | awk '/Mem:/{print $2" MiB"}'); ulimit -n: $(ulimit -n)"
  echo "dovecot: $(/usr/sbin/dovecot --version)"
  echo "trio-pop3: $PYTHON: $("$PYTHON" -c 'import sys, trio; print("Python", sys.version.split()[0], "trio", trio.__version__)')"
  if [ -n "${PYTHON_ALT:-}" ]; then
    echo "trio-pop3-alt: $PYTHON_ALT: $("$PYTHON_ALT" -c 'import sys, trio; print("Python", sys.version.split()[0], "trio", trio.__version__)')"
  fi
  echo "trio-pop3 serve args: ${TRIO_ARGS:-(none)}"
  echo "run.sh env: DURATION=$DURATION CONCS='$CONCS' RETR_COUNT=$RETR_COUNT PIPE_COUNT=$PIPE_COUNT IDLE_CONNS='$IDLE_CONNS' IDLE_HOLD=$IDLE_HOLD WARMUP=$WARMUP SETTLE_MAX=$SETTLE_MAX ROUNDS=$rounds"
  echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$out/env.txt"
cat "$out/env.txt"

status=0
t0=$(date +%s)
for r in $(seq "$rounds"); do
  order=$servers
  if [ $((r % 2)) = 0 ]; then order=$(echo "$servers" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for s in $order; do
    echo "== round $r/$rounds: $s ($(date -u +%H:%M:%S), +$(($(date +%s) - t0)) s)"
    start_server "$s" "$r" || { status=1; stop_server; continue; }
    # in the background, so that a signal to this script acts at once
    SERVER_PID=$(case $s in trio-pop3*) echo "$trio_pid" ;; esac) \
      timeout "$run_timeout" "$bench/run.sh" "$port" "$s" > "$out/$s-$r.txt" 2>&1 &
    run_pid=$!
    wait "$run_pid"
    rc=$?
    run_pid=""
    [ $rc = 0 ] || status=1
    echo "   run.sh status $rc; $(grep -c '^RESULT' "$out/$s-$r.txt") results;" \
      "errors: $(grep -o ' errors=[0-9]*' "$out/$s-$r.txt" | tr '\n' ' ')"
    stop_server
    sleep 2
  done
done
echo "== done in $(($(date +%s) - t0)) s"
python3 "$bench/summarize.py" --ref dovecot-tuned "$out"/*-[0-9]*.txt > "$out/summary.md"
cat "$out/summary.md"
echo "results in $out"
exit $status
