#!/usr/bin/env bash
# PostgreSQL's server binaries (initdb, pg_ctl, postgres) for tests/infra's
# production-like test. Idempotent: does nothing when they are found on PATH or
# in /usr/lib/postgresql/<n>/bin; otherwise installs Debian's server package
# (root and apt-get needed) without creating or starting any cluster: the test
# makes its own in a temporary folder on 127.0.0.1 and stops it.
set -euo pipefail

found() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if found; then
  echo "ensure-postgres: server binaries present"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-postgres: PostgreSQL server binaries missing; install them as root (apt-get install postgresql)" >&2
  exit 1
fi
# No main cluster, and no service start, from the package's scripts.
mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/ctx-no-main-cluster.conf
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
fi
trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
found && echo "ensure-postgres: installed $(ls -d /usr/lib/postgresql/*/bin | tail -1)"
