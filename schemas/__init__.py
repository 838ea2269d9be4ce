"""parcours' configuration, JSON Schemas and ClickHouse DDL, installed with the package as
`parcours_schemas` (package data, read through importlib.resources). See README.md here."""
