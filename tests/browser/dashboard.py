"""The dashboard in headless Chromium against a running secure `triad dev` cluster.

Run by tests/browser/run.sh, which starts the cluster and passes it in the environment:
TRIAD_CA (the dev CA), TRIAD_TOKEN_FILE (an admin token), TRIAD_HTTP_PORTS (the masters' HTTP
ports, comma-separated), TRIAD_SCREENSHOTS (where screenshots go).

It opens the dashboard on a follower, is refused with a bad token, enters the right one, sees the
leader, sees the executors with their last heartbeat, submits a job through the HTTP API, watches it
become `succeeded` on the page and reads its output there, sees the job's events in the live feed
(the event stream) and on the chart, sees a cron it created through the API, SIGKILLs the leader's
process and sees the page name the new leader. It prints how long after the kill the page named
the new leader, beside how long after the kill the API (asked every 20 ms by this test) first
named it: the difference is the page's own delay. Every step
waits for its condition with a deadline. On failure it saves a screenshot and the browser's
console log. Chromium runs with --ignore-certificate-errors (this test only: the page is the dev
cluster's, whose CA the throwaway browser profile does not hold; the API calls the test makes
itself verify the CA).
"""

import json
import os
import re
import signal
import ssl
import sys
import threading
import time
import urllib.request
import uuid

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CA = os.environ["TRIAD_CA"]
TOKEN = open(os.environ["TRIAD_TOKEN_FILE"]).read().strip()
PORTS = [int(p) for p in os.environ["TRIAD_HTTP_PORTS"].split(",")]
SHOTS = os.environ["TRIAD_SCREENSHOTS"]
TLS = ssl.create_default_context(cafile=CA)
# The masters' certificates name `master.triad` and 127.0.0.1 (triad dev adds the loopback host).
TLS.check_hostname = True


def call(port, method, path, body=None, headers=None):
    """One HTTPS request to the master on `port`, with the admin token; returns the JSON body."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"https://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, context=TLS, timeout=10) as r:
        return json.loads(r.read())


def cluster(port):
    return call(port, "GET", "/v1/cluster")


def shot(driver, name):
    path = os.path.join(SHOTS, name)
    driver.save_screenshot(path)
    print(f"screenshot {path}")


def main():
    status = cluster(PORTS[0])
    leader = next(m for m in status["masters"] if m["id"] == status["leader_id"])
    # Open the dashboard on a follower: it must survive the leader's death.
    follower_id = next(m["id"] for m in status["masters"] if m["id"] != leader["id"])
    port = PORTS[follower_id - 1]
    print(f"leader master {leader['id']} (pid {leader['pid']}); dashboard on master {follower_id}")

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1400,1100", "--ignore-certificate-errors"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    wait = WebDriverWait(driver, 20, poll_frequency=0.05)
    try:
        run(driver, wait, port, leader)
    except BaseException:
        shot(driver, "failure.png")
        with open(os.path.join(SHOTS, "browser-console.log"), "w") as f:
            for entry in driver.get_log("browser"):
                f.write(json.dumps(entry) + "\n")
        print(f"console log {os.path.join(SHOTS, 'browser-console.log')}", file=sys.stderr)
        raise
    finally:
        driver.quit()


def text_is(locator, want):
    return lambda d: d.find_element(*locator).text.strip() == want


def page_leader(driver):
    return driver.find_element(By.ID, "leader").get_attribute("data-id")


def agreed_leader(driver, port):
    """Waits until the page names the leader the API names (an election under load may move it
    between two reads), and returns that master's status."""
    def agreed(d):
        try:
            status = cluster(port)
        except OSError:  # no leader this instant (503), or the master is busy: look again
            return False
        shown = page_leader(d)
        return (status["leader_id"] != 0 and shown == str(status["leader_id"])
                and next(m for m in status["masters"] if m["id"] == status["leader_id"]))
    return WebDriverWait(driver, 20, poll_frequency=0.1).until(agreed)


def login(driver, wait, port):
    driver.get(f"https://127.0.0.1:{port}/ui/")
    field = wait.until(EC.visibility_of_element_located((By.ID, "token")))
    field.clear()
    field.send_keys(TOKEN)
    driver.find_element(By.ID, "login-submit").click()
    wait.until(lambda d: page_leader(d) not in (None, ""))


def run(driver, wait, port, leader):
    base = f"https://127.0.0.1:{port}"
    driver.get(base + "/ui/")

    # Nothing without a valid token: a bad one is refused and the prompt stays.
    wait.until(EC.visibility_of_element_located((By.ID, "token"))).send_keys("triad_not-a-token")
    driver.find_element(By.ID, "login-submit").click()
    wait.until(lambda d: "refused" in d.find_element(By.ID, "login-error").text)
    assert not driver.find_element(By.ID, "main").is_displayed()
    shot(driver, "00-token-refused.png")

    login(driver, wait, port)
    leader = agreed_leader(driver, port)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#masters tr.leader[data-id='{leader['id']}']"))
    shot(driver, "01-cluster-leader.png")

    # Executors are listed, each with the leader's last heartbeat from it.
    driver.get(base + "/ui/#/executors")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#executors tbody tr")) >= 2)
    wait.until(lambda d: all(c.text.endswith("ago") for c in d.find_elements(By.CSS_SELECTOR, "#executors td.heartbeat")))
    shot(driver, "04-executors-heartbeats.png")

    # A job submitted through the HTTP API appears, succeeds, and its output shows.
    marker = f"hello from the browser test {uuid.uuid4()}"
    job = call(port, "POST", "/v1/jobs",
               {"name": "browser", "spec": {"command": "sh", "args": ["-c", f"echo {marker}; sleep 1; echo bye"], "task_count": 1}},
               {"Idempotency-Key": str(uuid.uuid4())})
    job_id = job["job_id"]
    print(f"submitted job {job_id}")
    driver.get(base + "/ui/#/jobs")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#jobs tr[data-id='{job_id}']"))
    driver.find_element(By.CSS_SELECTOR, f"#jobs tr[data-id='{job_id}']").click()
    wait.until(text_is((By.ID, "job-id"), job_id))
    WebDriverWait(driver, 30, poll_frequency=0.05).until(text_is((By.ID, "job-state"), "succeeded"))
    wait.until(lambda d: marker in d.find_element(By.ID, "output-0").text
               and "bye" in d.find_element(By.ID, "output-0").text)
    rows = driver.find_elements(By.CSS_SELECTOR, "#task-0 table.attempts tbody tr")
    assert rows and "executor" in rows[0].text, rows[0].text if rows else "no attempt rows"
    shot(driver, "02-job-succeeded-with-output.png")

    # The live feed (the event stream, opened at login) shows the job's events, each with its
    # Raft index; the chart counts its submission and completion.
    driver.get(base + "/ui/#/events")
    def job_in_feed(d):
        lines = [li.text for li in d.find_elements(By.CSS_SELECTOR, f"#feed li[data-job='{job_id}']")]
        return (any(f"job {job_id} new, pending" in t for t in lines)
                and any(f"job {job_id} " in t and t.endswith("→ succeeded") for t in lines)
                and any(f"task {job_id}/0 " in t and "exit 0" in t for t in lines)) and lines
    lines = wait.until(job_in_feed)
    print(f"the feed shows {len(lines)} events of job {job_id}, e.g. {lines[-1]!r}")
    totals = wait.until(lambda d: re.match(r"[1-9]\d* submitted, [1-9]\d* completed",
                                           d.find_element(By.ID, "chart-totals").text))
    print(f"the chart: {totals.group(0)} in the last 120 s")
    shot(driver, "05-events-feed-and-chart.png")

    # A cron created through the API shows on the crons page.
    call(port, "POST", "/v1/crons", {"name": "browser-nightly", "schedule": "0 3 * * *",
                                     "spec": {"command": "true", "task_count": 1}})
    driver.get(base + "/ui/#/crons")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#crons tr[data-name='browser-nightly']"))
    shot(driver, "06-crons.png")

    # Kill the leader's process: the page names the new leader. The page must be on another
    # master (an election under load may have moved the leader to the page's own).
    leader = agreed_leader(driver, port)
    if leader["id"] == PORTS.index(port) + 1:
        port = next(p for i, p in enumerate(PORTS) if i + 1 != leader["id"])
        print(f"the leader moved to the page's master; reopening the page on port {port}")
        login(driver, wait, port)
        leader = agreed_leader(driver, port)
    driver.get(f"https://127.0.0.1:{port}/ui/#/cluster")
    leader = agreed_leader(driver, port)
    # The API's own view, asked every 20 ms from a thread, to tell the election from the page.
    elected = {}
    def watch_api():
        while "at" not in elected and time.monotonic() - killed < 20:
            try:
                s = cluster(port)
                if s["leader_id"] not in (0, leader["id"]):
                    elected["at"] = time.monotonic()
                    return
            except OSError:
                pass
            time.sleep(0.02)
    killed = time.monotonic()
    os.kill(leader["pid"], signal.SIGKILL)
    watcher = threading.Thread(target=watch_api, daemon=True)
    watcher.start()
    print(f"killed master {leader['id']} (pid {leader['pid']})")
    WebDriverWait(driver, 20, poll_frequency=0.02).until(
        lambda d: page_leader(d) not in ("", str(leader["id"])))
    seen = time.monotonic() - killed
    new = driver.find_element(By.ID, "leader").text
    watcher.join(20)
    api_ms = f"{(elected['at'] - killed) * 1000:.0f} ms" if "at" in elected else "not seen"
    print(f"the page named the new leader {seen * 1000:.0f} ms after the kill (the API, asked "
          f"every 20 ms, named it after {api_ms}): {new}")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#masters tr.unreachable"))
    shot(driver, "03-new-leader-after-kill.png")
    print("browser test passed")


if __name__ == "__main__":
    main()
