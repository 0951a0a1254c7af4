"""The `llmkit` command line: thin Typer glue that parses options, calls the library, renders
results and writes them. No method logic lives here."""
