"""Where the local stack (`make up`, stack/lib.sh) listens, for the tests, bench/ and the demo.

Each address can be pointed elsewhere by its ESUPDATER_TEST_* environment variable, e.g. to
run the integration tests against another Kafka.
"""

from __future__ import annotations

import os

KAFKA = os.environ.get("ESUPDATER_TEST_KAFKA", "127.0.0.1:9092")
ELASTICSEARCH = os.environ.get("ESUPDATER_TEST_ELASTICSEARCH", "http://127.0.0.1:9200")

#: stack/mariadb.sh's server, and the database and account it creates for tests (lib.sh).
MARIADB = os.environ.get("ESUPDATER_TEST_MARIADB", "127.0.0.1:3306")
MARIADB_DATABASE = "shop"
MARIADB_USER = os.environ.get("ESUPDATER_TEST_MARIADB_USER", "esupdater")
MARIADB_PASSWORD = os.environ.get("ESUPDATER_TEST_MARIADB_PASSWORD", "esupdater")
