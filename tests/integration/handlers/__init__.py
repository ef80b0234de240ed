"""Handler modules the integration tests run in the real `esupdater run`, one per behaviour.

A test names one (`await new_service("users_plain")`); the harness copies that file into the
test's working directory as the handler package `itest_handlers` (so its handlers are named
`itest_handlers:sync_user`, as a user's would be), copies `params.py` beside it and writes
`params.json` with the test's index, working directory and parameters. Nothing here is
imported by the test process itself: `@on` would register into its default registry.
"""
