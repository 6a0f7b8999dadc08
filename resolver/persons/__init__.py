"""Persons from clusters: the person tables, golden records (survivorship) and stitched anonymous visitors."""
