#!/bin/sh
# Writes PgBouncer's auth file (the path the config's auth_file names) from the services' database passwords
# in the environment, readable by this user alone, then runs pgbouncer with that config in the foreground.
set -eu
config=${1:?usage: start.sh PGBOUNCER_INI}
auth_file=$(sed -n 's/^auth_file *= *//p' "$config")
umask 077
: > "$auth_file"
for role in contacts interactions followups gateway; do
  variable=$(echo "$role" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD
  eval "password=\${$variable:?$variable is not set}"
  printf '"%s" "%s"\n' "$role" "$password" >> "$auth_file"
done
exec pgbouncer "$config"
