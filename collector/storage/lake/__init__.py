"""The lake backend: many collectors writing one DuckLake (docs/lake.md)."""
