"""Adapters for the formats of upstream oellm-eval (OpenEuroLLM/oellm-eval): each module turns one of its
files or spellings into oellm's own types at the edge, so the core never asks where a file came from."""
