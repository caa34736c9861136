"""Nuclei across region borders: ownership, merging and outlines."""
