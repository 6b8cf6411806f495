# ztbridge .rpm %pre: the system user the files and the service belong to.
if ! getent passwd ztbridge >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/ztbridge --no-create-home \
        --shell /usr/sbin/nologin --comment "ztbridge webhook relay" ztbridge
fi
exit 0
