#!/bin/sh
# The HA standby: on first boot, copy the primary (pg_basebackup -R writes primary_conninfo and standby.signal),
# then run as a hot standby streaming from it. Promote it with `pg_ctl promote` (or SELECT pg_promote()) once the
# primary is stopped for good; see README, "High availability".
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  until PGPASSWORD="$POSTGRES_REPLICATION_PASSWORD" gosu postgres pg_basebackup -h postgres -U replicator \
      -D "$PGDATA" -R -X stream -c fast --application-name=standby; do
    echo "standby: waiting for the primary"; sleep 2
  done
fi
exec gosu postgres postgres -c hot_standby=on -c synchronous_commit=on
