# Settings for the published site and for `fab deploy`. Builds with: pelican content -s publishconf.py
import os
import sys

sys.path.append(os.curdir)
from pelicanconf import *  # noqa: E402,F401,F403

SITEURL = "https://blog.example.com"
RELATIVE_URLS = False
FEED_ALL_ATOM = "feeds/all.atom.xml"
CATEGORY_FEED_ATOM = "feeds/{slug}.atom.xml"
DELETE_OUTPUT_DIRECTORY = True

# --- pelican-https: deploy (see the project README for every setting) ---
DEPLOY_HOST = "blog.example.com"  # the server's SSH address
DEPLOY_USER = "deploy"
DEPLOY_DOMAINS = ["blog.example.com", "www.blog.example.com"]  # canonical first
# The https rewriter treats every name in DEPLOY_DOMAINS as the blog's own host too.
DEPLOY_ACME_DIRECTORY = "letsencrypt-staging"  # switch to "letsencrypt" once a staging deploy works
# In GitHub Actions the workflow writes the key and known_hosts from the environment's secrets and
# sets these variables; on your machine, the key made in step 1 of the README's "The server":
DEPLOY_SSH_KEY = os.environ.get("DEPLOY_SSH_KEY_FILE", "~/.ssh/deploy_blog")
DEPLOY_KNOWN_HOSTS = os.environ.get("DEPLOY_KNOWN_HOSTS_FILE", "~/.ssh/known_hosts")
