"""The benchmark's pieces: the stack it uses, its dataset, the ceilings, the seed-shaped
baseline, esupdater end to end, latency, the machine and the report. The commands that put
them together are bench/run.py and bench/soak.py."""
