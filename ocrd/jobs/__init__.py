"""Bulk work: OpenAI's Files and Batch APIs over an embedded SQLite store in ``state_dir``."""
