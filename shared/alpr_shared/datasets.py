"""Where the labelled photos live: the `data/` folder of the `shared/` directory beside the checkout
(`../shared/data/openalpr-benchmarks/…`), read in place and never copied into the repository.

`$ALPR_DATA_DIR` names that `data/` folder explicitly; otherwise it is searched for upwards from the
working directory and from this package, so a clone anywhere under the same parent finds it.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV_VAR = "ALPR_DATA_DIR"


def data_root() -> Path:
    """The shared `data/` folder. Raises `FileNotFoundError` saying how to point at it."""
    explicit = os.environ.get(DATA_ENV_VAR)
    if explicit:
        root = Path(explicit)
        if not root.is_dir():
            raise FileNotFoundError(f"${DATA_ENV_VAR}={explicit} is not a directory")
        return root
    cwd = Path.cwd().resolve()
    here = Path(__file__).resolve()
    for base in (cwd, *cwd.parents, *here.parents):
        candidate = base / "shared" / "data"
        if (candidate / "openalpr-benchmarks").is_dir():
            return candidate
    raise FileNotFoundError(
        "cannot find the labelled data (shared/data/openalpr-benchmarks beside the checkout); "
        f"set ${DATA_ENV_VAR} to the folder that holds openalpr-benchmarks/"
    )


def openalpr_benchmarks() -> Path:
    """`…/data/openalpr-benchmarks` (us/, eu/, plate-crops-us/)."""
    return data_root() / "openalpr-benchmarks"
