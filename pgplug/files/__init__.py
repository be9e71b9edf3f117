"""Reading and writing the files users open and keep: model zips, pickles, YAML, atomic saves."""
