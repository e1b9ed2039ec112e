"""`import trueup` and `import trueup.sinks` need no sinks extra; the sinks that need one say so."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_trueup_and_its_sinks_import_without_the_sinks_extra() -> None:
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'nats', 'apprise', 'prometheus_client'}:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import trueup, trueup.sinks\n"
        "from trueup.sinks import NatsConfig, NatsSink, WebhookConfig, WebhookSink\n"
        "from trueup.domain.errors import ConfigError\n"
        "WebhookSink(WebhookConfig(url='http://127.0.0.1:1/x', secret='k'))\n"
        "try:\n"
        "    NatsSink(NatsConfig())\n"
        "except ConfigError as e:\n"
        "    print('ok', e)\n"
    )
    result = subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert result.stdout.startswith("ok the NATS sink needs its extra: pip install 'trueup[sinks]'"), (
        result.stderr
    )
