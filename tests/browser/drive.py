"""Drives chatd's web page in headless Chromium for tests/browser.rs.

Run by the test with Debian's python3, python3-selenium, chromium and chromium-driver:
    drive.py URL USER TOKEN SCREENSHOT_DIR
It talks to the test over stdin/stdout, one line each way per step, so that the test can act
(post from the CLI, restart the daemon) between the browser's steps:
    -> joined            the page is logged in and in room "lobby"
    <- posted            the CLI posted "hello from the terminal"
    -> sent              the page saw it, and its own message was confirmed (no pending mark)
    <- stopped           the daemon is stopped
    -> queued            the page, disconnected, took "typed while down", shows it pending
                         and keeps it in localStorage
    <- restarted         the daemon was restarted and the CLI posted "after the restart"
    -> delivered         the page resumed: every message once, "typed while down" confirmed
    -> dm                "/msg bob hello bob" opened the direct room, shown as "bob", and the
                         message was confirmed
    <- replied           bob, on a version 2 TCP connection, answered "hello alice" there
       (no line)         the page shows the answer (and bob in the member list if the
                         server sends one); joining @bob+carol is refused as "you may not
                         use this room"
    -> team              the page joined "team" and its message there was confirmed
    <- private           the operator made "team" private to bob
    -> done              the page closed "team" with a readable notice; no console or CSP
                         errors
Any failure prints "error: ..." and exits 1.
"""

import json
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

URL, USER, TOKEN, SHOTS = sys.argv[1:5]
PATIENCE = 20


def say(line):
    print(line, flush=True)


def expect(word):
    got = sys.stdin.readline().strip()
    if got != word:
        fail(f"expected '{word}' from the test, got '{got}'")


def fail(why):
    say(f"error: {why}")
    sys.exit(1)


def texts(driver):
    # One script, so the list is read at one instant (elements found one by one could be
    # replaced in between: a pending line becomes a confirmed one).
    return driver.execute_script(
        "return [...document.querySelectorAll('#logs li.msg .text')].map(e => e.textContent)")


def status(driver):
    return driver.find_element(By.ID, "status").text


def pending_texts(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#logs li.pending .text')].map(e => e.textContent)")


def type_line(driver, text):
    box = driver.find_element(By.ID, "text")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def once(driver, wanted):
    seen = texts(driver)
    for text in wanted:
        if seen.count(text) != 1:
            fail(f"'{text}' shown {seen.count(text)} times: {seen}")


def marked(driver):
    return driver.execute_script(
        "return document.querySelectorAll('#logs li.pending, #logs li.failed').length")


def wait_for(driver, what, check):
    try:
        WebDriverWait(driver, PATIENCE, poll_frequency=0.05).until(lambda d: check(d))
    except Exception as e:
        print(f"waiting for {what}: {e!r}", file=sys.stderr)
        driver.save_screenshot(f"{SHOTS}/failed.png")
        marks = driver.execute_script(
            "return [...document.querySelectorAll('#logs li')].map(e => e.className)")
        fail(f"never saw {what}; messages: {texts(driver)}; classes: {marks}; status: "
             f"{driver.find_element(By.ID, 'status').text}; console: {driver.get_log('browser')}")


options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--window-size=900,700", "--no-first-run", "--disable-extensions"]:
    options.add_argument(arg)
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
try:
    driver.get(URL)
    driver.find_element(By.ID, "user").send_keys(USER)
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
    wait_for(driver, "the chat view", lambda d: d.find_element(By.ID, "chat-view").is_displayed())
    driver.find_element(By.ID, "room").send_keys("lobby")
    driver.find_element(By.CSS_SELECTOR, "#join button[type=submit]").click()
    wait_for(driver, "room lobby", lambda d: d.find_element(By.ID, "room-name").text.endswith("lobby"))
    say("joined")

    expect("posted")
    wait_for(driver, "the CLI's message", lambda d: "hello from the terminal" in texts(d))
    box = driver.find_element(By.ID, "text")
    box.send_keys("hello from the browser")
    box.send_keys(Keys.ENTER)
    wait_for(driver, "our message confirmed",
             lambda d: "hello from the browser" in texts(d)
             and marked(d) == 0)
    say("sent")

    expect("stopped")
    wait_for(driver, "the page to notice the stop", lambda d: "reconnecting" in status(d))
    type_line(driver, "typed while down")
    wait_for(driver, "the message queued while disconnected",
             lambda d: pending_texts(d) == ["typed while down"])
    # The outbox outlives the page (a reload cannot be tried: the daemon serves the page).
    kept = driver.execute_script(f"return localStorage.getItem('chatd.outbox.{USER}')")
    if "typed while down" not in (kept or ""):
        fail(f"the outbox in localStorage holds {kept!r}")
    say("queued")

    expect("restarted")
    wait_for(driver, "the message posted after the restart, and ours confirmed",
             lambda d: "after the restart" in texts(d) and marked(d) == 0)
    once(driver, ["hello from the terminal", "hello from the browser", "typed while down",
                  "after the restart"])
    say("delivered")

    type_line(driver, "/msg bob hello bob")
    wait_for(driver, "the direct room with bob",
             lambda d: d.find_element(By.ID, "room-name").text == "bob")
    wait_for(driver, "our direct message confirmed",
             lambda d: "hello bob" in texts(d) and marked(d) == 0)
    say("dm")

    expect("replied")
    wait_for(driver, "bob's answer", lambda d: "hello alice" in texts(d))
    once(driver, ["hello bob", "hello alice"])
    members = driver.find_element(By.ID, "members")
    if members.is_displayed():
        wait_for(driver, "bob in the member list", lambda d: "bob" in members.text)
    driver.save_screenshot(f"{SHOTS}/page.png")

    # Someone else's direct room is refused, readably, and its tab goes away.
    room = driver.find_element(By.ID, "room")
    room.send_keys("@bob+carol")
    room.send_keys(Keys.ENTER)
    wait_for(driver, "the refusal of @bob+carol",
             lambda d: "you may not use this room" in d.find_element(By.ID, "notice").text)
    tabs = driver.execute_script(
        "return [...document.querySelectorAll('#tabs button')].map(e => e.title)")
    if tabs != ["lobby", "@alice+bob"]:
        fail(f"tabs after the refusal: {tabs}")

    room.send_keys("team")
    room.send_keys(Keys.ENTER)
    type_line(driver, "in team")
    wait_for(driver, "our message in team confirmed",
             lambda d: "in team" in texts(d) and marked(d) == 0)
    say("team")

    expect("private")
    wait_for(driver, "team taken away",
             lambda d: "You are no longer in team" in d.find_element(By.ID, "notice").text)
    tabs = driver.execute_script(
        "return [...document.querySelectorAll('#tabs button')].map(e => e.title)")
    if tabs != ["lobby", "@alice+bob"]:
        fail(f"tabs after team was taken away: {tabs}")
    problems = []
    for entry in driver.get_log("browser"):
        message = entry.get("message", "")
        if entry.get("level") not in ("SEVERE", "WARNING"):
            continue
        # While the daemon is down Chromium itself reports each refused reconnect; the page
        # cannot silence that, and it is the reconnecting we want.
        if "WebSocket connection to" in message and "failed" in message:
            continue
        problems.append(message)
    if problems:
        fail("console errors: " + json.dumps(problems))
    say("done")
finally:
    driver.quit()
