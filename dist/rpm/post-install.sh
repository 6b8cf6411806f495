# ztbridge .rpm %post.  The service is not enabled here: it needs the
# PagerDuty routing key first (see the README's quick start).
# The data directory: the service's alone.
mkdir -p /var/lib/ztbridge
chown ztbridge:ztbridge /var/lib/ztbridge
chmod 0700 /var/lib/ztbridge
# The config is readable by the service's group; credentials by root only
# (systemd reads them for the service).
chown root:ztbridge /etc/ztbridge
chmod 0750 /etc/ztbridge
mkdir -p /etc/ztbridge/credentials
chmod 0700 /etc/ztbridge/credentials
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade ($1 > 1): a running service restarts on the new binary.
    if [ "$1" -gt 1 ]; then
        systemctl try-restart ztbridge.service || true
    fi
fi
exit 0
