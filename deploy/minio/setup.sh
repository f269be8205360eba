#!/bin/sh
# Gives the platform an access key of its own that can use the cellcommons-* buckets and nothing else.
set -eu
mc alias set local https://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc admin policy create local cellcommons /cellcommons-policy.json
mc admin user add local "$S3_ACCESS_KEY" "$S3_SECRET_KEY"
mc admin policy attach local cellcommons --user "$S3_ACCESS_KEY" || true  # already attached on a re-run
