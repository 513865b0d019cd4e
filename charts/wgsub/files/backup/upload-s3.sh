#!/bin/sh
# Uploads the dump in $BACKUP_DIR to s3://$S3_BUCKET/$S3_PREFIX (any S3-compatible endpoint,
# $S3_ENDPOINT), then keeps the newest $KEEP dumps under that prefix and deletes older ones.
set -eu
cd "$BACKUP_DIR"
for name in wgsub-ledger-*.dump; do
  [ -e "$name" ] || { echo "no dump to upload" >&2; exit 1; }
  aws --endpoint-url "$S3_ENDPOINT" s3 cp --only-show-errors "$name" "s3://$S3_BUCKET/$S3_PREFIX$name"
  echo "uploaded $name to s3://$S3_BUCKET/$S3_PREFIX$name"
done
keys="$(aws --endpoint-url "$S3_ENDPOINT" s3api list-objects-v2 --bucket "$S3_BUCKET" \
  --prefix "${S3_PREFIX}wgsub-ledger-" --query 'Contents[].Key' --output text)"
# Newest first (the names carry the UTC time); everything after the first $KEEP goes.
printf '%s\n' "$keys" | tr '\t' '\n' | grep -E 'wgsub-ledger-[0-9]{8}T[0-9]{6}Z\.dump$' | sort -r |
  tail -n +"$((KEEP + 1))" | while read -r old; do
    aws --endpoint-url "$S3_ENDPOINT" s3 rm --only-show-errors "s3://$S3_BUCKET/$old"
    echo "deleted s3://$S3_BUCKET/$old (keeping the newest $KEEP)"
  done
