"""What every command of the project shares (stage one, stage two, evaluation, data_prep, conversion, the recipe and
its tasks): the typed configuration layer (`cli.config`: config dataclasses from JSON/YAML files and `field=value`
overrides, types and declared ranges checked, unknown names refused with the closest valid one) and how bad input
ends a command (`cli.errors`: one `error:` line, exit code 2, `--debug` for the traceback). It imports no other
project package, so all may import it."""
