"""``python -m bundler``: the same CLI as the ``bundler`` console script."""

from bundler.cli.main import run

run()
