"""kube-meshy tasks: `inv --list` for the manual, `inv --help TASK` for one task.

Each collection is a module under meshy/tasks/; the logic they call lives in
the meshy package and is tested without invoke.
"""

from invoke import Collection

from meshy.tasks import local

namespace = Collection()
namespace.add_collection(Collection.from_module(local))
