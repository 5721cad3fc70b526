"""L8 cli: argument parsing and printing (`convbench ...`); nothing else imports it."""
