#!/bin/sh
# pelican-https: the one-time set-up of a server for `fab deploy`, run as root by its administrator.
#
# It creates what is missing and changes nothing that is already there: an existing folder keeps
# its mode, owner and group; a file or link it did not make is never replaced (it stops, names it
# and says what to do, before changing anything). Running it again changes nothing.
# Each folder it makes holds a marker file, .pelican-https-site (root's, so the deploy user cannot
# forge one): the removal script deletes a whole folder only when it carries this site's marker,
# and a missing parent it made (/srv/www, say) only once nothing else is in it. The challenge
# folder itself, which nginx serves, gets none (its parents do).
#
# What it makes, for the deploy user (which must exist already):
#   - the site folder and its ACME challenge folder, owned by the deploy user, readable by nginx;
#   - a private state folder (certificate key, ACME account keys, the vhost), the deploy user only,
#     and an empty vhost file in it;
#   - links that make nginx include that vhost: Debian's sites-available + sites-enabled when
#     nginx.conf includes sites-enabled, else conf.d, or the include folder given;
#   - a sudoers file allowing the deploy user exactly `nginx -t` and `nginx -s reload`.
#
# Arguments (fab server-setup prints this script preceded by the `set --` line that sets them):
#   1 deploy user          2 site folder        3 challenge folder (inside the site folder)
#   4 state folder         5 vhost file         6 link name (<site>.conf)
#   7 nginx conf folder (/etc/nginx)            8 include folder ("" = detect the layout)
#   9 sudoers file         10 its first line (a comment that marks it as this script's)
#   11 sudo rule (one line)
#   12 the marker of a folder made for this site    13 the marker of a parent folder it made
set -eu

if [ "$#" -ne 13 ]; then
    echo "server-setup: expected 13 arguments, got $#: print the script with \`fab server-setup\`" >&2
    exit 2
fi
user=$1 site_dir=$2 challenge_dir=$3 state_dir=$4 vhost=$5 name=$6 conf_dir=$7 include_dir=$8 sudoers=$9
shift 9
marker=$1 rule=$2 site_mark=$3 parent_mark=$4
mark_file=.pelican-https-site

umask 022
changed=0

stop() {
    printf 'server-setup: %s\nNothing was changed.\n' "$*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    stop "run this script as root (e.g. fab server-setup | ssh admin@server sudo sh)"
fi
if ! id -u "$user" > /dev/null 2>&1; then
    stop "the deploy user '$user' does not exist: create it first (adduser --disabled-password --gecos '' $user), add its SSH key, then run this again"
fi
group=$(id -gn "$user")

# --- the nginx layout ------------------------------------------------------------------------
# Each link: "path target". Detected here, as root, because only root may write nginx's folders.
links=""
if [ -n "$include_dir" ]; then
    [ -d "$include_dir" ] || stop "the nginx include folder $include_dir does not exist"
    links="$include_dir/$name $vhost"
    layout="the include folder $include_dir"
elif [ -d "$conf_dir/sites-enabled" ] && grep -Eq "^[[:space:]]*include[[:space:]]+$conf_dir/sites-enabled/" "$conf_dir/nginx.conf"; then
    links="$conf_dir/sites-available/$name $vhost
$conf_dir/sites-enabled/$name ../sites-available/$name"
    layout="sites-available + sites-enabled ($conf_dir/sites-enabled/$name)"
elif [ -d "$conf_dir/conf.d" ] && grep -Eq "^[[:space:]]*include[[:space:]]+$conf_dir/conf[.]d/[*][.]conf" "$conf_dir/nginx.conf"; then
    links="$conf_dir/conf.d/$name $vhost"
    layout="conf.d ($conf_dir/conf.d/$name)"
else
    stop "$conf_dir/nginx.conf includes neither $conf_dir/sites-enabled/ nor $conf_dir/conf.d/*.conf: add \`include $conf_dir/conf.d/*.conf;\` to its http block, then run this script again"
fi

# --- check everything first: a refusal leaves the server as it was ----------------------------
case $challenge_dir in
    "$site_dir"/*) ;;
    *) stop "the challenge folder $challenge_dir is not inside the site folder $site_dir" ;;
esac
# The folders to make, in order, as "path mode owner"; those inside the site folder belong to the
# deploy user too.
folders="$site_dir 755 $user"
path=$site_dir
set -f
old_ifs=$IFS
IFS=/
for part in ${challenge_dir#"$site_dir"/}; do
    path=$path/$part
    folders="$folders
$path 755 $user"
done
IFS=$old_ifs
set +f
folders="$folders
$state_dir 700 $user
${vhost%/*} 700 $user"

check_dir() {  # a folder we need: missing (we make it) or a folder (left as it is)
    if [ -L "$1" ] || { [ -e "$1" ] && [ ! -d "$1" ]; }; then
        stop "$1 exists and is not a folder: move it away (mv $1 $1.old) or choose another path in the DEPLOY_ settings, then run this again"
    fi
}
check_link() {  # missing, or already the very link we make
    if [ -L "$1" ]; then
        if [ "$(readlink "$1")" != "$2" ]; then
            stop "$1 is a link to $(readlink "$1"), not made by this script: if it is an old copy of this site's vhost, remove it (rm $1); if it is another site's, choose another DEPLOY_SITE_NAME; then run this again"
        fi
    elif [ -e "$1" ]; then
        stop "$1 already exists (a file this script did not make): keep a copy (mv $1 /root/${1##*/}.bak) if you need it, or choose another DEPLOY_SITE_NAME; then run this again"
    fi
}

while read -r path mode owner; do
    check_dir "$path"
done <<END_FOLDERS
$folders
END_FOLDERS
if [ -L "$vhost" ] || { [ -e "$vhost" ] && [ ! -f "$vhost" ]; }; then
    stop "$vhost exists and is not a regular file: move it away, then run this again"
fi
while read -r path target; do
    check_link "$path" "$target"
done <<END_LINKS
$links
END_LINKS
if [ -L "$sudoers" ] || { [ -e "$sudoers" ] && [ "$(head -n 1 "$sudoers")" != "$marker" ]; }; then
    stop "$sudoers exists and was not made by this script: look at it, move it out of ${sudoers%/*} if it is not needed, then run this again"
fi

# --- make what is missing ---------------------------------------------------------------------
made() { echo "created $1"; changed=1; }

# ls, not stat -c (GNU only): the paths are plain (letters, digits, . _ - / @ +), checked by the settings
# shellcheck disable=SC2012
owner_of() { ls -ld "$1" | awk '{ print $3 }'; }

make_dir() {  # make_dir PATH MODE OWNER [MARK]; missing parents are made root's, 755 (as mkdir -p
    # would), and marked as parents; MARK (the folder's marker text, root's file) is left in it
    if [ -d "$1" ]; then
        return 0
    fi
    if [ -n "${1%/*}" ] && [ ! -d "${1%/*}" ]; then
        make_dir "${1%/*}" 755 root "${4:+$parent_mark}"
    fi
    mkdir -m "$2" "$1"
    if [ -n "${4:-}" ]; then
        printf '%s\n' "$4" > "$1/$mark_file"
        chmod 644 "$1/$mark_file"
    fi
    if [ "$3" != root ]; then
        chown "$3:$group" "$1"
    fi
    made "$1 ($2, $3)"
}

while read -r path mode owner; do
    if [ -d "$path" ]; then
        # there already: left exactly as it is, but say so if the deploy user does not own it
        if [ "$(owner_of "$path")" != "$owner" ]; then
            echo "left as it is: $path (owned by $(owner_of "$path"); the deploy user $owner must be able to write in it)"
        fi
    elif [ "$path" = "$challenge_dir" ]; then
        make_dir "$path" "$mode" "$owner"  # nginx serves it: no marker
    else
        make_dir "$path" "$mode" "$owner" "$site_mark"
    fi
done <<END_FOLDERS
$folders
END_FOLDERS
if [ ! -e "$vhost" ]; then
    : > "$vhost"
    chmod 644 "$vhost"
    chown "$user:$group" "$vhost"
    made "$vhost (empty until the first deploy)"
fi

# nginx includes the vhost through links (a missing sites-available is made as Debian's: 755, root)
while read -r path target; do
    if [ ! -d "${path%/*}" ]; then
        make_dir "${path%/*}" 755 root
    fi
    if [ ! -L "$path" ]; then
        ln -s "$target" "$path"
        made "$path -> $target"
    fi
done <<END_LINKS
$links
END_LINKS
echo "nginx layout: $layout"

# sudo for exactly `nginx -t` and `nginx -s reload`. sudo ignores files whose names contain a '.',
# so the new file is checked by visudo under such a name, then renamed into place.
content=$(printf '%s\n%s' "$marker" "$rule")
if [ ! -f "$sudoers" ] || [ "$(cat "$sudoers")" != "$content" ]; then
    tmp="$sudoers.pelican-https-new"
    printf '%s\n' "$content" > "$tmp"
    chmod 440 "$tmp"
    if ! visudo -cf "$tmp" > /dev/null; then
        rm -f "$tmp"
        echo "server-setup: visudo refused the sudo rule for $sudoers: $rule" >&2
        exit 1
    fi
    mv "$tmp" "$sudoers"
    made "$sudoers (sudo rule: $rule)"
fi

if [ "$changed" = 0 ]; then
    echo "the server was already set up for $name: nothing changed"
fi
echo "sudoers file: $sudoers"
