"""Where a run's artifacts lie on this machine, found from the output folder rather than from the store.

The embedded store records absolute artifact locations (``file:///<output when written>/mlartifacts/
<experiment>/<run>/artifacts``). An output folder that was moved, copied or rsynced off a cluster must
read (and a resumed sweep write) its own artifacts, never the old path: a location under the
``mlartifacts`` folder is therefore taken relative to the output folder in use. A location elsewhere
(an artifact root outside the output) is taken as written; a server's (``mlflow-artifacts:``, ``s3:``)
is not local at all, and its reader goes through MLflow.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

ARTIFACT_ROOT = "mlartifacts"  # the embedded store's artifact root, a folder of the output


def local_artifact_dir(artifact_uri: str | None, output: Path | None) -> Path | None:
    """The folder of a run's artifacts as the output folder in use holds them; None when they are not
    on a local disk (a tracking server's proxied or object-store artifacts)."""
    if not artifact_uri or not artifact_uri.startswith("file:"):
        return None
    path = Path(unquote(urlparse(artifact_uri).path))
    if output is None:
        return path
    parts = path.parts
    if ARTIFACT_ROOT not in parts:
        return path
    last = len(parts) - 1 - parts[::-1].index(ARTIFACT_ROOT)
    return Path(output).joinpath(*parts[last:])
