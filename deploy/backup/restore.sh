#!/bin/sh
# Restores a backup set made by backup.sh (docs/backups.md): each database of the set is dropped and
# recreated from its dump (its owner and grants included). Stop the services first: the drop ends every
# connection to the database.
#
#   restore.sh            the newest set in BACKUP_DIR
#   restore.sh SET        that set (a directory name under BACKUP_DIR, e.g. 20261206T030000Z)
#   restore.sh SET DB...  only those databases of the set
#
# Connection: the libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD), as the superuser.
set -eu
dir=${BACKUP_DIR:-/backups}
set_name=${1:-$(find "$dir" -mindepth 1 -maxdepth 1 -type d -name '20*' -exec basename {} \; | sort | tail -n 1)}
[ $# -gt 0 ] && shift
if [ -z "$set_name" ] || [ ! -d "$dir/$set_name" ]; then
  echo "no backup set '${set_name}' in $dir" >&2
  exit 66
fi
if [ $# -gt 0 ]; then
  databases="$*"
else
  databases=$(find "$dir/$set_name" -name '*.dump' -exec basename {} .dump \; | sort)
fi
for database in $databases; do
  dump="$dir/$set_name/$database.dump"
  [ -f "$dump" ] || { echo "$dump: no such dump" >&2; exit 66; }
  # psql variables quote the name: it is never spliced into SQL text.
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --dbname=postgres -v database="$database" <<'SQL'
DROP DATABASE IF EXISTS :"database" WITH (FORCE);
SQL
  pg_restore --exit-on-error --create --dbname=postgres "$dump"
  echo "restored $database from $set_name"
done
