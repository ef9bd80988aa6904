"""A tool module that imports in the driver but not in Ray's workers, as a package installed only where the
mission was submitted."""

import sys

if any("default_worker" in arg for arg in sys.argv):
    raise ModuleNotFoundError("No module named 'only_on_the_driver'", name="only_on_the_driver")


def shout(text: str) -> str:
    """The text in capitals."""
    return text.upper()
