"""The administrator's scripts never harm what is there (run for real, as root, on a temporary tree).

The set-up and removal scripts run with `sh` against a folder tree shaped like a stock Debian 12
server: /etc/nginx with this machine's own nginx.conf (paths moved into the tree), a
sites-available folder that another deploy group may write (2775, group www-data), the distribution's
default site, and a /srv/www that already holds another site. The deploy user is `nobody`
(a real user, so chown and sudo's visudo check are real).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from deploy.server_setup import (
    PARENT_MARKER,
    SCRIPTS,
    admin_script,
    folder_marker,
    remove_script,
    sudoers_file,
    sudoers_marker,
)
from deploy.settings import settings_from_mapping

DEBIAN_NGINX_CONF = Path("/etc/nginx/nginx.conf")
USER = "nobody"
SITE = "blog.example.com.conf"


class Server:
    """A Debian-like tree under tmp_path and the settings of one site on it."""

    def __init__(self, root: Path, site: str = "blog.example.com"):
        self.root = root
        self.conf = root / "etc" / "nginx"
        self.sudoers_dir = root / "etc" / "sudoers.d"
        self.settings = settings_from_mapping({
            "SITEURL": f"https://{site}", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": USER,
            "DEPLOY_REMOTE_ROOT": str(root / "srv" / "www" / site),
            "DEPLOY_STATE_DIR": str(root / "var" / "lib" / "pelican-https" / site)})

    def setup_script(self, **kwargs) -> str:
        return admin_script(self.settings, nginx_conf_dir=str(self.conf), sudoers_dir=str(self.sudoers_dir), **kwargs)

    def remove_script(self, **kwargs) -> str:
        return remove_script(self.settings, nginx_conf_dir=str(self.conf), sudoers_dir=str(self.sudoers_dir), **kwargs)

    def run(self, script: str, user: str | None = None) -> subprocess.CompletedProcess:
        """On sh's standard input, as `fab server-setup | ssh admin@server sudo sh` runs it."""
        command = ["sh", "-s"] if user is None else ["runuser", "-u", user, "--", "sh", "-s"]
        return subprocess.run(command, input=script, capture_output=True, text=True)

    @property
    def sudoers(self) -> Path:
        return Path(sudoers_file(self.settings, str(self.sudoers_dir)))


@pytest.fixture
def server(tmp_path):
    """A stock Debian nginx layout with its default site, another site's folder and a sudoers.d."""
    assert os.geteuid() == 0, "these tests run the administrator's scripts as root (./run tests)"
    assert DEBIAN_NGINX_CONF.is_file(), "the nginx Debian package provides /etc/nginx/nginx.conf"
    srv = Server(tmp_path / "host")
    conf = srv.conf
    for d in ("sites-available", "sites-enabled", "conf.d"):
        (conf / d).mkdir(parents=True)
    (conf / "nginx.conf").write_text(DEBIAN_NGINX_CONF.read_text().replace("/etc/nginx", str(conf)))
    (conf / "sites-available" / "default").write_text("server { listen 80 default_server; root /var/www/html; }\n")
    (conf / "sites-enabled" / "default").symlink_to(conf / "sites-available" / "default")
    # Another deploy group may write sites-available: the set-up must leave that as it is.
    os.chown(conf / "sites-available", 0, grp.getgrnam("www-data").gr_gid)
    os.chmod(conf / "sites-available", 0o2775)
    other = tmp_path / "host" / "srv" / "www" / "other.example.org"
    other.mkdir(parents=True)
    (other / "index.html").write_text("another site\n")
    os.chmod(tmp_path / "host" / "srv" / "www", 0o2775)
    srv.sudoers_dir.mkdir(parents=True)
    os.chmod(srv.sudoers_dir, 0o750)
    (srv.sudoers_dir / "README").write_text("# the distribution's\n")
    return srv


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root: type and mode, owner, group, and the link target or content hash."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                what = None
            result[str(path.relative_to(root))] = (oct(st.st_mode), st.st_uid, st.st_gid, what)
    return result


def changed(before: dict, after: dict) -> dict:
    return {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


def mode_owner(path: Path) -> tuple[str, str, str]:
    st = path.lstat()
    return oct(stat.S_IMODE(st.st_mode)), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name


# --- set-up ------------------------------------------------------------------------------------

def test_setup_creates_what_is_missing_and_changes_nothing_that_exists(server):
    before = snapshot(server.root)
    result = server.run(server.setup_script())
    assert result.returncode == 0, result.stderr
    after = snapshot(server.root)
    # Nothing that was there changed: not sites-available's 2775 and group, not /srv/www, not the default site.
    assert {k: after[k] for k in before} == before
    s = server.settings
    assert mode_owner(server.conf / "sites-available") == ("0o2775", "root", "www-data")
    assert os.readlink(server.conf / "sites-available" / SITE) == str(s.vhost_file)
    assert os.readlink(server.conf / "sites-enabled" / SITE) == f"../sites-available/{SITE}"
    assert list((server.conf / "conf.d").iterdir()) == []  # linked once, in the layout nginx.conf includes
    for path in (s.remote_root, s.challenge_root, s.challenge_dir):
        # /srv/www is setgid (2775) here: Linux gives new folders inside it the setgid bit, as the administrator asked
        mode, owner, group = mode_owner(Path(path))
        assert (int(mode, 8) & 0o777, owner, group) == (0o755, USER, "nogroup"), path
    for path in (s.state_dir, s.vhost_file.parent):
        assert mode_owner(Path(path)) == ("0o700", USER, "nogroup"), path
    assert mode_owner(Path(s.vhost_file)) == ("0o644", USER, "nogroup") and Path(s.vhost_file).read_text() == ""
    assert mode_owner(Path(s.state_dir).parent) == ("0o755", "root", "root")  # a missing parent: root's
    assert mode_owner(server.sudoers) == ("0o440", "root", "root")
    assert server.sudoers.name == "pelican-https-nobody-blog_example_com"  # sudo skips names with a '.'
    assert server.sudoers.read_text().splitlines() == [
        sudoers_marker(s), f"{USER} ALL=(root) NOPASSWD: /usr/sbin/nginx -t, /usr/sbin/nginx -s reload"]
    assert subprocess.run(["visudo", "-cf", str(server.sudoers)], capture_output=True).returncode == 0
    assert f"sudoers file: {server.sudoers}" in result.stdout
    assert "nginx layout: sites-available + sites-enabled" in result.stdout


def test_running_the_setup_twice_changes_nothing(server):
    assert server.run(server.setup_script()).returncode == 0
    before = snapshot(server.root)
    again = server.run(server.setup_script())
    assert again.returncode == 0, again.stderr
    assert "nothing changed" in again.stdout and "created" not in again.stdout
    assert snapshot(server.root) == before


def test_an_existing_site_folder_keeps_its_mode_and_owner_and_is_named(server):
    site = Path(server.settings.remote_root)
    site.mkdir(parents=True)
    os.chmod(site, 0o2750)
    result = server.run(server.setup_script())
    assert result.returncode == 0, result.stderr
    assert mode_owner(site) == ("0o2750", "root", "root")
    assert f"left as it is: {site} (owned by root; the deploy user {USER} must be able to write in it)" in result.stdout


@pytest.mark.parametrize("make, named, advice", [
    (lambda s: (s.conf / "sites-available" / SITE).write_text("server { server_name blog.example.com; }\n"),
     "sites-available/" + SITE + " already exists (a file this script did not make)", "mv "),
    (lambda s: (s.conf / "sites-enabled" / SITE).symlink_to("/etc/nginx/sites-available/old-blog"),
     "sites-enabled/" + SITE + " is a link to /etc/nginx/sites-available/old-blog, not made by this script", "rm "),
    (lambda s: (s.sudoers_dir / "pelican-https-nobody-blog_example_com").write_text("nobody ALL=(ALL) ALL\n"),
     "pelican-https-nobody-blog_example_com exists and was not made by this script", "move it out of"),
    (lambda s: Path(s.settings.remote_root).parent.joinpath("blog.example.com").write_text("a file\n"),
     "blog.example.com exists and is not a folder", "mv "),
])
def test_a_file_or_link_it_did_not_make_stops_it_before_any_change(server, make, named, advice):
    make(server)
    before = snapshot(server.root)
    result = server.run(server.setup_script())
    assert result.returncode == 1
    assert named in result.stderr and advice in result.stderr and "Nothing was changed." in result.stderr
    assert snapshot(server.root) == before


def test_a_missing_deploy_user_is_named_first(server):
    settings = server.settings._replace(user="pelican-https-no-such-user")
    before = snapshot(server.root)
    result = server.run(admin_script(settings, nginx_conf_dir=str(server.conf), sudoers_dir=str(server.sudoers_dir)))
    assert result.returncode == 1
    assert "the deploy user 'pelican-https-no-such-user' does not exist: create it first (adduser" in result.stderr
    assert snapshot(server.root) == before


def test_not_root_is_refused(server):
    result = server.run(server.setup_script(), user=USER)
    assert result.returncode == 1 and "run this script as root" in result.stderr


def test_conf_d_and_include_folder_layouts(server):
    for link in (server.conf / "sites-enabled" / "default",):
        link.unlink()
    shutil.rmtree(server.conf / "sites-enabled")
    (server.conf / "nginx.conf").write_text(f"events {{}}\nhttp {{\n    include {server.conf}/conf.d/*.conf;\n}}\n")
    result = server.run(server.setup_script())
    assert result.returncode == 0, result.stderr
    assert os.readlink(server.conf / "conf.d" / SITE) == str(server.settings.vhost_file)
    include = server.root / "nginx-include"
    include.mkdir()
    result = server.run(server.setup_script(nginx_include_dir=str(include)))
    assert result.returncode == 0, result.stderr
    assert os.readlink(include / SITE) == str(server.settings.vhost_file)


def test_no_known_include_stops_with_what_to_add(server):
    (server.conf / "nginx.conf").write_text("http {\n    server { listen 80; }\n}\n")
    before = snapshot(server.root)
    result = server.run(server.setup_script())
    assert result.returncode == 1
    assert f"add `include {server.conf}/conf.d/*.conf;` to its http block" in result.stderr
    assert snapshot(server.root) == before


# --- removal -----------------------------------------------------------------------------------

def deployed(server: Server) -> None:
    """What deploys add, as the deploy user: releases and their manifests, current, a certificate
    and the live link, an ACME account key, the vhost and its leftovers, the lock, a journal, a
    challenge file."""
    s = server.settings
    release = Path(s.releases_dir) / "20260101T000000Z"
    made = [Path(s.releases_dir), release, release / "index.html", Path(f"{release}.manifest"), Path(s.current_link),
            Path(s.tls_dir), Path(s.tls_dir) / "certs", Path(s.tls_dir) / "certs" / "one",
            Path(s.tls_dir) / "certs" / "one" / "privkey.pem", Path(s.tls_dir) / "live", Path(s.tls_dir) / "ari.json",
            Path(s.accounts_dir), Path(s.accounts_dir) / "0123456789abcdef.pem", Path(f"{s.vhost_file}.next"),
            Path(s.lock_file), Path(f"{s.lock_file}.holder"), Path(s.state_dir) / "commit.journal",
            Path(s.challenge_dir) / "pelican-https-probe-x"]
    for path in made:
        if path.name in ("20260101T000000Z", "releases", "tls", "certs", "one", "accounts"):
            path.mkdir(parents=True)
        elif path.name == "current":
            path.symlink_to("releases/20260101T000000Z")
        elif path.name == "live":
            path.symlink_to(Path(s.tls_dir) / "certs" / "one")
        else:
            path.write_text("x\n")
        os.lchown(path, 65534, 65534)
    Path(s.vhost_file).write_text("server { }\n")


def test_removal_removes_exactly_what_setup_and_deploys_added(server):
    other = Server(server.root, "other.example.net")  # another pelican-https site on the same server
    assert other.run(other.setup_script()).returncode == 0
    before_ours = snapshot(server.root)
    assert server.run(server.setup_script()).returncode == 0
    deployed(server)

    result = server.run(server.remove_script())
    assert result.returncode == 0, result.stderr
    assert snapshot(server.root) == before_ours  # the other site, the default site, /srv/www: as they were
    s = server.settings
    for gone in (s.remote_root, s.state_dir, server.sudoers, server.conf / "sites-enabled" / SITE,
                 server.conf / "sites-available" / SITE):
        assert not os.path.lexists(gone), gone
        assert f"removed {gone}" in result.stdout
    assert "reload it now" in result.stdout

    again = server.run(server.remove_script())
    assert again.returncode == 0, again.stderr
    assert "nothing of blog.example.com.conf was left to remove" in again.stdout
    assert snapshot(server.root) == before_ours


def test_setup_marks_the_folders_it_makes_and_removal_leaves_nothing_of_ours(server):
    """The marker is root's (the deploy user cannot forge one); the challenge folder nginx serves
    has none; parents the set-up made (var/, var/lib/, var/lib/pelican-https here) are marked as
    parents and go once empty."""
    original = snapshot(server.root)
    assert server.run(server.setup_script()).returncode == 0
    s = server.settings
    for folder in (s.remote_root, s.challenge_root, s.state_dir, s.vhost_file.parent):
        marker = Path(folder) / ".pelican-https-site"
        assert mode_owner(marker)[:2] == ("0o644", "root")  # its group: /srv/www's here (setgid)
        assert marker.read_text() == folder_marker(s) + "\n"
    assert not (Path(s.challenge_dir) / ".pelican-https-site").exists()
    assert (server.root / "var" / ".pelican-https-site").read_text() == PARENT_MARKER + "\n"
    assert not (server.root / "srv" / "www" / ".pelican-https-site").exists()  # it was there before
    deployed(server)
    result = server.run(server.remove_script())
    assert result.returncode == 0, result.stderr
    assert "left as it is" not in result.stdout
    for folder in (s.remote_root, s.state_dir, server.root / "var" / "lib" / "pelican-https", server.root / "var"):
        assert f"removed {folder}\n" in result.stdout
    assert snapshot(server.root) == original  # nothing of ours is left


def test_removal_keeps_a_deploy_users_folder_that_was_there_before(server):
    """DEPLOY_REMOTE_ROOT and DEPLOY_STATE_DIR pointed at folders the deploy user already owned
    (its home, say): removal deletes only the entries deploys make in them and names what it left."""
    home = server.root / "home" / USER
    site, state = home / "www", home / "state"
    for folder in (home, site, state):
        folder.mkdir(parents=True)
        os.chown(folder, 65534, 65534)
    for foreign in (home / ".profile", site / "notes.txt", state / "keep.me"):
        foreign.write_text("the user's own\n")
        os.chown(foreign, 65534, 65534)
    # a marker the deploy user wrote itself is not the set-up's
    (site / ".pelican-https-site").write_text(folder_marker(server.settings) + "\n")
    os.chown(site / ".pelican-https-site", 65534, 65534)
    server.settings = server.settings._replace(remote_root=PurePosixPath(site), state_dir=PurePosixPath(state))
    before = snapshot(server.root)
    assert server.run(server.setup_script()).returncode == 0
    deployed(server)

    result = server.run(server.remove_script())
    assert result.returncode == 0, result.stderr
    assert snapshot(server.root) == before  # every foreign file, and the folders, as they were
    assert f"left as it is: {site} (the set-up did not make it for blog.example.com; it still holds: " \
           ".pelican-https-site notes.txt" in result.stdout
    assert f"left as it is: {state} (the set-up did not make it for blog.example.com; it still holds: keep.me" in result.stdout
    for gone in (site / "releases", site / "current", site / "challenges", state / "tls", state / "accounts",
                 state / "nginx", state / "deploy.lock", state / "commit.journal"):
        assert f"removed {gone}\n" in result.stdout

    again = server.run(server.remove_script())
    assert again.returncode == 0 and snapshot(server.root) == before
    assert "nothing of blog.example.com.conf was left to remove" in again.stdout


def test_removal_after_an_older_setup_without_markers_removes_what_deploys_and_setup_added(server):
    """A server set up before the markers existed: every folder is cleared of what deploys and the
    set-up put there, and goes once empty; the parents it made then (unmarked) stay, named nowhere."""
    assert server.run(server.setup_script()).returncode == 0
    for marker in server.root.rglob(".pelican-https-site"):
        marker.unlink()
    deployed(server)
    s = server.settings
    result = server.run(server.remove_script())
    assert result.returncode == 0, result.stderr
    assert "left as it is" not in result.stdout
    for gone in (s.challenge_dir, s.challenge_root, s.vhost_file.parent, s.state_dir, s.remote_root):
        assert not os.path.lexists(gone) and f"removed {gone}\n" in result.stdout, gone
    assert (server.root / "srv" / "www" / "other.example.org").is_dir()


def test_removal_never_follows_a_link_the_deploy_user_put_among_its_folders(server):
    """The deploy user owns the site folder: a link it makes there (to a folder of root's) is not
    followed; what the link points to stays, and the link is named."""
    assert server.run(server.setup_script()).returncode == 0
    for marker in server.root.rglob(".pelican-https-site"):
        marker.unlink()  # as after an older set-up: the folders are cleared entry by entry
    victim = server.root / "etc" / "precious"
    (victim / ".well-known" / "acme-challenge").mkdir(parents=True)
    (victim / ".well-known" / "acme-challenge" / "keep").write_text("root's\n")
    well_known = Path(server.settings.challenge_dir).parent
    shutil.rmtree(well_known)
    well_known.symlink_to(victim / ".well-known")
    result = server.run(server.remove_script())
    assert result.returncode == 0, result.stderr
    assert (victim / ".well-known" / "acme-challenge" / "keep").read_text() == "root's\n"
    assert f"left as it is: {well_known} (a link, not a folder the set-up makes)" in result.stdout


def test_removal_leaves_files_it_did_not_make_and_names_them(server):
    assert server.run(server.setup_script()).returncode == 0
    # the administrator replaced the link by a file of their own, and gave the site folder to root
    available = server.conf / "sites-available" / SITE
    available.unlink()
    available.write_text("# hand-written\n")
    os.chown(server.settings.remote_root, 0, 0)
    result = server.run(server.remove_script())
    assert result.returncode == 0, result.stderr
    assert available.read_text() == "# hand-written\n"
    assert f"left as it is: {available} (not the link pelican-https's set-up makes)" in result.stdout
    assert Path(server.settings.remote_root).is_dir()
    assert f"left as it is: {server.settings.remote_root} (owned by root" in result.stdout
    assert not os.path.lexists(server.conf / "sites-enabled" / SITE) and not server.sudoers.exists()


# --- the scripts as files ----------------------------------------------------------------------

def test_scripts_are_shellcheck_clean():
    assert shutil.which("shellcheck"), "shellcheck must be installed (apt-get install shellcheck)"
    result = subprocess.run(["shellcheck", "--shell=sh", str(SCRIPTS / "server-setup.sh"), str(SCRIPTS / "server-remove.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("render, name", [(admin_script, "server-setup.sh"), (remove_script, "server-remove.sh")])
def test_printed_script_is_the_file_with_one_line_of_quoted_arguments(render, name):
    settings = settings_from_mapping({"SITEURL": "https://blog.example.com", "DEPLOY_HOST": "203.0.113.5", "DEPLOY_USER": "deploy"})
    text = render(settings)
    lines = text.splitlines(keepends=True)
    assert lines[0] == "#!/bin/sh\n" and lines[2].startswith("set -- deploy /srv/www/blog.example.com ")
    assert "".join(lines[:1] + lines[3:]) == (SCRIPTS / name).read_text()  # no value inside the script's text
