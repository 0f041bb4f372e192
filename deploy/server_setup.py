"""The one-time set-up a server's administrator runs as root, before the first deploy.

After it, the deploy user needs no other privilege than running ``nginx -t`` and
``nginx -s reload`` through sudo: it owns the site folder and a private state folder
(certificates, ACME account keys, the vhost), and nginx includes that vhost through one
symlink in its own configuration folder. ``fab server-setup`` prints this script; the
sandbox runs the very same script as root on this machine.
"""

from __future__ import annotations

import shlex

from .settings import DeploySettings


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
    return f"{settings.user} ALL=(root) NOPASSWD: {nginx} -t, {nginx} -s reload\n"


def sudoers_file(settings: DeploySettings) -> str:
    # sudo skips files in sudoers.d whose names contain a dot.
    return "/etc/sudoers.d/" + f"pelican-https-{settings.user}-{settings.site_name}".replace(".", "_")


def admin_script(settings: DeploySettings, nginx_include_dir: str | None = None) -> str:
    """A POSIX shell script (run as root) that prepares the server for ``fab deploy``."""
    q = shlex.quote
    user = q(settings.user)
    vhost = q(str(settings.vhost_file))
    link = (
        f"ln -sfn {vhost} {q(nginx_include_dir)}/{q(settings.site_name + '.conf')}"
        if nginx_include_dir
        else nginx_link_script(settings)
    )
    sudoers = sudoers_file(settings)
    return "\n".join([
        "set -eu",
        "# site folder (releases, current, ACME challenges): owned by the deploy user, readable by nginx",
        f"install -d -o {user} -g {user} -m 755 {q(str(settings.remote_root))} {q(str(settings.challenge_dir))}",
        f"install -d -o {user} -g {user} -m 755 {q(str(settings.challenge_root))} {q(str(settings.challenge_root / '.well-known'))}",
        "# private state (certificate key, ACME account keys, the vhost): the deploy user only",
        f"install -d -o {user} -g {user} -m 700 {q(str(settings.state_dir))} {q(str(settings.vhost_file.parent))}",
        f"[ -e {vhost} ] || install -o {user} -g {user} -m 644 /dev/null {vhost}",
        "# nginx includes the site's vhost through a symlink",
        link,
        "# sudo for exactly `nginx -t` and `nginx -s reload`",
        f"printf '%s' {q(sudoers_rule(settings))} > {q(sudoers + '.tmp')}",
        f"chmod 440 {q(sudoers + '.tmp')}",
        f"visudo -cf {q(sudoers + '.tmp')} >/dev/null",
        f"mv {q(sudoers + '.tmp')} {q(sudoers)}",
        "",
    ])


def nginx_link_script(settings: DeploySettings, conf_dir: str = "/etc/nginx") -> str:
    """Shell lines that detect the distribution's nginx layout and link the vhost into it.

    Detected here, as root, because only root may write nginx's folders; the deploy then proves
    the link works by asking nginx for the vhost's probe URL after each reload. The layout counts
    only if nginx.conf really includes it: Debian/Ubuntu's sites-enabled (the vhost goes to
    sites-available, enabled by a relative link, as a2ensite-style tools expect), else conf.d.
    """
    q = shlex.quote
    return "\n".join([
        f"conf_dir={q(conf_dir)}; vhost={q(str(settings.vhost_file))}; name={q(settings.site_name + '.conf')}",
        'if [ -d "$conf_dir/sites-enabled" ] && grep -Eq "^[[:space:]]*include[[:space:]]+$conf_dir/sites-enabled/" "$conf_dir/nginx.conf"; then',
        '    install -d -m 755 "$conf_dir/sites-available"',
        '    ln -sfn "$vhost" "$conf_dir/sites-available/$name"',
        '    ln -sfn "../sites-available/$name" "$conf_dir/sites-enabled/$name"',
        '    echo "nginx layout: sites-available + sites-enabled ($conf_dir/sites-enabled/$name)"',
        'elif [ -d "$conf_dir/conf.d" ] && grep -Eq "^[[:space:]]*include[[:space:]]+$conf_dir/conf[.]d/[*][.]conf" "$conf_dir/nginx.conf"; then',
        '    ln -sfn "$vhost" "$conf_dir/conf.d/$name"',
        '    echo "nginx layout: conf.d ($conf_dir/conf.d/$name)"',
        "else",
        '    echo "$conf_dir/nginx.conf includes neither $conf_dir/sites-enabled/ nor $conf_dir/conf.d/*.conf:" \\',
        '         "add \\`include $conf_dir/conf.d/*.conf;\\` to its http block, then run this script again" >&2',
        "    exit 1",
        "fi",
    ])


def _sudoers_escape(word: str) -> str:
    # sudoers treats these as special inside a command line.
    for ch in "\\,:=\" ":
        word = word.replace(ch, "\\" + ch)
    return word
