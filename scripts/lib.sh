# Shared by scripts/demo and scripts/test: make a fresh machine ready, idempotently.

# A project venv with membership-log installed from this checkout (not editable: the tests
# and the demo run the package exactly as `pip install .` ships it). $1: extras, e.g. "[test]".
ensure_venv() {
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    # setuptools reuses an in-tree build/ across installs: a renamed or deleted module would
    # live on in the wheel from there (a stale migration is a second Alembic head).
    rm -rf build
    .venv/bin/python -m pip install --quiet --disable-pip-version-check ".$1"
}

# A Debian package when its command is missing (root and apt-get needed). $1: command,
# $2: package, $3: what it is for.
ensure_apt() {
    if command -v "$1" >/dev/null 2>&1; then
        return 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "$1 is missing ($3): installing $2 with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    else
        echo "$1 is missing and cannot be installed here: apt-get install $2" >&2
    fi
}

ensure_serf() { ensure_apt serf serf "the real Serf agents"; }

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

ensure_chromium() { ensure_apt chromium chromium "the timeline's browser test"; }
