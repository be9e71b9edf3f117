"""Speed paths: alternatives to SB3's own code, each proven equal on the configurations where it engages."""
