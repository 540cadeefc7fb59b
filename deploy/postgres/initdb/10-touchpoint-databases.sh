#!/usr/bin/env bash
# One database and one login role per service, each role owning only its database.
#
# The official postgres image runs this once, on an empty data directory, from
# /docker-entrypoint-initdb.d (as the superuser, over the local socket). It reads only environment
# variables, so tests/test_deploy_topology.py runs the same file against a local PostgreSQL
# (PGHOST/PGPORT pointing at it).
#
#   POSTGRES_USER, POSTGRES_DB           superuser and its database (set by the image)
#   <SERVICE>_DB_PASSWORD                password of each service's role, from .env
set -euo pipefail

for service in contacts interactions followups gateway; do
  password_var="${service^^}_DB_PASSWORD"
  password="${!password_var:?${password_var} is not set (see deploy/.env.example)}"
  # psql variables (:'name', :"name") quote the values: a password is never spliced into SQL text.
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    -v role="${service}" -v password="${password}" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN PASSWORD :'password';
SELECT format('CREATE DATABASE %I OWNER %I', :'role', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'role') \gexec
-- Only the owner (and the superuser) may connect: a service cannot read another service's tables.
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
