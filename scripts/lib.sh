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

# For the quick loop (`scripts/test --quick`): an editable install of this checkout, made
# once, so that an edit is tested without a reinstall (ensure_venv's pip step, a wheel build,
# is most of the loop's budget). A fresh clone, or a venv ensure_venv left non-editable,
# gets the editable install here. $1: extras, e.g. "[test]".
ensure_quick_venv() {
    local url
    url=$(cat .venv/lib/python3*/site-packages/membership_log-*.dist-info/direct_url.json \
        2>/dev/null || true)
    case "$url" in
        *'"editable": true'*"\"file://$PWD\""*) return 0 ;;
    esac
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    rm -rf build
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$1"
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

# Prometheus, promtool and Alertmanager for the operations tests. Debian names Alertmanager's
# binary prometheus-alertmanager (upstream: alertmanager). The tests start their own
# instances on free loopback ports. Installing the packages may start system daemons
# (prometheus on 9090, alertmanager on 9093/9094, the node exporter pulled in as a
# recommendation on 9100): those are stopped and disabled again, by pid, and only those this
# install caused: daemons running before, and other users' test instances, are left alone.
ensure_prometheus() {
    local before pid
    if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
        && { command -v alertmanager || command -v prometheus-alertmanager; } >/dev/null 2>&1
    then
        return 0
    fi
    before=" $(_prometheus_daemons | tr '\n' ' ') "
    ensure_apt prometheus prometheus "the metrics tests' real Prometheus and promtool"
    ensure_apt prometheus-alertmanager prometheus-alertmanager "the alerts tests"
    if [ -d /run/systemd/system ]; then
        systemctl disable --now prometheus prometheus-alertmanager prometheus-node-exporter \
            >/dev/null 2>&1 || true
    fi
    for pid in $(_prometheus_daemons); do
        case "$before" in *" $pid "*) continue ;; esac
        echo "stopping $(readlink "/proc/$pid/exe") (pid $pid): started by its install" >&2
        kill "$pid" 2>/dev/null || true
    done
}

# The pids of the system's Prometheus, Alertmanager and node exporter daemons: Debian runs
# them as the user prometheus. Matched on the executable, as pkill -x would miss two of them
# (/proc/PID/comm cuts names to 15 characters).
_prometheus_daemons() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(stat -c %U "$p" 2>/dev/null)" = prometheus ] || continue
        case "$(readlink "$p/exe" 2>/dev/null)" in
            */prometheus | */prometheus-alertmanager | */prometheus-node-exporter)
                echo "${p#/proc/}" ;;
        esac
    done
}
