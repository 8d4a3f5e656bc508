#!/usr/bin/env bash
# Set up a fresh machine for Eddy: a virtualenv with Eddy installed and redis-server (what
# `make demo` needs); with --dev also the dev tools, chromium (the live-page test), java and
# the Apache Kafka jars (the fault tests), for `make test`.
# Usage: infra/bootstrap.sh [VENV_DIR] [--dev]   (idempotent)
set -euo pipefail
venv="${1:-.venv}"
dev="${2:-}"
cd "$(dirname "$0")/.."

python=""
for candidate in python3.13 python3.12 python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"; break
  fi
done
if [ -z "$python" ]; then
  echo "error: Eddy needs Python >= 3.11 (python3.11 or newer on PATH)" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtualenv $venv with $python"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip 2>/dev/null || true
if [ "$dev" = "--dev" ]; then
  echo "installing Eddy and its dev tools into $venv"
  "$venv/bin/python" -m pip install --quiet -e ".[dev]"
else
  echo "installing Eddy into $venv"
  "$venv/bin/python" -m pip install --quiet -e .
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis-server not found: installing it"
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo dnf install -y -q redis
  elif command -v brew >/dev/null 2>&1; then
    brew install redis
  else
    echo "error: install redis-server with your package manager and re-run" >&2
    exit 1
  fi
fi
if [ "$dev" != "--dev" ]; then
  touch "$venv/.installed" "$venv/.installed-dev"
  exit 0
fi
if ! command -v chromium >/dev/null 2>&1; then
  # Headless browser for the live-page test (Playwright drives it; no browser download).
  echo "chromium not found: installing it"
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo dnf install -y -q chromium
  else
    echo "warning: install chromium (on PATH as \`chromium\`) for the live-page test" >&2
  fi
fi
# Apache Kafka for the tests on a real broker and `eddy dev up --broker kafka`: java >= 17
# runs it, mvn fetches its jars from Maven Central once (infra/kafka/pom.xml).
java_major() {  # 17 for "17.0.15", 8 for "1.8.0_292", 0 without a java
  local v
  v="$(java -version 2>&1 | sed -n 's/.* version "\([0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p' |
    head -n 1 | awk '{ print ($1 == 1 ? $2 : $1) }')" || true
  echo "${v:-0}"
}
missing=""
command -v java >/dev/null 2>&1 && [ "$(java_major)" -ge 17 ] || missing="default-jre-headless"
command -v mvn >/dev/null 2>&1 || missing="$missing maven"
if [ -n "$missing" ]; then
  echo "java >= 17 / mvn not found: installing$missing"
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    # shellcheck disable=SC2086  # $missing is a list of package names
    $sudo apt-get update -qq &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "warning: install java (>= 17) and maven for the Apache Kafka broker" >&2
  fi
fi
if [ "$(java_major)" -lt 17 ]; then
  echo "warning: no java >= 17 on PATH; the Apache Kafka broker will not start" >&2
fi
# Pre-fetch the broker's jars (a no-op once .eddy/kafka-lib holds this pom's version).
if ! "$venv/bin/python" -m infra.apache_kafka fetch >/dev/null; then
  echo "warning: could not fetch the Apache Kafka jars; the Apache Kafka tests will fail" >&2
fi
touch "$venv/.installed" "$venv/.installed-dev"
