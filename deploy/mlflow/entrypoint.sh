#!/bin/sh
# Write the basic-auth config from the environment (MLflow's ini does not expand variables), so
# no password lives in a file in the repository, then start MLflow's own server with it.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD (first start creates the admin)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY}"
DB="postgresql+psycopg2://mlflow:${POSTGRES_PASSWORD}@postgres:5432"
umask 077
cat > /tmp/basic_auth.ini <<INI
[mlflow]
default_permission = ${MLFLOW_DEFAULT_PERMISSION:-READ}
database_uri = ${DB}/mlflow_auth
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
INI
export MLFLOW_AUTH_CONFIG_PATH=/tmp/basic_auth.ini
exec mlflow server \
    --backend-store-uri "${DB}/mlflow" \
    --serve-artifacts --artifacts-destination "s3://${ARTIFACT_BUCKET:-mlflow}/artifacts" \
    --app-name basic-auth \
    --host 0.0.0.0 --port 5000 --workers "${MLFLOW_WORKERS:-4}" \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:*,127.0.0.1:*,mlflow:*}"
