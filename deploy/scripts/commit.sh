#!/bin/sh
# The one step visitors see: make the new certificate, vhost and release live together with one
# reload, or undo them. A journal records what was live before, so that a commit cut short
# (even a killed client) is undone by the next deploy, and a failed verification puts it back.
# Once the site was verified, `verified` marks the journal: from then on the commit is kept, never
# undone (the next deploy only forgets the journal, if `finish` did not get to run).
# Usage: commit.sh apply    REMOTE_ROOT STATE_DIR RELEASE_ID CERT_ID VHOST_CHANGED(yes|no) NGINX_LOCK NGINX_WORD...
#        commit.sh undo     REMOTE_ROOT STATE_DIR NGINX_LOCK NGINX_WORD...   (NGINX_LOCK: see nginx-test.sh)
#        commit.sh verified REMOTE_ROOT STATE_DIR   (the commit was verified: keep it from now on)
#        commit.sh finish   REMOTE_ROOT STATE_DIR [KEEP_RELEASES KEEP_CERTIFICATES]   (verified: forget the
#        journal; with the numbers, prune older releases and certificates, never the live ones)
# Exit 3: nginx -t failed; 4: reload failed; 6: the deploy user may not run nginx (all undone); 8: no lock.
set -u
action=$1 root=$2 state=$3
shift 3
journal=$state/commit.journal
vhost=$state/nginx/vhost.conf
live=$state/tls/live

relink() {  # relink LINK TARGET: atomic (rename over the old link); no TARGET: remove it
    if [ -n "$2" ]; then ln -sfn -- "$2" "$1.new" && mv -fT -- "$1.new" "$1"; else rm -f -- "$1"; fi
}
nginx_reload() {  # nginx_reload NGINX_WORD...: test, then reload
    out=$("$@" -t 2>&1) || {
        case $out in *"sudo:"*) printf '%s\n' "$out" >&2; return 6;; esac
        printf '%s\n' "$out" >&2; return 3; }
    "$@" -s reload >&2 || return 4
}
undo() {  # put back what the journal says was live; a verified commit stays (its journal is forgotten)
    release='' cert='' reload='' verified=''
    while IFS='=' read -r key value; do
        case $key in release) release=$value;; cert) cert=$value;; reload) reload=$value;; verified) verified=$value;; esac
    done < "$journal"
    if [ "$verified" = yes ]; then
        rm -f -- "$journal" "$vhost.committed-prev"
        return
    fi
    relink "$root/current" "$release"
    relink "$live" "$cert"
    if [ "$reload" = yes ]; then
        mv -f -- "$vhost.committed-prev" "$vhost"
        [ -s "$vhost" ] || : > "$vhost"
        nginx_reload "$@" || return $?
    fi
    rm -f -- "$journal"
}

lock_nginx() {  # see nginx-test.sh: every pelican-https site of this nginx takes this lock around its nginx steps
    [ -r "$1" ] || { echo "cannot read $1 (the nginx lock)" >&2; exit 8; }
    exec 8< "$1"
    flock -w 120 8 || { echo "could not lock $1 within 120 s" >&2; exit 8; }
}

case $action in
apply)
    release_id=$1 cert_id=$2 vhost_changed=$3
    lock_nginx "$4"
    shift 4
    if [ -e "$root/current" ] && [ ! -L "$root/current" ]; then
        echo "$root/current is not a symlink (a folder copied by hand?): move it away, then deploy again" >&2
        exit 7
    fi
    [ ! -f "$journal" ] || undo "$@" || exit $?
    { printf 'release=%s\n' "$(readlink "$root/current" 2>/dev/null)"
      printf 'cert=%s\n' "$(readlink "$live" 2>/dev/null)"
      printf 'reload=%s\n' "$vhost_changed"; } > "$journal.tmp" && mv -f -- "$journal.tmp" "$journal" || exit 1
    if [ "$vhost_changed" = yes ] && [ -f "$vhost.before-order" ]; then
        # A challenge path this deploy could not close: the vhost before it is the one to put back,
        # and the new vhost closes it (the next deploy must not restore that old file).
        mv -f -- "$vhost.before-order" "$vhost.committed-prev" || exit 1
    elif [ "$vhost_changed" = yes ]; then
        if [ -f "$vhost" ]; then cp -p -- "$vhost" "$vhost.committed-prev"; else : > "$vhost.committed-prev"; fi || exit 1
    fi
    trap 'undo "$@"; exit 5' HUP INT TERM
    [ -z "$cert_id" ] || relink "$live" "certs/$cert_id" || { undo "$@"; exit 1; }
    if [ "$vhost_changed" = yes ]; then mv -f -- "$vhost.next" "$vhost" || { undo "$@"; exit 1; }; fi
    [ -z "$release_id" ] || relink "$root/current" "releases/$release_id" || { undo "$@"; exit 1; }
    if [ "$vhost_changed" = yes ]; then
        nginx_reload "$@" || { status=$?; undo "$@"; exit "$status"; }
    fi
    echo committed
    ;;
undo)
    lock_nginx "$1"
    shift
    [ ! -f "$journal" ] || undo "$@" || exit $?
    echo undone
    ;;
verified)
    if [ -f "$journal" ]; then
        { cat -- "$journal" && echo verified=yes; } > "$journal.tmp" && mv -f -- "$journal.tmp" "$journal" || exit 1
    fi
    echo verified
    ;;
finish)
    rm -f -- "$journal" "$vhost.committed-prev" || exit 1
    [ $# -eq 2 ] || { echo finished; exit 0; }
    keep_releases=$1 keep_certs=$2
    current=$(readlink "$root/current" 2>/dev/null); current=${current##*/}
    # Release ids sort in time order; never by mtime (tar restores old mtimes).
    for r in "$root"/releases/*; do
        case ${r##*/} in [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T*Z) [ -d "$r" ] && printf '%s\n' "${r##*/}";; esac
    done | sort -r | tail -n +"$((keep_releases + 1))" |
    while IFS= read -r old; do
        [ "$old" = "$current" ] || { rm -rf -- "${root:?}/releases/$old" "$root/releases/$old.manifest"; echo "pruned $old"; }
    done
    cert=$(readlink "$live" 2>/dev/null); cert=${cert##*/}
    for c in "$state"/tls/certs/*; do
        case ${c##*/} in *.partial|"*") ;; *) printf '%s\n' "${c##*/}";; esac
    done | sort -r | tail -n +"$((keep_certs + 1))" |
    while IFS= read -r old; do
        [ "$old" = "$cert" ] || rm -rf -- "${state:?}/tls/certs/$old"
    done
    echo finished
    ;;
*)
    echo "unknown action $action" >&2; exit 2;;
esac
