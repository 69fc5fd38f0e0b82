"""What every command of the project shares (stage one, stage two, evaluation, data_prep, conversion, the recipe's
tasks): how bad input ends a command (`cli.errors`). It imports no other project package, so all may import it."""
