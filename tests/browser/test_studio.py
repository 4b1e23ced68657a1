"""The web studio in headless Chromium against the real app: what a user does from a browser only.

Few, broad stories on one app (Ray, Serve, real training and a real vLLM server are slow on two cores):
sign in (a wrong key shows the API's message) and datasets; the admin page; and the main story: fine-tune
with the loss curve growing live, compare two finished jobs, deploy base and fine-tune, and chat with both
side by side in the playground. Every page is screenshotted into the test's folder.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import Studio, StudioPage
from tests.integration.test_jobs import TINY, capitals

pytestmark = pytest.mark.integration

TRAIN_FAST_S = 240
# The job made in the browser: long enough (about 15 s of training) to span a few tracker rounds.
EPOCHS = 10
STEPS = EPOCHS * 64
DEPLOY_S = 300


def chat_row(question: str, answer: str, *, role: str = "assistant") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": role, "content": answer}]}


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def call(studio: Studio, headers: dict[str, str], method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Call the API directly: set-up and checks the story does not need the browser for."""
    with httpx.Client(base_url=studio.url, timeout=60) as http:
        return http.request(method, path, headers=headers, **kwargs)


def drop_file(page: Page, target: str, name: str, text: str) -> None:
    """Drop a file on `target` the way a drag from the desktop does (a DataTransfer with a File)."""
    transfer = page.evaluate_handle(
        """([name, text]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([text], name, {type: 'application/jsonl'}));
            return transfer;
        }""",
        [name, text],
    )
    page.dispatch_event(target, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(target, "drop", {"dataTransfer": transfer})


def points(chart: Locator) -> int:
    return int(chart.get_attribute("data-points") or 0)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def test_the_app_is_public_and_serves_its_own_files_only(studio: Studio) -> None:
    with httpx.Client(base_url=studio.url, timeout=30) as http:
        page = http.get("/studio")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert http.get("/studio/").text == page.text
        module = http.get("/studio/js/main.js")
        assert module.status_code == 200 and module.headers["content-type"].startswith("text/javascript")
        for path in ("/studio/vendor/README.md", "/studio/%2e%2e/api/app.py", "/studio/js/nothing.js"):
            missing = http.get(path)
            assert missing.status_code == 404 and missing.json()["error"]["message"], path


def test_sign_in_and_datasets(studio: Studio, studio_page: StudioPage) -> None:
    page = studio_page.page
    key, headers = studio.tenant("browser-datasets")
    # Small limits, so a small file goes through the Uploads API in parts.
    page.add_init_script("window.MINI_STUDIO_UPLOAD_SIZES = {direct: 4096, part: 2048}")

    # A wrong key: the page shows the API's own message.
    wrong = call(studio, {"Authorization": "Bearer sk-ms-wrong"}, "GET", "/v1/me").json()["error"]["message"]
    studio_page.open()
    studio_page.screenshot("sign-in")
    studio_page.sign_in("sk-ms-wrong")
    expect(page.get_by_role("alert")).to_have_text(wrong)

    studio_page.sign_in(key)
    expect(page.get_by_role("heading", name="Datasets", level=1)).to_be_visible()

    # Dropped on the drop zone: a file whose line 3 has a role the validator does not know.
    bad = jsonl([chat_row("Hi", "Hello"), chat_row("Hey", "Hello"), chat_row("Yo", "Hello", role="robot")])
    drop_file(page, "[data-testid=dropzone]", "broken.jsonl", bad)
    errors = page.get_by_role("table").filter(has_text="unrecognized_role")
    expect(errors).to_be_visible()
    line_three = errors.get_by_role("row").filter(has_text="messages[1].role")
    expect(line_three.get_by_role("cell").first).to_have_text("Line 3")
    expect(line_three).to_contain_text("robot")
    expect(page.get_by_role("progressbar")).to_have_attribute("value", "100")
    expect(page.get_by_role("article")).to_contain_text("invalid")
    studio_page.screenshot("dataset-errors")

    # Chosen with the file picker: a valid file, with its statistics and preview.
    page.get_by_label("Choose a file…").set_input_files(
        files=[{"name": "capitals.jsonl", "mimeType": "application/jsonl", "buffer": capitals(16)}]
    )
    article = page.get_by_role("article")
    expect(article.get_by_role("heading", name="capitals.jsonl")).to_be_visible()
    expect(article).to_contain_text("ready")
    expect(article.get_by_role("region", name="Statistics")).to_contain_text("Rows16")
    expect(article.locator(".preview li")).to_have_count(5)
    studio_page.screenshot("datasets")

    # A bigger file goes up in parts; a part whose connection drops is sent again.
    dropped: list[str] = []

    def drop_first_part(route: Route) -> None:
        if dropped:
            route.continue_()
        else:
            dropped.append(route.request.url)
            route.abort("connectionreset")

    page.route(re.compile(r"/v1/uploads/[^/]+/parts$"), drop_first_part)
    big = capitals(64)
    page.get_by_label("Choose a file…").set_input_files(
        files=[{"name": "big.jsonl", "mimeType": "application/jsonl", "buffer": big}]
    )
    expect(article.get_by_role("heading", name="big.jsonl")).to_be_visible()
    expect(article).to_contain_text("ready")
    expect(article.get_by_role("region", name="Statistics")).to_contain_text("Rows64")
    histogram = article.get_by_role("figure", name="Examples by tokens")
    expect(histogram).to_be_visible()  # the 64 examples counted by length
    assert histogram.locator(".hist-row").count() >= 1
    assert len(dropped) == 1

    # Delete the broken one.
    page.get_by_role("link", name="broken.jsonl").click()
    page.get_by_role("button", name="Delete…").click()
    page.get_by_role("button", name="Delete file").click()
    expect(page.get_by_role("link", name="broken.jsonl")).to_have_count(0)
    files = call(studio, headers, "GET", "/v1/files").json()["data"]
    assert sorted(f["filename"] for f in files) == ["big.jsonl", "capitals.jsonl"]
    assert next(f for f in files if f["filename"] == "big.jsonl")["bytes"] == len(big)


def test_admin_creates_a_client_and_its_key(studio: Studio, studio_page: StudioPage) -> None:
    page = studio_page.page
    studio_page.open()
    studio_page.sign_in(studio.admin["Authorization"].removeprefix("Bearer "))
    expect(page.get_by_role("heading", name="Admin", level=1)).to_be_visible()

    page.get_by_label("Client name").fill("made-in-the-browser")
    page.get_by_label("Max deployments").fill("3")
    page.get_by_role("button", name="Create client").click()
    expect(page.get_by_role("heading", name="Keys of made-in-the-browser")).to_be_visible()
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("Secret")
    expect(secret).to_have_value(re.compile(r"^sk-"))
    studio_page.screenshot("admin")

    # Limits are changed in place.
    limits = page.get_by_role("form", name="Limits of made-in-the-browser")
    expect(limits.get_by_label("Max deployments")).to_have_value("3")
    limits.get_by_label("Requests per minute").fill("120")
    limits.get_by_role("button", name="Save limits").click()
    expect(limits.get_by_role("status")).to_contain_text("Saved")

    # The secret works, and the limits were set (each replica may keep a client for a second); it is
    # shown once only.
    key = secret.input_value()

    def limits_seen() -> bool:
        me = call(studio, {"Authorization": f"Bearer {key}"}, "GET", "/v1/me").json()
        assert me["name"] == "made-in-the-browser", me
        return bool(me["limits"]["max_deployments"] == 3 and me["limits"]["requests_per_minute"] == 120)

    wait_until(limits_seen, 10, "the new limits")
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_label("Secret")).to_have_count(0)
    expect(page.get_by_role("table").filter(has_text="made-in-the-browser")).to_be_visible()


def undeploy_all(studio: Studio, headers: dict[str, str]) -> None:
    """Remove the tenant's deployments, adapters first, and wait until they are gone.

    Later tests in the session (tests/integration) expect the tiny base model not deployed.
    """
    own = call(studio, headers, "GET", "/v1/deployments").json()["data"]
    for deployment in sorted(own, key=lambda d: d["placement"] != "adapter"):
        path = f"/v1/deployments/{deployment['id']}"
        if call(studio, headers, "DELETE", path).status_code == 200:
            wait_until(lambda: call(studio, headers, "GET", path).status_code == 404, DEPLOY_S, path)  # noqa: B023


@pytest.fixture
def story_tenant(studio: Studio) -> Iterator[tuple[str, dict[str, str]]]:
    key, headers = studio.tenant("browser-story")
    yield key, headers
    undeploy_all(studio, headers)


def test_fine_tune_watch_compare_deploy_and_chat(
    studio: Studio, studio_page: StudioPage, story_tenant: tuple[str, dict[str, str]]
) -> None:
    page = studio_page.page
    key, headers = story_tenant
    file_id = call(
        studio, headers, "POST", "/v1/files", files={"file": ("capitals.jsonl", capitals())},
        data={"purpose": "fine-tune"},
    ).json()["id"]  # fmt: skip
    # An earlier, short run to compare with, started through the API.
    earlier = call(studio, headers, "POST", "/v1/fine_tuning/jobs", json={
        "model": TINY, "training_file": file_id, "suffix": "earlier",
        "hyperparameters": {"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 10},
    }).json()  # fmt: skip

    studio_page.open()
    studio_page.sign_in(key)
    studio_page.go("New fine-tune")
    page.get_by_label("Base model").select_option(TINY)
    page.get_by_label("Training file").select_option(file_id)
    expect(page.get_by_label("LoRA rank")).to_have_value("16")  # the defaults are shown
    page.get_by_label("Epochs").fill(str(EPOCHS))
    page.get_by_label("Batch size").fill("1")
    page.get_by_label("Learning-rate multiplier").fill("50")
    page.get_by_label("Suffix (optional)").fill("capitals")
    estimate = page.get_by_role("complementary", name="Estimate")
    expect(estimate.get_by_label("Estimate")).to_contain_text("Memory per worker")
    expect(estimate.get_by_role("status")).to_contain_text("Fits")
    studio_page.screenshot("new-fine-tune")
    page.get_by_role("button", name="Create fine-tuning job").click()

    # The job page: the loss curve gains points while the job runs.
    expect(page.get_by_role("heading", name=re.compile(r"^Job ftjob-"))).to_be_visible()
    job_id = page.get_by_role("heading", level=1).inner_text().removeprefix("Job ")
    chart = page.get_by_role("img", name=re.compile("loss"))
    wait_until(lambda: points(chart) > 0, TRAIN_FAST_S, "the first loss point")
    first = points(chart)
    assert first < STEPS, "the curve came in one piece, not while the job ran"
    wait_until(lambda: points(chart) > first, TRAIN_FAST_S, "more loss points")
    studio_page.screenshot("job-running")

    # Meanwhile the base model is deployed from the Deployments page (its server starts in ~30 s).
    studio_page.go("Deployments")
    page.get_by_label("Model", exact=True).select_option(TINY)
    page.get_by_role("button", name="Deploy", exact=True).click()
    base_row = page.locator(f'tr[data-model="{TINY}"]')
    expect(base_row).to_contain_text("deploying")

    page.goto(f"{studio.url}/studio#/jobs/{job_id}")
    expect(page.locator(".summary")).to_contain_text("Status: succeeded", timeout=TRAIN_FAST_S * 1000)
    expect(chart).to_have_attribute("data-points", str(STEPS), timeout=15_000)
    expect(page.get_by_role("region", name="Checkpoints").get_by_role("row")).not_to_have_count(0)
    studio_page.screenshot("job")
    with page.expect_download() as csv_file:
        page.get_by_role("button", name="Export CSV").click()
    lines = Path(csv_file.value.path()).read_text().splitlines()
    assert lines[0] == "series,step,value" and len(lines) == STEPS + 1, lines[:3]
    with page.expect_download() as png_file:
        page.get_by_role("button", name="Export PNG").click()
    assert Path(png_file.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    studio_page.go("Jobs")
    expect(page.get_by_role("row").filter(has_text=job_id)).to_contain_text("succeeded")
    studio_page.screenshot("jobs")

    # Compare the two finished runs: one chart, and the settings that differ marked.
    earlier_path = f"/v1/fine_tuning/jobs/{earlier['id']}"
    wait_until(
        lambda: call(studio, headers, "GET", earlier_path).json()["status"] == "succeeded",
        TRAIN_FAST_S,
        earlier_path,
    )
    studio_page.go("Compare")
    page.get_by_label(re.compile(job_id)).check()
    page.get_by_label(re.compile(earlier["id"])).check()
    compare_chart = page.get_by_role("img", name=re.compile("loss"))
    expect(compare_chart).to_have_attribute("data-points", str(STEPS + 8))
    table = page.get_by_role("table").filter(has_text="Learning-rate multiplier")
    expect(table.get_by_role("row", name=re.compile("^Epochs"))).to_contain_text("differs")
    expect(table.get_by_role("row", name=re.compile("^Base model"))).not_to_contain_text("differs")
    studio_page.screenshot("compare")
    page.get_by_label("epoch", exact=True).check()  # runs of different lengths side by side
    expect(page.get_by_role("figure")).to_contain_text(f"training loss: {STEPS} points, latest")
    expect(page.get_by_role("figure")).to_contain_text(f"at epoch {EPOCHS}")

    # Deploy the fine-tune from its job page once the base runs; it attaches to the base.
    studio_page.go("Deployments")
    expect(base_row).to_contain_text("ready", timeout=DEPLOY_S * 1000)
    page.goto(f"{studio.url}/studio#/jobs/{job_id}")
    page.get_by_role("button", name="Deploy the fine-tuned model").click()
    expect(page.get_by_text("Deployed:")).to_contain_text("ready", timeout=DEPLOY_S * 1000)
    tuned = call(studio, headers, "GET", f"/v1/fine_tuning/jobs/{job_id}").json()["fine_tuned_model"]
    studio_page.go("Deployments")
    expect(page.locator(f'tr[data-model="{tuned}"]')).to_contain_text("ready")
    studio_page.screenshot("deployments")

    # The playground: one prompt to both, streamed side by side.
    studio_page.go("Playground")
    page.get_by_label("Model A").select_option(TINY)
    page.get_by_label("Model B").select_option(tuned)
    page.get_by_label("Prompt", exact=True).fill("What is the capital of France?")
    page.get_by_label("Temperature").fill("0")
    page.get_by_label("Max tokens").fill("12")
    page.get_by_role("button", name="Send to both").click()
    base = page.get_by_role("region", name=TINY, exact=True)
    fine_tuned = page.get_by_role("region", name=tuned, exact=True)
    for answer in (base, fine_tuned):
        expect(answer).to_have_attribute("data-state", "done", timeout=120_000)
        expect(answer.get_by_role("alert")).to_have_count(0)
        expect(answer).to_contain_text(re.compile(r"time to first token: \d+ ms"))
    expect(fine_tuned.locator(".answer-text")).to_contain_text("Paris")
    studio_page.screenshot("playground")

    # Undeploy from the Deployments page: the adapter first (its base refuses while it is attached).
    studio_page.go("Deployments")
    page.get_by_role("button", name=f"Undeploy {tuned}").click()
    expect(page.locator(f'tr[data-model="{tuned}"]')).to_have_count(0, timeout=DEPLOY_S * 1000)
    page.get_by_role("button", name=f"Undeploy {TINY}").click()
    expect(page.locator(f'tr[data-model="{TINY}"]')).to_have_count(0, timeout=DEPLOY_S * 1000)
