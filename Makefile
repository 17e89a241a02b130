# The two commands a newcomer needs; each installs what it uses first.
.PHONY: demo test bench

demo:
	scripts/bootstrap demo
	.venv/bin/pli demo

test:
	scripts/bootstrap test
	.venv/bin/python -m pytest -q

bench:
	scripts/bootstrap test
	.venv/bin/python bench/relay_throughput.py
