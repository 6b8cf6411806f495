# ztbridge .rpm %preun: on erase ($1 = 0), not on upgrade, stop and
# disable the service.  The data (/var/lib/ztbridge) and an edited
# configuration (saved as .rpmsave) stay.
if [ "$1" -eq 0 ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop ztbridge.service || true
    fi
    if command -v systemctl >/dev/null; then
        systemctl disable ztbridge.service >/dev/null 2>&1 || true
    fi
fi
exit 0
