"""Curated schema of the raw examples (schema.pbtxt), and the script that writes it."""
