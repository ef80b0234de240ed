"""A handler package that registers no handler (a wrong `[handlers] package`, say)."""
