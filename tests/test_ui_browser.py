"""The headless Chromium that drives the Prefect UI in the tests."""

from playwright.sync_api import sync_playwright


def test_the_tests_chromium_does_not_watch_the_hosts_interfaces(chromium, capfd, monkeypatch):
    """CI at d25b90c failed a UI test with net::ERR_NETWORK_CHANGED: the sandboxes of a
    parallel run create and remove Docker bridges and veths, and Chromium fails the
    requests in flight on every change it sees. Launched by the `chromium` fixture it
    cannot open its netlink socket, says so, and takes itself as always online."""
    monkeypatch.setenv("DEBUG", "pw:browser")  # Playwright's driver then passes on the browser's standard error
    with sync_playwright() as p:
        browser = chromium(p, "--enable-logging=stderr")
        browser.new_page().goto("about:blank")
        browser.close()
    assert "Could not create NETLINK socket" in capfd.readouterr().err
