"""The console in a real browser (Debian's headless Chromium via Selenium)
against a live Orderly at ORDERLY_URL (scripts/console_test.sh starts it).

Data is prepared through the public HTTP API; then, in the browser, an
operator signs in, sees the queues with their counts, opens a dead job whose
payload is markup (shown as text, nothing runs), redrives it and sees its lane
move on; a forged token sends them back to sign-in with a message. Along the
way it takes the screenshots in docs/console/.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

BASE = os.environ["ORDERLY_URL"].rstrip("/")
SHOTS = os.environ.get("CONSOLE_SCREENSHOTS", "docs/console")
PROFILE = os.environ.get("CONSOLE_PROFILE_DIR")
XSS = "<img src=x onerror=alert(1)>"
XSS_KEY = "<b>lane</b>"
XSS_ERROR = "<script>alert(2)</script> mailbox unavailable"
WAIT_S = 20
DESKTOP = (1280, 800)
PHONE = (390, 844)


# --- the HTTP API, for preparing data and checking outcomes -----------------

def http(method, path, body=None, token=None):
    """`method path` → (status, parsed JSON body or None)."""
    request = urllib.request.Request(BASE + path, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, data, timeout=30) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def ok(method, path, body=None, token=None, expect=(200, 201, 202)):
    status, answer = http(method, path, body, token)
    assert status in expect, f"{method} {path} → {status} {answer}"
    return answer


def jwt(claims):
    """An HS256 token signed with this run's secret, as Orderly signs them."""
    part = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")  # noqa: E731
    signing_input = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(claims)
    secret = os.environ["CONSOLE_JWT_SECRET"].encode()
    signature = base64.urlsafe_b64encode(hmac.new(secret, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


def expired_token(data):
    """A correctly signed token for the user that expired a minute ago."""
    user = ok("GET", "/v1/auth/me", token=data.token)["id"]
    now = int(time.time())
    fresh = jwt({"sub": user, "iat": now, "exp": now + 600, "iss": "orderly"})
    assert http("GET", "/v1/auth/me", token=fresh)[0] == 200, "the minted token is not Orderly's"
    expired = jwt({"sub": user, "iat": now - 3600, "exp": now - 60, "iss": "orderly"})
    assert http("GET", "/v1/auth/me", token=expired)[0] == 401
    return expired


class Data:
    """What the API prepared: the user, the queues, the dead job."""

    def __init__(self):
        self.email = f"operator-{uuid.uuid4().hex[:8]}@example.com"
        self.password = "correct horse battery"
        ok("POST", "/v1/auth/register", {"email": self.email, "password": self.password})
        self.token = ok("POST", "/v1/auth/login", {"email": self.email, "password": self.password})["access_token"]
        t = self.token
        ok("PUT", "/v1/queues/emails", {"delivery": {"mode": "pull"}, "max_attempts": 1}, t)
        ok("PUT", "/v1/queues/invoices", {"delivery": {"mode": "pull"}, "max_attempts": 5}, t)

        # emails: the markup job heads its own lane; it is claimed and nacked → dead.
        self.dead_id = ok("POST", "/v1/queues/emails/jobs", {"payload": XSS, "key": XSS_KEY}, t)["id"]
        batch = [{"payload": {"to": f"user{n}@example.com", "template": "welcome"}, "key": f"user-{n % 3}"} for n in range(6)]
        ok("POST", "/v1/queues/emails/jobs/batch", {"jobs": batch}, t)
        claimed = ok("POST", "/v1/queues/emails/claim", {"max_jobs": 10, "wait_ms": 0}, t)["jobs"]
        by_id = {job["id"]: job for job in claimed}
        assert self.dead_id in by_id, f"the markup job was not claimed: {claimed}"
        for job in claimed:
            if job["id"] == self.dead_id:
                nacked = ok("POST", f"/v1/jobs/{job['id']}/nack", {"lease": job["lease"], "error": XSS_ERROR}, t)
                assert nacked["state"] == "dead", nacked
            else:
                ok("POST", f"/v1/jobs/{job['id']}/ack", {"lease": job["lease"], "result": {"sent": True}}, t)

        # webhooks: attempts run out → the lane blocks behind its head.
        ok("PUT", "/v1/queues/webhooks", {"delivery": {"mode": "pull"}, "max_attempts": 1, "on_exhausted": "block"}, t)
        hooks = [{"payload": {"event": "invoice.paid", "n": n}, "key": "acct-7"} for n in range(2)]
        self.blocked_id, self.behind_id = [j["id"] for j in ok("POST", "/v1/queues/webhooks/jobs/batch", {"jobs": hooks}, t)["jobs"]]
        [head] = ok("POST", "/v1/queues/webhooks/claim", {"max_jobs": 1, "wait_ms": 0}, t)["jobs"]
        assert head["id"] == self.blocked_id, head
        nacked = ok("POST", f"/v1/jobs/{head['id']}/nack", {"lease": head["lease"], "error": "HTTP 410 from receiver"}, t)
        assert nacked["state"] == "blocked", nacked

        # invoices: some throughput, some waiting.
        invoices = [{"payload": {"invoice": 1000 + n, "amount_cents": 1250 * n}, "key": f"customer-{n % 4}"} for n in range(12)]
        ok("POST", "/v1/queues/invoices/jobs/batch", {"jobs": invoices}, t)
        for job in ok("POST", "/v1/queues/invoices/claim", {"max_jobs": 4, "wait_ms": 0}, t)["jobs"]:
            ok("POST", f"/v1/jobs/{job['id']}/ack", {"lease": job["lease"], "result": {"paid": True}}, t)


# --- the browser -----------------------------------------------------------

def browser(profile_dir):
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile_dir}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
        "--hide-scrollbars",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))


def until(what, condition, timeout=WAIT_S):
    """Polls `condition` until it returns something truthy, or fails naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except StaleElementReferenceException as e:  # redrawn between find and read
            last = e
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last})")


def text_of(driver, css):
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def states(driver, css):
    """The state badges in the table under `css`, in row order."""
    return [b.text for b in driver.find_elements(By.CSS_SELECTOR, f"{css} td .badge")]


def notice(driver):
    return text_of(driver, "#notice")


def click(driver, css):
    until(f"{css} to be clickable", lambda: driver.find_elements(By.CSS_SELECTOR, css))[0].click()


def viewport(driver, size):
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500},
    )


def screenshots(driver, name, ready):
    """`docs/console/<name>-desktop.png` and `-phone.png`, each once `ready()` holds."""
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        viewport(driver, size)
        until(f"{name} ready at {label} size", ready)
        driver.execute_script("window.scrollTo(0, 0)")
        path = os.path.join(SHOTS, f"{name}-{label}.png")
        assert driver.get_screenshot_as_file(path), path
        print(f"  screenshot {path}")
    viewport(driver, DESKTOP)


def no_alert(driver):
    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    raise AssertionError(f"an alert fired: {text}")


def sign_in(driver, data):
    driver.get(BASE + "/console")
    driver.execute_script("sessionStorage.clear()")
    driver.get(BASE + "/console#/signin")
    until("the sign-in form", lambda: driver.find_elements(By.CSS_SELECTOR, "form.signin"))
    driver.find_element(By.ID, "email").send_keys(data.email)
    driver.find_element(By.ID, "password").send_keys(data.password)
    driver.find_element(By.ID, "signin").click()
    until("the queues page", lambda: driver.current_url.endswith("#/queues"))


def row(driver, table_css, first_cell):
    for tr in driver.find_elements(By.CSS_SELECTOR, f"{table_css} tbody tr"):
        cells = tr.find_elements(By.TAG_NAME, "td")
        if cells and cells[0].text == first_cell:
            return {td.get_attribute("data-label"): td.text for td in cells}
    return None


def step(name):
    print(f"- {name}")


def run(driver, data):
    step("a wrong password shows the API's message and stays on sign-in")
    driver.get(BASE + "/console")
    until("the sign-in form", lambda: driver.find_elements(By.ID, "email"))
    driver.find_element(By.ID, "email").send_keys(data.email)
    driver.find_element(By.ID, "password").send_keys("not the password")
    driver.find_element(By.ID, "signin").click()
    until("the invalid-credentials message", lambda: "password" in notice(driver).lower())
    assert driver.current_url.endswith("#/signin"), driver.current_url

    step("sign in and see the queues with live counts")
    sign_in(driver, data)
    emails = until("emails with 1 dead and 2 waiting", lambda: (r := row(driver, "#queues", "emails")) and r["Dead"] == "1" and r["Waiting"] == "3" and r)
    assert emails["Completed"] == "3" and emails["Published/min"] == "7", emails
    invoices = until("invoices with completed jobs", lambda: (r := row(driver, "#queues", "invoices")) and r["Completed"] == "4" and r)
    assert invoices["Waiting"] == "8" and invoices["Completed/min"] == "4", invoices
    screenshots(driver, "queues", lambda: row(driver, "#queues", "emails"))

    step("open the queue: settings, jobs and the dead letter")
    driver.find_element(By.LINK_TEXT, "emails").click()
    until("the dead letter", lambda: driver.find_elements(By.CSS_SELECTOR, f'#section-dead a[title="{data.dead_id}"]'))
    dead = text_of(driver, "#section-dead")
    assert XSS_KEY in dead and XSS_ERROR in dead, dead
    assert "Max attempts\n1" in text_of(driver, "#section-settings"), text_of(driver, "#section-settings")
    until("the jobs list", lambda: states(driver, "#section-jobs").count("completed") == 3)
    for section, path in (("lanes", "/v1/queues/emails/lanes"), ("schedules", "/v1/queues/emails/schedules")):
        # Shown when this server has the API (§7.4, §7.5), hidden while it answers 404.
        status, _ = http("GET", path, token=data.token)
        shown = lambda: driver.find_element(By.ID, f"section-{section}").is_displayed()  # noqa: E731
        if status == 404:
            assert not shown(), f"{section} shown without the API"
        else:
            assert status == 200, (path, status)
            until(f"the {section} section", shown)
    screenshots(driver, "queue", lambda: "dead" in states(driver, "#section-jobs"))

    if http("GET", "/v1/queues/emails/lanes", token=data.token)[0] == 200:
        step("pause and resume one lane from the lanes section")

        def lane_button(label):
            for tr in driver.find_elements(By.CSS_SELECTOR, "#section-lanes tbody tr"):
                cells = tr.find_elements(By.TAG_NAME, "td")
                if cells and cells[0].text == "user-0":
                    return next((b for b in tr.find_elements(By.TAG_NAME, "button") if b.text == label), None)
            return None

        def lane_state():
            return ok("GET", "/v1/queues/emails/lanes/user-0", token=data.token)["state"]

        until("the lane's Pause button", lambda: lane_button("Pause")).click()
        until("the lane paused", lambda: lane_state() == "paused")
        until("the lane's Resume button", lambda: lane_button("Resume")).click()
        until("the lane resumed", lambda: lane_state() == "ready")

    step("pause and resume the queue")
    click(driver, "#pause")
    until("the paused badge", lambda: driver.find_elements(By.CSS_SELECTOR, "#resume") and text_of(driver, ".title .badge") == "paused")
    assert ok("GET", "/v1/queues/emails", token=data.token)["paused"] is True
    click(driver, "#resume")
    until("the running badge", lambda: driver.find_elements(By.CSS_SELECTOR, "#pause") and text_of(driver, ".title .badge") == "running")
    assert ok("GET", "/v1/queues/emails", token=data.token)["paused"] is False

    step("open the dead job: markup in payload, key and error is shown as text")
    driver.find_element(By.CSS_SELECTOR, f'#section-dead a[title="{data.dead_id}"]').click()
    until("the job page", lambda: text_of(driver, "h1") == data.dead_id)
    payload = until("the payload", lambda: text_of(driver, "#job-payload pre"))
    assert payload == json.dumps(XSS), payload
    fields = text_of(driver, "#job-fields")
    assert XSS_KEY in fields and "1 of 1" in fields and "not leased" in fields, fields
    assert text_of(driver, "#job-error pre") == XSS_ERROR
    assert driver.find_elements(By.TAG_NAME, "img") == [], "an <img> was created from data"
    assert driver.find_elements(By.CSS_SELECTOR, "main script, main b") == [], "markup from data became elements"
    no_alert(driver)
    screenshots(driver, "job", lambda: text_of(driver, "#job-payload pre") == json.dumps(XSS))
    no_alert(driver)

    step("redrive the dead letters and see the lane move on")
    driver.find_element(By.LINK_TEXT, "emails").click()
    until("the queue page", lambda: driver.find_elements(By.CSS_SELECTOR, f'#section-dead a[title="{data.dead_id}"]'))
    click(driver, "#redrive")
    until("the redrive result", lambda: "Redrove 1 job" in notice(driver))
    until("an empty dead list", lambda: "No dead jobs." in text_of(driver, "#section-dead"))
    until("the job queued again in the list", lambda: (r := row(driver, "#section-jobs", "1")) and r["State"] == "queued")
    job = ok("GET", f"/v1/jobs/{data.dead_id}", token=data.token)
    assert job["state"] == "queued", job
    claimed = ok("POST", "/v1/queues/emails/claim", {"max_jobs": 10, "wait_ms": 0}, token=data.token)["jobs"]
    assert data.dead_id in [j["id"] for j in claimed], f"the redriven job is not claimable: {claimed}"
    until("the job shown as active", lambda: (r := row(driver, "#section-jobs", "1")) and r["State"] == "active")

    step("skip a blocked lane head and see the lane move on")
    driver.get(BASE + "/console#/queues/webhooks")
    until("the blocked head", lambda: driver.find_elements(By.CSS_SELECTOR, f'#section-blocked a[title="{data.blocked_id}"]'))
    assert "HTTP 410 from receiver" in text_of(driver, "#section-blocked")
    until("the skip button", lambda: driver.find_elements(By.XPATH, "//section[@id='section-blocked']//button[text()='Skip']"))[0].click()
    until("the skip result", lambda: "Skipped" in notice(driver))
    until("the blocked section gone", lambda: not driver.find_element(By.ID, "section-blocked").is_displayed())
    until("the skipped job in the dead letters", lambda: driver.find_elements(By.CSS_SELECTOR, f'#section-dead a[title="{data.blocked_id}"]'))
    claimed = ok("POST", "/v1/queues/webhooks/claim", {"max_jobs": 1, "wait_ms": 0}, token=data.token)["jobs"]
    assert [j["id"] for j in claimed] == [data.behind_id], f"the lane did not move on: {claimed}"

    step("other API errors show the error's message")
    driver.get(BASE + "/console#/queues/no-such-queue")
    until("the not-found message", lambda: "no such queue" in notice(driver))

    forged = data.token.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    for what, token in (("an expired", expired_token(data)), ("a forged", forged)):
        step(f"{what} token in sessionStorage sends the user back to sign-in with a message")
        sign_in(driver, data)
        until("the queues page", lambda: row(driver, "#queues", "emails"))
        driver.execute_script("sessionStorage.setItem('orderly.console.token', arguments[0])", token)
        until("the sign-in page", lambda: driver.current_url.endswith("#/signin") and driver.find_elements(By.ID, "email"))
        message = notice(driver)
        assert "session has ended" in message.lower(), message
        assert driver.execute_script("return sessionStorage.getItem('orderly.console.token')") is None

    step("the browser logged no script error and no CSP violation")
    problems = [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"] or "Uncaught" in entry["message"]
    ]
    assert not problems, problems


def main():
    os.makedirs(SHOTS, exist_ok=True)
    data = Data()
    profile = PROFILE or tempfile.mkdtemp(prefix="orderly-console-")
    driver = browser(profile)
    try:
        run(driver, data)
    except Exception:
        print(f"at {driver.current_url}, the page shows:\n{text_of(driver, 'body')}", file=sys.stderr)
        print("browser log:", *[e["message"] for e in driver.get_log("browser")], sep="\n  ", file=sys.stderr)
        raise
    finally:
        driver.quit()
    print("console browser test: passed")


if __name__ == "__main__":
    sys.exit(main())
