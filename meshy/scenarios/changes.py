"""What a scenario changed on a backend it cannot snapshot (a cluster), to tell the user.

The local backend restores its resources exactly (LocalBackend.restore); on a
cluster a scenario may meet resources it did not create, so it says what it did.
"""

from __future__ import annotations

from meshy.render import RenderOptions


class RecordingBackend:
    """Passes every call to the wrapped scenario backend and notes each change it makes."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.changes: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def apply(self, template: str, options: RenderOptions | None = None) -> None:
        self.changes.append(f"kubectl apply of {template.removesuffix('.j2')}")
        self.inner.apply(template, options)

    def delete(self, template: str, options: RenderOptions | None = None) -> None:
        self.changes.append(f"kubectl delete of {template.removesuffix('.j2')}")
        self.inner.delete(template, options)

    def remove_selector_label(self, service: str, label: str) -> None:
        self.changes.append(f"removed label {label} from the selector of Service {service}")
        self.inner.remove_selector_label(service, label)

    def summary(self, build_dir: str) -> str:
        """One paragraph: the changes in order and how to undo them."""
        if not self.changes:
            return ""
        done = "; ".join(dict.fromkeys(self.changes))
        return (
            f"the scenario changed the cluster: {done}. Resources of yours with these names were replaced or removed; "
            f"re-apply your versions (the walkthrough's are in {build_dir}/) with kubectl apply -f FILE."
        )
