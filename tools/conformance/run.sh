#!/usr/bin/env bash
# Conformance checks: real, independent clients (curl, httpx-sse, websockets, headless Chromium, ...)
# against a real eventlogd.
#
#   tools/conformance/run.sh                 # every check script in SCRIPTS
#   tools/conformance/run.sh sse_clients.py  # only these
#
# Environment:
#   EVENTLOGD                  the eventlogd binary; when unset it is built with `swift build`
#   EVENTLOG_MAINT             the eventlog-maint binary (crash.py); when unset it is built along with
#                              eventlogd, or taken from beside $EVENTLOGD
#   CONFORMANCE_SWIFT_FLAGS    extra flags for that build, e.g. "--scratch-path .build-conf"
#   CONFORMANCE_TIMEOUT        hard limit per script in seconds (default 600)
#   EVENTLOG_TEST_POSTGRES     cluster.py: a PostgreSQL superuser URL to create its databases on, and
#   EVENTLOG_TEST_PG_DIR       its tools/pg.sh directory (for the restart check); tools/test.sh sets
#                              both. When unset, cluster.py starts its own cluster with tools/pg.sh
#   PYTHON                     the interpreter; by default a virtual environment in
#                              .build/conformance-venv, made here, so nothing is installed into the
#                              system's Python
#
# Each script prints `ok - ...` / `FAIL - ...` lines and ends with `N passed, M failed`; this
# runner adds them up, prints the total as its last line and exits non-zero if anything failed
# (a script that crashes, times out or prints no summary counts as one failure).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

# The check scripts, run in this order. Add new ones here.
SCRIPTS=(
    sse_clients.py
    ws_clients.py
    browser.py
    crash.py
    hostile.py
    auth.py
    orderstate.py
    cluster.py
)
if [ "$#" -gt 0 ]; then
    SCRIPTS=("$@")
fi

export PYTHONDONTWRITEBYTECODE=1
TIMEOUT="${CONFORMANCE_TIMEOUT:-600}"
read -r -a SWIFT_FLAGS <<<"${CONFORMANCE_SWIFT_FLAGS:-}"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"; else "$@"; fi
}

# 0. The interpreter: a virtual environment of our own under .build/ (Debian's python3 needs the
# python3-venv package for that).
if [ -z "${PYTHON:-}" ]; then
    venv="$root/.build/conformance-venv"
    if [ ! -x "$venv/bin/python" ]; then
        echo "conformance: creating a virtual environment in $venv" >&2
        mkdir -p "$root/.build"
        if ! python3 -m venv "$venv" </dev/null; then
            rm -rf "$venv"
            echo "conformance: installing python3-venv" >&2
            as_root apt-get update -qq </dev/null
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv </dev/null
            python3 -m venv "$venv" </dev/null
        fi
    fi
    PYTHON="$venv/bin/python"
fi

# 1. Python packages, exactly as pinned (pip only runs when something is missing or differs).
if ! "$PYTHON" - "$here/requirements.txt" <<'EOF'
import re, sys
from importlib.metadata import PackageNotFoundError, version
missing = []
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;]+)", line)
    if not match:
        continue
    name, wanted = match.groups()
    try:
        if version(name) != wanted:
            missing.append(f"{name} {version(name)} != {wanted}")
    except PackageNotFoundError:
        missing.append(f"{name} missing")
if missing:
    print("conformance: installing Python packages: " + ", ".join(missing), file=sys.stderr)
    sys.exit(1)
EOF
then
    "$PYTHON" -m pip install -q -r "$here/requirements.txt" </dev/null
fi

# 2. curl.
if ! command -v curl >/dev/null 2>&1; then
    echo "conformance: installing curl" >&2
    as_root apt-get update -qq </dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl </dev/null
fi

# 2b. Headless Chromium and chromedriver (Debian's packages) for browser.py, auth.py and
# orderstate.py. When they cannot be installed, those scripts still run and fail loudly; they never
# skip.
for script in "${SCRIPTS[@]}"; do
    case "$(basename "$script")" in browser.py | auth.py | orderstate.py) needs_chromium=1 ;; *) needs_chromium=0 ;; esac
    if [ "$needs_chromium" -eq 1 ]; then
        if ! { [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1; } \
            || ! { [ -x /usr/bin/chromedriver ] || command -v chromedriver >/dev/null 2>&1; }; then
            echo "conformance: installing chromium and chromium-driver" >&2
            if ! { as_root apt-get update -qq </dev/null \
                && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver </dev/null; }; then
                echo "conformance: could not install chromium / chromium-driver; browser.py, auth.py and orderstate.py will fail" >&2
            fi
        fi
        break
    fi
done

# 2c. nginx (Debian's package) for auth.py's reverse-proxy check (TLS, SSE, WebSocket). auth.py runs
# its own nginx process on a loopback port with its own configuration; the package's service is
# not used. When nginx cannot be installed, auth.py still runs and fails loudly; it never skips.
for script in "${SCRIPTS[@]}"; do
    if [ "$(basename "$script")" = auth.py ]; then
        if ! { [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1; }; then
            echo "conformance: installing nginx" >&2
            if ! { as_root apt-get update -qq </dev/null \
                && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx </dev/null; }; then
                echo "conformance: could not install nginx; auth.py will fail" >&2
            fi
        fi
        break
    fi
done

# 3. The server binary.
if [ -z "${EVENTLOGD:-}" ]; then
    echo "conformance: building eventlogd" >&2
    swift build ${SWIFT_FLAGS[@]+"${SWIFT_FLAGS[@]}"} --product eventlogd </dev/null
    bin_path="$(swift build ${SWIFT_FLAGS[@]+"${SWIFT_FLAGS[@]}"} --show-bin-path </dev/null)"
    EVENTLOGD="$bin_path/eventlogd"
    if [ -z "${EVENTLOG_MAINT:-}" ]; then
        echo "conformance: building eventlog-maint" >&2
        swift build ${SWIFT_FLAGS[@]+"${SWIFT_FLAGS[@]}"} --product eventlog-maint </dev/null
        EVENTLOG_MAINT="$bin_path/eventlog-maint"
    fi
fi
if [ ! -f "$EVENTLOGD" ] || [ ! -x "$EVENTLOGD" ]; then
    echo "conformance: eventlogd not found or not executable: $EVENTLOGD" >&2
    echo "0 passed, 1 failed"
    exit 1
fi
EVENTLOGD="$(cd "$(dirname "$EVENTLOGD")" && pwd)/$(basename "$EVENTLOGD")"
export EVENTLOGD
echo "conformance: eventlogd = $EVENTLOGD"
# eventlog-maint: scripts that need it fail loudly when it is missing.
EVENTLOG_MAINT="${EVENTLOG_MAINT:-$(dirname "$EVENTLOGD")/eventlog-maint}"
if [ -f "$EVENTLOG_MAINT" ] && [ -x "$EVENTLOG_MAINT" ]; then
    EVENTLOG_MAINT="$(cd "$(dirname "$EVENTLOG_MAINT")" && pwd)/$(basename "$EVENTLOG_MAINT")"
fi
export EVENTLOG_MAINT
echo "conformance: eventlog-maint = $EVENTLOG_MAINT"

# 4. Run every script, add up the results.
total_passed=0
total_failed=0
failed_scripts=()
for script in "${SCRIPTS[@]}"; do
    case "$script" in
        /*) path="$script" ;;
        *) path="$here/$script" ;;
    esac
    echo "=== $script"
    output="$(mktemp)"
    set +e
    timeout -k 10 "$TIMEOUT" "$PYTHON" -u "$path" "$EVENTLOGD" </dev/null 2>&1 | tee "$output"
    rc="${PIPESTATUS[0]}"
    set -e
    summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$output" | tail -n 1 || true)"
    rm -f "$output"
    passed=0
    failed=0
    if [ -n "$summary" ]; then
        passed="${summary%% passed*}"
        failed="${summary#*passed, }"
        failed="${failed%% failed*}"
    fi
    if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
        if [ "$rc" -eq 124 ]; then
            echo "FAIL - $script: timed out after ${TIMEOUT}s"
        else
            echo "FAIL - $script: exited with status $rc"
        fi
        failed=1
    elif [ -z "$summary" ]; then
        echo "FAIL - $script: printed no 'N passed, M failed' summary"
        failed=1
    fi
    if [ "$failed" -gt 0 ]; then
        failed_scripts+=("$script")
    fi
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
done

echo "=== conformance: ${#SCRIPTS[@]} script(s)${failed_scripts[*]:+, failing: ${failed_scripts[*]}}"
echo "$total_passed passed, $total_failed failed"
if [ "$total_failed" -ne 0 ] || [ "$total_passed" -eq 0 ]; then
    exit 1
fi
