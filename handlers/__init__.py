"""Example handlers for a small shop: users, and orders sharded into orders_0..orders_3.

Every module in this package is imported by `esupdater run`, so `@on` registers it.
"""
