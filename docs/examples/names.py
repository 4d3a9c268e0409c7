"""Named objects: unrelated processes of one user find an Event by name."""

import subprocess
import sys

import mpevent

if __name__ == "__main__":
    with mpevent.Event("docs-example-ready", create=True) as ready:
        # Any other process, even one not started by us, can open it by name;
        # here the command line sets it.
        subprocess.run([sys.executable, "-m", "mpevent", "set", "docs-example-ready"], check=True)
        print("set by another process:", ready.wait(timeout=30))
        ready.remove_name()
