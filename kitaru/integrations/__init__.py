"""Integrations with other frameworks; each is imported explicitly and needs its extra."""
