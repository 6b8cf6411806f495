# ztbridge .rpm %post.  The service is not enabled here: it needs the
# PagerDuty routing key first (see the README's quick start).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade ($1 > 1): a running service restarts on the new binary.
    if [ "$1" -gt 1 ]; then
        systemctl try-restart ztbridge.service || true
    fi
fi
exit 0
