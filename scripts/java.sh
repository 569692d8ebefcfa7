# Sourced by scripts/test and scripts/bench: makes a JDK 17 or newer (javac) and
# Jackson, the Java bootstrap's JSON library, available, installing
# openjdk-17-jdk-headless and libjackson2-databind-java with apt-get when missing.

java_ok() {
  local v
  v=$("${NATSFN_JAVA:-java}" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1)
  [ -n "$v" ] && [ "$v" -ge 17 ] && command -v "$(dirname "$(readlink -f "$(command -v "${NATSFN_JAVA:-java}")")")/javac" >/dev/null
}

jackson_ok() {
  [ -n "${NATSFN_JAVA_CLASSPATH:-}" ] || [ -f /usr/share/java/jackson-databind.jar ]
}

ensure_java() {
  if java_ok 2>/dev/null && jackson_ok; then
    return 0
  fi
  echo "installing openjdk-17-jdk-headless and libjackson2-databind-java with apt-get" >&2
  # (default-jdk-headless where the release has no openjdk-17 any more)
  { apt-get update -qq && { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      openjdk-17-jdk-headless libjackson2-databind-java >/dev/null \
      || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      default-jdk-headless libjackson2-databind-java >/dev/null; }; } || true
  if ! java_ok 2>/dev/null || ! jackson_ok; then
    echo "a JDK 17+ (javac) and libjackson2-databind-java are needed and could not be installed" >&2
    return 1
  fi
}
