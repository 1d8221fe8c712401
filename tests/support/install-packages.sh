#!/bin/sh
# Installs the Debian 12 packages the real-Postfix test harness needs
# (tests/support/README.md says why each one). Run as root. Installs
# nothing and asks no mirror when everything is already there.
#
# Postfix is installed with debconf's "No configuration": no
# /etc/postfix/main.cf, so the system's Postfix stays unconfigured; every
# test runs a private instance with its own main.cf.
set -eu

packages="postfix opendkim python3-dkim sasl2-bin libsasl2-modules libsasl2-modules-db"

missing=""
for package in $packages; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $package"
    fi
done
[ -z "$missing" ] && exit 0

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
# shellcheck disable=SC2086 # word splitting of the package list is wanted
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
