#!/bin/sh
# pelican-https: remove a site that `fab server-setup` prepared and `fab deploy` filled, run as root.
#
# It removes exactly what the set-up and the deploys added for this site, and nothing else:
#   - the links that make nginx include the site's vhost, when they are the very links the set-up
#     makes (another file or link of the same name is left, and named);
#   - the sudoers file, when its first line is the set-up's mark;
#   - the state folder (certificates, keys, ACME account keys, the vhost) and the site folder
#     (releases, current, challenges), when they are folders owned by the deploy user (a folder
#     the set-up found there, owned by someone else, is left, and named).
# The deploy user itself and other sites are not touched. nginx keeps serving the site from
# memory until it reloads; the script says how. Running it again changes nothing.
#
# Arguments (fab server-setup --remove prints this script preceded by the `set --` line that sets them):
#   1 deploy user          2 site folder        3 state folder       4 vhost file
#   5 link name (<site>.conf)                   6 nginx conf folder (/etc/nginx)
#   7 include folder ("" = the layouts the set-up detects)
#   8 sudoers file         9 its first line (the set-up's mark)
set -eu

if [ "$#" -ne 9 ]; then
    echo "server-remove: expected 9 arguments, got $#: print the script with \`fab server-setup --remove\`" >&2
    exit 2
fi
user=$1 site_dir=$2 state_dir=$3 vhost=$4 name=$5 conf_dir=$6 include_dir=$7 sudoers=$8 marker=$9

if [ "$(id -u)" -ne 0 ]; then
    echo "server-remove: run this script as root (e.g. fab server-setup --remove | ssh admin@server sudo sh)" >&2
    exit 1
fi
for d in "$site_dir" "$state_dir"; do
    case $d in
        /?*) ;;
        *) echo "server-remove: refusing to remove '$d': expected an absolute path below /" >&2; exit 1 ;;
    esac
done

removed=0
links_removed=0
gone() { echo "removed $1"; removed=1; }
left() { echo "left as it is: $1"; }
# ls, not stat -c (GNU only): the paths are plain (letters, digits, . _ - / @ +), checked by the settings
# shellcheck disable=SC2012
owner_of() { ls -ld "$1" | awk '{ print $3 }'; }

unlink_ours() {  # unlink_ours PATH TARGET: only the link the set-up makes
    if [ -L "$1" ] && [ "$(readlink "$1")" = "$2" ]; then
        rm -f "$1"
        gone "$1"
        links_removed=1
    elif [ -e "$1" ] || [ -L "$1" ]; then
        left "$1 (not the link pelican-https's set-up makes)"
    fi
}

# 1. nginx's links first: after them, nothing of nginx's configuration names the site's files.
if [ -n "$include_dir" ]; then
    unlink_ours "$include_dir/$name" "$vhost"
fi
unlink_ours "$conf_dir/sites-enabled/$name" "../sites-available/$name"
unlink_ours "$conf_dir/sites-available/$name" "$vhost"
unlink_ours "$conf_dir/conf.d/$name" "$vhost"

# 2. the sudo rule
if [ -f "$sudoers" ] && [ ! -L "$sudoers" ] && [ "$(head -n 1 "$sudoers")" = "$marker" ]; then
    rm -f "$sudoers"
    gone "$sudoers"
elif [ -e "$sudoers" ] || [ -L "$sudoers" ]; then
    left "$sudoers (not marked as pelican-https's)"
fi

# 3. the state folder and the site folder: the deploy user's, made for it by the set-up
remove_tree() {
    if [ -d "$1" ] && [ ! -L "$1" ]; then
        if [ "$(owner_of "$1")" = "$user" ]; then
            rm -rf "$1"
            gone "$1"
        else
            left "$1 (owned by $(owner_of "$1"), not by the deploy user $user: remove it yourself if it is this site's)"
        fi
    elif [ -e "$1" ] || [ -L "$1" ]; then
        left "$1 (not a folder)"
    fi
}
remove_tree "$state_dir"
remove_tree "$site_dir"
# the set-up's shared parent of state folders, when no other site uses it any more
if [ "${state_dir%/*}" = /var/lib/pelican-https ] && rmdir /var/lib/pelican-https 2> /dev/null; then
    gone /var/lib/pelican-https
fi

if [ "$removed" = 0 ]; then
    echo "nothing of $name was left to remove"
fi
if [ "$links_removed" = 1 ]; then
    echo "nginx still serves $name from memory: reload it now (nginx -t && nginx -s reload, or systemctl reload nginx)"
fi
echo "the deploy user $user was kept: remove it with deluser --remove-home $user if nothing else uses it"
