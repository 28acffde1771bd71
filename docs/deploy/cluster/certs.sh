#!/bin/sh
# Makes the meta API's TLS certificates in /certs once (the certs service):
# a CA (ca.pem) and one server certificate for every meta member
# (meta.pem, meta-key.pem) with the names in META_CERT_SANS. The meta
# members, proxies and CLI wait for meta.pem, which is written last.
set -eu
d=/certs
if [ -s "$d/meta.pem" ]; then
	exit 0
fi
cd "$d"
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
	-subj "/CN=pgshard compose CA" -keyout ca-key.pem -out ca.pem \
	-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-subj "/CN=pgshard-meta" -keyout meta-key.pem -out meta.csr 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n' \
	"${META_CERT_SANS:-DNS:meta1,DNS:meta2,DNS:meta3,DNS:localhost,IP:127.0.0.1}" >meta.ext
openssl x509 -req -in meta.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
	-extfile meta.ext -out meta.pem.tmp 2>/dev/null
rm -f meta.csr meta.ext ca.srl
chmod 644 ca.pem meta.pem.tmp
chmod 600 ca-key.pem meta-key.pem
chown 10001 meta-key.pem meta.pem.tmp # the image's pgshard user
mv meta.pem.tmp meta.pem
echo "certificates written to $d"
