"""The administrator's scripts: the one-time set-up of a server, and the removal of a site.

After the set-up, the deploy user needs no other privilege than running ``nginx -t`` and
``nginx -s reload`` through sudo: it owns the site folder and a private state folder
(certificates, ACME account keys, the vhost), and nginx includes that vhost through links in its
own configuration folder. ``fab server-setup`` prints the set-up script, ``fab server-setup
--remove`` the removal script; the sandbox runs the very same set-up script as root.

The scripts are files (``deploy/scripts/server-setup.sh``, ``server-remove.sh``), POSIX sh,
``shellcheck``-clean, taking every value as a positional argument. What is printed is the file,
with one ``set --`` line of shell-quoted arguments after its first line: no value is ever
pasted into the script's text. The scripts create only what is missing and never change or
replace what they did not make (see the scripts' headers).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .settings import DeploySettings

SCRIPTS = Path(__file__).resolve().parent / "scripts"
NGINX_CONF_DIR = "/etc/nginx"
SUDOERS_DIR = "/etc/sudoers.d"


def nginx_sudo_command(settings: DeploySettings) -> list[str]:
    """The nginx command as sudo runs it: DEPLOY_NGINX without the leading `sudo -n`."""
    words = list(settings.nginx)
    if words and words[0] == "sudo":
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    return words


def sudoers_rule(settings: DeploySettings) -> str:
    """Exactly two commands, argument for argument: sudo matches them literally."""
    nginx = " ".join(_sudoers_escape(w) for w in nginx_sudo_command(settings))
    return f"{settings.user} ALL=(root) NOPASSWD: {nginx} -t, {nginx} -s reload"


def sudoers_file(settings: DeploySettings, sudoers_dir: str = SUDOERS_DIR) -> str:
    """The sudoers file's real name: sudo skips files in sudoers.d whose names contain a '.', so
    the dots of the site name become '_' (``pelican-https-deploy-blog_example_com``)."""
    return f"{sudoers_dir}/" + f"pelican-https-{settings.user}-{settings.site_name}".replace(".", "_")


def sudoers_marker(settings: DeploySettings) -> str:
    """The sudoers file's first line: how both scripts know the file is theirs."""
    return f"# pelican-https: sudo rule of the deploy user {settings.user} for {settings.site_name} (fab server-setup --remove deletes this file)"


def folder_marker(settings: DeploySettings) -> str:
    """The first line of the marker file (``.pelican-https-site``, root's) the set-up leaves in each
    folder it makes for the site: the removal deletes a whole folder only when it holds this line."""
    return f"# pelican-https: made by fab server-setup for {settings.site_name} (fab server-setup --remove deletes this folder and all in it)"


PARENT_MARKER = "# pelican-https: made by fab server-setup as the parent of a site's folder (fab server-setup --remove deletes it once nothing else is in it)"


def link_name(settings: DeploySettings) -> str:
    return settings.site_name + ".conf"


def admin_script(settings: DeploySettings, nginx_include_dir: str | None = None, *,
                 nginx_conf_dir: str = NGINX_CONF_DIR, sudoers_dir: str = SUDOERS_DIR) -> str:
    """The set-up script (run as root), self-contained: ``fab server-setup | ssh admin@server sudo sh``.

    ``nginx_include_dir``: link the vhost into that folder instead of detecting the layout under
    ``nginx_conf_dir`` (Debian's sites-available + sites-enabled when nginx.conf includes it, else
    conf.d). ``nginx_conf_dir`` and ``sudoers_dir`` exist for tests on a temporary tree.
    """
    return _script("server-setup.sh", [
        settings.user,
        str(settings.remote_root),
        str(settings.challenge_dir),
        str(settings.state_dir),
        str(settings.vhost_file),
        link_name(settings),
        nginx_conf_dir,
        nginx_include_dir or "",
        sudoers_file(settings, sudoers_dir),
        sudoers_marker(settings),
        sudoers_rule(settings),
        folder_marker(settings),
        PARENT_MARKER,
    ])


def remove_script(settings: DeploySettings, nginx_include_dir: str | None = None, *,
                  nginx_conf_dir: str = NGINX_CONF_DIR, sudoers_dir: str = SUDOERS_DIR) -> str:
    """The removal script (run as root): removes exactly what the set-up and the deploys added
    for this site (its nginx links, sudoers file, state folder and site folder, the parents the
    set-up made for them), nothing else: a folder the set-up did not make (no marker) loses only
    the entries deploys make in it."""
    return _script("server-remove.sh", [
        settings.user,
        str(settings.remote_root),
        str(settings.challenge_dir),
        str(settings.state_dir),
        str(settings.vhost_file),
        link_name(settings),
        nginx_conf_dir,
        nginx_include_dir or "",
        sudoers_file(settings, sudoers_dir),
        sudoers_marker(settings),
        folder_marker(settings),
        PARENT_MARKER,
    ])


def _script(name: str, args: list[str]) -> str:
    text = (SCRIPTS / name).read_text()
    first, _, rest = text.partition("\n")
    arguments = "set -- " + " ".join(shlex.quote(a) for a in args)
    return f"{first}\n# The values, as positional arguments (fab server-setup printed them from the DEPLOY_ settings):\n{arguments}\n{rest}"


def _sudoers_escape(word: str) -> str:
    # sudoers treats these as special inside a command line.
    for ch in "\\,:=\" ":
        word = word.replace(ch, "\\" + ch)
    return word
