-- Runs once on an empty volume: the auth app keeps its users in a second database.
CREATE DATABASE mlflow_auth OWNER mlflow;
