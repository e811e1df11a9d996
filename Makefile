# The two commands of the README. Everything lands in .venv; embedded state in ./var.
.PHONY: install up test

install:
	scripts/install.sh

up: install
	.venv/bin/graft up

test:
	scripts/test.sh
