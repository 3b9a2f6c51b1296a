# Shared by scripts/demo and scripts/test: make a fresh machine ready, idempotently.

# A project venv with membership-log installed from this checkout (not editable: the tests
# and the demo run the package exactly as `pip install .` ships it). $1: extras, e.g. "[test]".
ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/python -m pip install --quiet --disable-pip-version-check ".$1"
}

# Serf from Debian's package when it is missing (root and apt-get needed).
ensure_serf() {
    if command -v serf >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "serf is missing: installing it with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq serf >/dev/null
    else
        echo "serf is missing and cannot be installed here: apt-get install serf" >&2
    fi
}

# The machine's PostgreSQL on 127.0.0.1:5432, started if it is installed but down.
ensure_postgres() {
    if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
        return 0
    fi
    if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
        echo "PostgreSQL is down: starting it" >&2
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
        for _ in $(seq 30); do
            pg_isready -q -h 127.0.0.1 -p 5432 && return 0
            sleep 1
        done
    fi
    echo "PostgreSQL does not answer on 127.0.0.1:5432" >&2
}

# Debian's Chromium, for the test that renders the timeline in a real browser.
ensure_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "chromium is missing: installing it with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "chromium is missing and cannot be installed here: apt-get install chromium" >&2
    fi
}
