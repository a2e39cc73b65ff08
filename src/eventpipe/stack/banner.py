"""What `eventpipe up` prints once it accepts MQTT and HTTP: the `ready` line scripts wait for, and how to try it."""

from __future__ import annotations

import shlex

from eventpipe.config import Settings
from eventpipe.port import address
from eventpipe.redaction import redact
from eventpipe.stack.certificate import TlsFiles
from eventpipe.stack.credential import FILE_NAME


def announce(
    settings: Settings,
    mqtt_url: str,
    api_url: str,
    prometheus_url: str | None,
    generated: tuple[str, bool] | None,
    tls: TlsFiles | None,
) -> None:
    """`mqtt_url`: where producers publish; `generated`: the key `up` made (and whether it made it at this
    start), when the user set none."""
    print(
        f"eventpipe ready: mqtt={redact(mqtt_url)} api={api_url} "
        f"metrics=http://{address(settings.metrics_host, settings.metrics_port)}/metrics "
        + (f"prometheus={prometheus_url} " if prometheus_url else "")
        + f"data={settings.data_dir.resolve()}",
        flush=True,
    )
    shown = "<a key of EVENTPIPE_API_KEYS or EVENTPIPE_API_KEYS_FILE>"
    if generated:
        # The user's own keys are never echoed. A generated one is shown once, when it is made, for the user
        # to copy; at every later start, where output may go to a journal, its file is named instead.
        key, made = generated
        kept = settings.data_dir.resolve() / FILE_NAME
        if made:
            shown = key
            print(f"API key (generated, kept in {kept}; set EVENTPIPE_API_KEYS to choose your own): {key}", flush=True)
        else:
            shown = f"$(cat {shlex.quote(str(kept))})"
            print(
                f"API key: kept in {kept} since an earlier start (set EVENTPIPE_API_KEYS to choose your own)",
                flush=True,
            )
    trust = ""
    if tls:
        print(f"TLS: clients trust the local CA {tls.ca.resolve()}", flush=True)
        trust = f"--cacert {shlex.quote(str(tls.ca.resolve()))} "
    print(f"try: curl {trust}-H \"Authorization: Bearer {shown}\" '{api_url}/events?limit=5'", flush=True)
