"""The README and the runbook name every setting, operator command and metric there is."""

from __future__ import annotations

from shared import metrics
from shared.config import Settings
from tests.support.services import ROOT


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration"):]
    names = [f.upper() for f in Settings.__dataclass_fields__]
    missing = [name for name in names if f"| `{name}` |" not in table]
    assert not missing, f"README configuration table lacks {missing}"


def test_operator_commands_and_metrics_are_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    runbook = (ROOT / "docs" / "operations.md").read_text()
    for command in ("wapair status", "wapair reset", "wapair drain", "wapair worker-check"):
        assert command in readme and command in runbook, command
    undocumented = [name for name in metrics.METRIC_NAMES if name not in runbook]
    assert not undocumented, undocumented
