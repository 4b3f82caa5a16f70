"""JSON Schemas of the documents bundler reads and writes (shipped as package data)."""
