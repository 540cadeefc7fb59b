#!/bin/sh
# Logical backups of every service's database (compose's `backup` service; docs/backups.md).
#
#   backup.sh once    one backup set now: BACKUP_DIR/<UTC time>/<database>.dump, one `pg_dump -Fc` each
#   backup.sh loop    a set now, then one every BACKUP_INTERVAL_S seconds; sets older than BACKUP_KEEP_DAYS go
#   backup.sh check   exit 0 if the newest set is younger than two intervals (the healthcheck)
#
# Connection: the libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD), as the superuser. Each dump holds
# its database's definition, owner and grants (--create): restore.sh recreates the database from it.
set -eu
dir=${BACKUP_DIR:-/backups}
keep_days=${BACKUP_KEEP_DAYS:-14}
interval=${BACKUP_INTERVAL_S:-86400}
databases=${BACKUP_DATABASES:-contacts interactions followups gateway}
# Nobody but this user reads the dumps: they hold every customer's data.
umask 077

# Each step checks its own failure: called as `backup_once || …` (loop), the shell ignores `set -e` inside.
backup_once() {
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  partial="$dir/.partial-$stamp"
  mkdir -p "$partial" || return 1
  for database in $databases; do
    pg_dump --format=custom --create --dbname="$database" --file="$partial/$database.dump" || return 1
  done
  # A set appears whole or not at all: restore.sh never sees a half-written one.
  mv "$partial" "$dir/$stamp" || return 1
  find "$dir" -mindepth 1 -maxdepth 1 -type d -name '20*' -mtime +"$keep_days" -exec rm -rf {} +
  find "$dir" -mindepth 1 -maxdepth 1 -type d -name '.partial-*' -mmin +1440 -exec rm -rf {} +
  echo "backup $stamp: $databases"
}

case "${1:-loop}" in
  once)
    backup_once
    ;;
  loop)
    # As PID 1 of its container the shell has no default action for SIGTERM: stop at once, between dumps.
    sleeper=""
    trap '[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; exit 0' TERM INT
    while true; do
      # A failed round (PostgreSQL away) is logged and retried at the next one; the healthcheck turns red.
      backup_once || echo "backup failed: the next attempt in ${interval}s" >&2
      # Short sleeps in the background: the trap runs at once, and no sleep outlives the shell for long.
      next=$(($(date +%s) + interval))
      while [ "$(date +%s)" -lt "$next" ]; do
        sleep 10 &
        sleeper=$!
        wait "$sleeper" || true
      done
    done
    ;;
  check)
    minutes=$((interval * 2 / 60 + 1))
    [ -n "$(find "$dir" -mindepth 1 -maxdepth 1 -type d -name '20*' -mmin -"$minutes" 2>/dev/null)" ]
    ;;
  *)
    echo "usage: backup.sh once|loop|check" >&2
    exit 64
    ;;
esac
