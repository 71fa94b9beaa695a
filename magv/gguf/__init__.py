"""Embedded models: the registry of named GGUFs and their assembly into the model cache."""
