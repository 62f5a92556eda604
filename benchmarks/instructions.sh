#!/usr/bin/env bash
# Instructions per benchmark session, counted by callgrind: an A/B measure that the
# machine's speed does not move.
#
#   benchmarks/instructions.sh [CONCURRENCY] [SECONDS]
#
# Starts `trio-pop3 serve` from this checkout under `valgrind --tool=callgrind` with
# instrumentation off, warms it up with pop3load's session mode for 5 s, then
# counts the user-space instructions of CONCURRENCY [16] clients for SECONDS [15]
# and prints them per session.  Kernel time (the system calls) is not counted, so
# it complements compare.sh rather than replacing it.  Two runs of the same build
# agree to about 0.1 %, whatever else the machine is doing; the server runs about
# 50x slower under callgrind, so a run covers a few hundred sessions.
#
# Environment: POP3LOAD (a pop3load binary; see compare.sh for building it),
# DATA [/tmp/pop3bench/data] (mkmail.py's data set), PYTHON [python3],
# PORT [22601], TRIO_ARGS [--no-maildrop-lock, --no-mark-seen and the connection
# limits raised, as in compare.sh].  Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
conc=${1:-16}
secs=${2:-15}
port=${PORT:-22601}
data=${DATA:-/tmp/pop3bench/data}
python=${PYTHON:-python3}
pop3load=${POP3LOAD:?set POP3LOAD to a pop3load binary (see compare.sh)}
read -r -a trio_args <<< "${TRIO_ARGS:---no-maildrop-lock --no-mark-seen --max-connections 20000 --max-connections-per-address 20000}"
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is missing" >&2; exit 2; }

out=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$out"' EXIT
cd "$repo"
PYTHONPATH="$repo" valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out/cg.%p.out" \
    "$python" -m trio_pop3 serve --host 127.0.0.1 --port "$port" \
    --maildir-root "$data/mail" --users "$data/passwd" "${trio_args[@]}" \
    >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
done
"$pop3load" session --addr "127.0.0.1:$port" --users 100 --concurrency "$conc" \
    --duration 5 >/dev/null
callgrind_control -i on "$server" >/dev/null 2>&1
result=$("$pop3load" session --addr "127.0.0.1:$port" --users 100 \
    --concurrency "$conc" --duration "$secs" --timeout 60 | grep '^RESULT')
callgrind_control -i off "$server" >/dev/null 2>&1
callgrind_control -d "$server" >/dev/null 2>&1
sessions=$(sed 's/.* sessions=\([0-9]*\).*/\1/' <<< "$result")
errors=$(sed 's/.* errors=\([0-9]*\).*/\1/' <<< "$result")
total=$(cat "$out"/cg.*.out* | awk '/^(summary|totals):/ {s += $2} END {printf "%.0f\n", s}')
echo "concurrency=$conc sessions=$sessions errors=$errors instructions=$total" \
    "per_session=$((total / sessions))"
