#!/bin/sh
# Run once by the postgres image on an empty data volume
# (/docker-entrypoint-initdb.d): POSTGRES_DB (Dagster's) exists already; this
# adds MLflow's database, owned by the same role.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -c "CREATE DATABASE \"$MLFLOW_DB\" OWNER \"$POSTGRES_USER\""
