"""SB3 interop: opening SB3-format zips, zoo-style configs, evaluation and behavioural cloning."""
