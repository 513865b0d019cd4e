#!/bin/sh
# The ledger's dump (pg_dump custom format, what scripts/restore-ledger restores) into
# $BACKUP_DIR, named by its UTC time so names sort by age. Written under a temporary name and
# renamed when complete, so a failed run leaves no file that looks like a backup. With $KEEP set
# (the PVC destination), the newest $KEEP dumps are kept and older ones deleted — only after this
# run's dump is complete.
set -eu
name="wgsub-ledger-$(date -u +%Y%m%dT%H%M%SZ).dump"
partial="$BACKUP_DIR/.$name.partial"
rm -f "$BACKUP_DIR"/.wgsub-ledger-*.partial
trap 'rm -f "$partial"' EXIT
pg_dump --format=custom --no-owner --no-privileges --file="$partial" --dbname="$WGSUB_DATABASE_URL"
mv "$partial" "$BACKUP_DIR/$name"
echo "wrote $name ($(wc -c <"$BACKUP_DIR/$name") bytes)"
if [ -n "${KEEP:-}" ]; then
  for dump in "$BACKUP_DIR"/wgsub-ledger-*.dump; do printf '%s\n' "${dump##*/}"; done |
    grep -E '^wgsub-ledger-[0-9]{8}T[0-9]{6}Z\.dump$' | sort -r |
    tail -n +"$((KEEP + 1))" | while read -r old; do
      rm -f -- "$BACKUP_DIR/$old"
      echo "deleted $old (keeping the newest $KEEP)"
    done
fi
