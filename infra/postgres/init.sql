-- One Postgres for both servers: MLflow's store (POSTGRES_DB=mlflow, made by the image) and
-- Prefect's. Runs once, when the data volume is first initialised.
CREATE DATABASE prefect OWNER synthloop;
