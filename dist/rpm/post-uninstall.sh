# ztbridge .rpm %postun.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
exit 0
