"""The pgplug command line."""


def main(argv=None) -> int:
    raise SystemExit("not yet")
