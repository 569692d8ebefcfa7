# Sourced by scripts/test and scripts/dev: bubblewrap, which `natsfn node` (its default
# `--isolation sandbox`) runs every worker in. Installed with apt-get when missing.
ensure_bubblewrap() {
    if command -v bwrap >/dev/null; then
        return 0
    fi
    echo "installing bubblewrap (the workers' sandbox) with apt-get" >&2
    if [ "$(id -u)" = 0 ]; then
        { apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
          || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; } || true
    elif command -v sudo >/dev/null; then
        { sudo apt-get install -y -qq bubblewrap >/dev/null 2>&1 \
          || { sudo apt-get update -qq >/dev/null 2>&1 && sudo apt-get install -y -qq bubblewrap >/dev/null 2>&1; }; } || true
    fi
    command -v bwrap >/dev/null
}
