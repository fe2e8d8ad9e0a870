"""The benchmark and the tools that measure the chat from outside: `python -m bench` (run.py) and
its comparison servers, the database and worker benchmarks, and the randomized fault run."""
