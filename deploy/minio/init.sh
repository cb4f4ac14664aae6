#!/bin/sh
# The `minio-init` one-shot service (minio/mc image): creates the buckets and the S3 user that the
# pipeline and the MLflow server sign in as, instead of MinIO's root account. Idempotent: safe to
# run on every `docker compose up`.
#   $MLOPS_BUCKET   the pipeline's object store (MLOPS_STORE_URI=s3://$MLOPS_BUCKET/store)
#   $MLFLOW_BUCKET  MLflow's artifacts (proxied by the MLflow server; clients never see S3)
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${S3_ACCESS_KEY_ID:?}" "${S3_SECRET_ACCESS_KEY:?}"
: "${MLOPS_BUCKET:?}" "${MLFLOW_BUCKET:?}"

mc alias set stack http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

for bucket in "$MLOPS_BUCKET" "$MLFLOW_BUCKET"; do
    mc mb --ignore-existing "stack/$bucket"
    # Private: no anonymous access, whatever was set before.
    mc anonymous set none "stack/$bucket"
done

# A policy for these two buckets only (not MinIO's built-in `readwrite`, which covers every bucket).
policy=/tmp/mlops-stack-policy.json
cat >"$policy" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
     "Resource": ["arn:aws:s3:::$MLOPS_BUCKET", "arn:aws:s3:::$MLFLOW_BUCKET"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
     "Resource": ["arn:aws:s3:::$MLOPS_BUCKET/*", "arn:aws:s3:::$MLFLOW_BUCKET/*"]}
  ]
}
EOF
mc admin policy create stack mlops-stack "$policy"

# `user add` on an existing user sets its secret key again: .env stays the one source.
mc admin user add stack "$S3_ACCESS_KEY_ID" "$S3_SECRET_ACCESS_KEY"
# `policy attach` fails when the policy is already attached; check the outcome instead.
mc admin policy attach stack mlops-stack --user "$S3_ACCESS_KEY_ID" >/dev/null 2>&1 || true
# (Shell pattern matching, not grep: the mc image is a minimal one.)
case "$(mc admin user info stack "$S3_ACCESS_KEY_ID")" in
    *mlops-stack*) ;;
    *) echo "policy mlops-stack is not attached to the pipeline's S3 user" >&2; exit 1 ;;
esac
echo "buckets $MLOPS_BUCKET and $MLFLOW_BUCKET ready; pipeline user has policy mlops-stack"
