#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds, runs `swift test` (unit and real-socket
# tests against servers on 127.0.0.1), then the real-client conformance checks in tools/conformance
# (their Python clients go into a virtual environment under .build/, never the system's Python).
# Usage: tools/test.sh            (from the repository root; CI runs exactly this via .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
pkg-config --exists sqlite3 2>/dev/null || need_apt+=(libsqlite3-dev pkg-config)
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v curl >/dev/null || need_apt+=(curl)
if ((${#need_apt[@]})); then
    echo "== installing ${need_apt[*]}"
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A throwaway PostgreSQL cluster (initdb in a temp directory, pg_ctl on a loopback port, as the postgres
# user): the PostgreSQL store's tests and tools/conformance/cluster.py run against it. It is stopped and
# deleted when this script exits, whatever the outcome.
tools/pg.sh install
pg_dir="$(mktemp -d /tmp/eventlog-test-pg.XXXXXX)"
trap 'tools/pg.sh stop "$pg_dir"' EXIT
# Below the ephemeral range (32768-60999), which the tests' servers on port 0 draw from.
pg_port="${EVENTLOG_TEST_PG_PORT:-$((20000 + RANDOM % 12000))}"
echo "== PostgreSQL on 127.0.0.1:$pg_port ($pg_dir)"
EVENTLOG_TEST_POSTGRES="$(tools/pg.sh start "$pg_dir" "$pg_port")"
export EVENTLOG_TEST_POSTGRES EVENTLOG_TEST_PG_DIR="$pg_dir"

echo "== swift build"
swift build --build-tests 2>&1 | tail -n 3

echo "== swift test"
set +e
# Bounded: a hang fails the run in 30 minutes (124) instead of using up CI's 90.
timeout --kill-after=30s 30m swift test --skip-build >.build/swift-test.log 2>&1
status=$?
set -e
# Children of a test process that crashed or was stopped (servers, `eventlog tail -f`) outlive it.
pkill -KILL -f "^$(swift build --show-bin-path)/" || true
# Passing tests one line each; failures with their details; the runner's closing summary.
grep -Ev '^(􀟈|◇) |Test Case .* started' .build/swift-test.log | tail -n 200
if [ "$status" -ne 0 ]; then
    # The tail above can miss a failure printed early on: every recorded issue again, with its details.
    echo "== failures"
    grep -A 8 -E '^✘ Test .* recorded an issue' .build/swift-test.log | head -n 300 || true
    echo "swift test failed ($status)"
    exit "$status"
fi

if [ -x tools/conformance/run.sh ]; then
    echo "== real-client conformance (tools/conformance)"
    EVENTLOGD="$(swift build --show-bin-path)/eventlogd" tools/conformance/run.sh
fi
