"""A first pipeline: fetch, two builds in parallel, and a pinned summary.

Run it with:

    python -m pipeline_actors examples/quickstart.py --local-workers 4
"""

import platform
import sys
import time

from pipeline_actors import Module


class Fetch(Module):
    """Pretend to fetch sources; the result is what the builds read."""

    def execute(self, ctx):
        ctx.log.info("fetching sources")
        time.sleep(0.3)
        return {"files": ["core.py", "cli.py", "util.py"]}


class BuildDocs(Module):
    depends_on = [Fetch]

    def execute(self, ctx):
        files = ctx.result(Fetch)["files"]
        print(f"rendering {len(files)} pages")
        time.sleep(0.5)
        return len(files)


class BuildPackage(Module):
    depends_on = [Fetch]

    def execute(self, ctx):
        ctx.run(
            sys.executable, "-c", "print('compiling on', __import__('os').getpid())"
        )
        time.sleep(0.5)
        return f"package-1.0-{platform.machine()}.tar.gz"


class Summary(Module):
    """Runs in the master's process, because it reports on the whole run."""

    depends_on = [BuildDocs, BuildPackage]
    pin_to_master = True

    def execute(self, ctx):
        pages = ctx.result(BuildDocs)
        package = ctx.result(BuildPackage)
        print(f"{pages} pages of docs and {package}")
        return {"pages": pages, "package": package}
