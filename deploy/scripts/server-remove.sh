#!/bin/sh
# pelican-https: remove a site that `fab server-setup` prepared and `fab deploy` filled, run as root.
#
# It removes exactly what the set-up and the deploys added for this site, and nothing else:
#   - the links that make nginx include the site's vhost, when they are the very links the set-up
#     makes (another file or link of the same name is left, and named);
#   - the sudoers file, when its first line is the set-up's mark;
#   - the state folder (certificates, keys, ACME account keys, the vhost) and the site folder
#     (releases, current, challenges), owned by the deploy user: whole when the set-up made them
#     (its marker file, .pelican-https-site, names this site), else only the entries deploys make
#     in them, and the folder if that leaves it empty (what it still holds is named); a folder
#     owned by someone else is left, and named;
#   - parent folders the set-up made for them (/srv/www), once nothing else is in them.
# The deploy user itself and other sites are not touched. nginx keeps serving the site from
# memory until it reloads; the script says how. Running it again changes nothing.
#
# Arguments (fab server-setup --remove prints this script preceded by the `set --` line that sets them):
#   1 deploy user          2 site folder        3 challenge folder (inside the site folder)
#   4 state folder         5 vhost file         6 link name (<site>.conf)
#   7 nginx conf folder (/etc/nginx)            8 include folder ("" = the layouts the set-up detects)
#   9 sudoers file         10 its first line (the set-up's mark)
#   11 the marker of a folder made for this site    12 the marker of a parent folder it made
set -eu

if [ "$#" -ne 12 ]; then
    echo "server-remove: expected 12 arguments, got $#: print the script with \`fab server-setup --remove\`" >&2
    exit 2
fi
user=$1 site_dir=$2 challenge_dir=$3 state_dir=$4 vhost=$5 name=$6 conf_dir=$7 include_dir=$8 sudoers=$9
shift 9
marker=$1 site_mark=$2 parent_mark=$3
mark_file=.pelican-https-site
site_name=${name%.conf}
vhost_dir=${vhost%/*}

if [ "$(id -u)" -ne 0 ]; then
    echo "server-remove: run this script as root (e.g. fab server-setup --remove | ssh admin@server sudo sh)" >&2
    exit 1
fi
case $challenge_dir in
    "$site_dir"/*) ;;
    *) echo "server-remove: the challenge folder $challenge_dir is not inside the site folder $site_dir" >&2; exit 1 ;;
esac
for d in "$site_dir" "$state_dir" "$vhost_dir"; do
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

# 3. the state folder and the site folder. A folder the set-up made carries this site's marker (a
#    root's file the deploy user cannot forge) and goes whole. Any other folder (one that was there
#    before the set-up, or made by an older set-up) loses only the entries deploys make in it, then
#    goes if that left it empty; else it stays, and what it still holds is named.
is_marked() {  # is_marked FOLDER TEXT: FOLDER holds the set-up's marker with that first line
    [ -f "$1/$mark_file" ] && [ ! -L "$1/$mark_file" ] && [ "$(owner_of "$1/$mark_file")" = root ] &&
        [ "$(head -n 1 "$1/$mark_file")" = "$2" ]
}
whole() {  # whole FOLDER: succeeds when nothing more is to be done with FOLDER and what is inside
    # it: absent, removed whole (the set-up's, for this site), or left as it is and named
    if [ -L "$1" ]; then
        left "$1 (a link, not a folder the set-up makes)"
    elif [ ! -d "$1" ]; then
        if [ -e "$1" ]; then left "$1 (not a folder)"; fi
    elif [ "$(owner_of "$1")" != "$user" ]; then
        left "$1 (owned by $(owner_of "$1"), not by the deploy user $user: remove it yourself if it is this site's)"
    elif is_marked "$1" "$site_mark"; then
        rm -rf -- "$1"
        gone "$1"
    else
        return 1
    fi
}
clear_entries() {  # clear_entries FOLDER [PATTERN...]: those entries, then FOLDER if that empties it
    dir=$1
    shift
    for pattern in "$@"; do
        for entry in "$dir"/$pattern; do
            if [ -e "$entry" ] || [ -L "$entry" ]; then
                rm -rf -- "$entry"
                gone "$entry"
            fi
        done
    done
    if rmdir -- "$dir" 2> /dev/null; then
        gone "$dir"
    else
        # ls: names for a message, at most five
        # shellcheck disable=SC2012
        left "$dir (the set-up did not make it for $site_name; it still holds: $(ls -A "$dir" | head -n 5 | paste -s -d ' ' -))"
    fi
}
clear_entries_of() {  # the entries deploys make in each folder
    case $1 in
        "$site_dir") clear_entries "$1" releases current current.new ;;
        "$challenge_dir") clear_entries "$1" "*" ;;  # challenge files
        "$vhost_dir") clear_entries "$1" "${vhost##*/}" "${vhost##*/}.*" ;;
        "$state_dir") clear_entries "$1" tls accounts deploy.lock deploy.lock.holder deploy.lock.holder.tmp commit.journal commit.journal.tmp ;;
        *) clear_entries "$1" ;;
    esac
}
remove_tree() {  # remove_tree FOLDER...: a folder and the set-up's folders inside it, top-down
    pending=""
    for folder in "$@"; do
        if whole "$folder"; then
            break
        fi
        pending="$folder $pending"
    done
    for folder in $pending; do  # innermost first
        clear_entries_of "$folder"
    done
}
site_tree=$site_dir
path=$site_dir
for part in $(printf '%s\n' "${challenge_dir#"$site_dir"/}" | tr / ' '); do
    path=$path/$part
    site_tree="$site_tree $path"
done
# shellcheck disable=SC2086 # plain paths (checked by the settings), one word each
remove_tree $site_tree
remove_tree "$state_dir" "$vhost_dir"

# 4. parents the set-up made (/srv/www, /var/lib/pelican-https), once they hold nothing but their mark
for top in "${site_dir%/*}" "${state_dir%/*}"; do
    while [ -n "$top" ] && [ ! -L "$top" ] && is_marked "$top" "$parent_mark" && [ "$(ls -A "$top")" = "$mark_file" ]; do
        rm -f -- "$top/$mark_file"
        rmdir -- "$top" || break
        gone "$top"
        top=${top%/*}
    done
done
# an older set-up's shared parent of state folders, unmarked, when no other site uses it any more
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
