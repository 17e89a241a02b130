# The two commands a newcomer needs; each installs what it uses first.
.PHONY: demo test bench mutation

demo:
	scripts/bootstrap demo
	.venv/bin/pli demo

test:
	scripts/bootstrap test
	.venv/bin/ruff check gateway tests bench scripts
	.venv/bin/mypy gateway
	.venv/bin/python -m pytest -q

bench:
	scripts/bootstrap test
	.venv/bin/python bench/relay_throughput.py --rounds 3 --floor --postfix
	.venv/bin/python bench/large_message.py

# Not part of `make test`: mutates the modules that hold the README's guarantees (see
# [tool.mutmut] in pyproject.toml) and says which mutants the tests did not kill.
# MUTANTS='gateway.spool.*' mutates one part and keeps what earlier runs found.
mutation:
	scripts/bootstrap test
	.venv/bin/python -m pip install -q "mutmut==3.8.1"
	[ -n "$(MUTANTS)" ] || rm -rf mutants
	set -f; .venv/bin/mutmut run --max-children 2 $(MUTANTS)
	.venv/bin/mutmut results
