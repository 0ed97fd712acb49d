"""The report in the Prefect UI, on a real `prefect server` and in headless Chromium: the run
page's Artifacts tab shows the charts artifact with the headline figures, and its page shows
the main chart (a PNG in the markdown, drawn by the browser at its full size)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser import chromium
from tests.deploy.test_deployments import BIN, _cli, _free_port, _start, _stop
from tests.deploy.test_deployments import project as project  # the fixture: a copy of the project


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A Prefect server whose UI knows where its API is (PREFECT_UI_API_URL: not port 4200)."""
    home = tmp_path_factory.mktemp("prefect-ui-home")
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    server = _start(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        home,
        home / "server.log",
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, (home / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Prefect server did not start"
            time.sleep(0.5)
        yield env
    finally:
        _stop(server)


def _latest_flow_run(env: dict[str, str]) -> str:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}),
        get_client(sync_client=True) as client,
    ):
        (run,) = client.read_flow_runs()
        return str(run.id)


IMAGES_JS = """[...document.querySelectorAll('img')]
  .filter(i => i.src.startsWith('data:image/png;base64,') && i.complete && i.naturalWidth > 0)
  .map(i => [i.naturalWidth, i.getBoundingClientRect().width, i.getBoundingClientRect().height])"""


def test_the_artifacts_tab_shows_the_report_chart(ui_server, project, tmp_path) -> None:
    env = ui_server
    ran = _cli(env, project, str(BIN / "tablebatch"), "run", "configs/review-sentiment.yaml")
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "accuracy 100.0%" in ran.stdout
    url = env["PREFECT_API_URL"].removesuffix("/api")
    run_id = _latest_flow_run(env)

    with chromium() as new_page:
        page = new_page()
        page.goto(f"{url}/runs/flow-run/{run_id}")
        page.wait_for("document.getElementById('artifacts') !== null")
        page.evaluate("document.getElementById('artifacts').click()")
        card = page.wait_for(
            """(() => { const a = [...document.querySelectorAll('#artifacts-content a')]
              .find(a => a.textContent.includes('review-sentiment-charts')
                && a.textContent.includes('accuracy'));  // the card and its description
              return a && [a.getAttribute('href'), a.textContent] })()"""
        )
        page.screenshot(tmp_path / "artifacts-tab.png")
        assert "accuracy 100.0%" in card[1] and "macro-F1 100.0%" in card[1]  # on the card
        page.evaluate(
            """[...document.querySelectorAll('#artifacts-content a')]
              .find(a => a.textContent.includes('review-sentiment-charts')).click()"""
        )
        images = page.wait_for(IMAGES_JS)
        shot = page.screenshot(tmp_path / "artifact.png")
        assert page.evaluate("location.pathname") == card[0]
        ((natural, width, height),) = images
        assert natural > 300 and width > 150 and height > 100
        assert "accuracy" in page.evaluate("document.body.innerText")
        requests = page.requests()
    assert shot.stat().st_size > 20_000
    assert all(u.startswith((url, "data:", f"blob:{url}")) for u in requests), [
        u for u in requests if not u.startswith((url, "data:", f"blob:{url}"))
    ]
    assert Path(project / "data/output/review-sentiment.parquet.report.html").exists()
