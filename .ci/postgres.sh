#!/usr/bin/env bash
# Start a local PostgreSQL server with a `lightopt` user and database for the distributed-sweep test.
# Prints the URL to use as LIGHTOPT_TEST_POSTGRES_URL. Idempotent.
set -euo pipefail
if ! command -v psql >/dev/null || [ ! -d /etc/postgresql ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq postgresql >/dev/null
fi
service postgresql start >/dev/null
for _ in $(seq 30); do su postgres -c "pg_isready -q" && break; sleep 1; done
su postgres -c "psql -q" <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lightopt') THEN
    CREATE ROLE lightopt LOGIN PASSWORD 'lightopt' CREATEDB;
  END IF;
END $$;
SQL
su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname = 'lightopt'\"" | grep -q 1 \
    || su postgres -c "createdb -O lightopt lightopt"
echo "postgresql://lightopt:lightopt@localhost:5432/lightopt"
