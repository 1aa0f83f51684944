#!/bin/sh
# Installs Debian's chromium for the console's browser tests (tests/test_console_browser.py)
# when it is missing. The tests drive it through Playwright's Python package with
# executable_path=/usr/bin/chromium: no browser is ever downloaded (never `playwright install`).
#
#   sh scripts/_browser.sh && WARDEN_REQUIRE_BROWSER=1 pytest -m browser
set -eu
if [ -x /usr/bin/chromium ]; then
    /usr/bin/chromium --version
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
$SUDO apt-get update
$SUDO apt-get install -y chromium
/usr/bin/chromium --version
