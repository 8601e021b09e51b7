#!/usr/bin/env bash
# Everything Hangar needs on a fresh Debian machine: the servers and Python packages apps and
# add-ons run on (from Debian), then the npm packages and the build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

debs=(gunicorn python3-django python3-dj-database-url python3-psycopg2 python3-venv python3-pip chromium
      redis-server postgresql memcached iproute2 procps ca-certificates
      tmux pebble python3-uvicorn python3-websockets python3-celery python3-redis nginx-light
      build-essential python3 libpq-dev)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "-----> Installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -d node_modules ]] || [[ package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "-----> Installing npm packages"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "-----> Building"
npm run build --silent
