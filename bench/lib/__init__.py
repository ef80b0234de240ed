"""The benchmark's pieces: the stack it uses (stack.py, mariadb.py), its dataset, the ceilings,
the seed-shaped baseline, contender D (batch_loop.py), esupdater and D end to end (e2e.py),
CPU sampling (cpu.py), latency, freshness through MariaDB and Canal, backfill and verify
(table_commands.py), the machine and the report. The commands that put them together are
bench/run.py and bench/soak.py."""
